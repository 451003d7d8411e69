"""asyncpg_lookups.py — the Parlant hot lookups, a write, and the lookups again with asyncpg: a connection pool whose
connections prepare every statement (named, kept in asyncpg's statement cache) and read binary results, explicit
prepared statements, concurrent lookups over the pool, and a write in a transaction.

Usage: python3 asyncpg_lookups.py HOST PORT USER PASSWORD DBNAME  (prints JSON lines, see common.py)
"""

import asyncio
import sys

import asyncpg

from common import LOOKUPS, WRITE_AUTOCOMMIT, WRITE_TX, connection_args, emit


async def pool_round(pool, name):
    """Each lookup through the pool (acquire, prepare or reuse the cached statement, fetch, release)."""
    for lookup, sql, params in LOOKUPS:
        emit(name, lookup, await pool.fetch(sql, *params))


async def concurrent_round(pool, name):
    """Every lookup five times at once over the pool; all copies must agree."""
    tasks = [pool.fetch(sql, *params) for _ in range(5) for _, sql, params in LOOKUPS]
    results = await asyncio.gather(*tasks)
    n = len(LOOKUPS)
    for i, (lookup, _, _) in enumerate(LOOKUPS):
        copies = [results[k * n + i] for k in range(5)]
        if any(c != copies[0] for c in copies):
            sys.exit(f"concurrent copies of {lookup!r} disagree: {copies}")
        emit(name, lookup, copies[0])


async def prepared_round(conn, name):
    """Explicit prepared statements (Connection.prepare), fetched one after the other."""
    for lookup, sql, params in LOOKUPS:
        stmt = await conn.prepare(sql)
        emit(name, lookup, await stmt.fetch(*params))


async def main():
    host, port, user, password, dbname = connection_args(sys.argv)
    pool = await asyncpg.create_pool(host=host, port=port, user=user, password=password, database=dbname,
                                     min_size=2, max_size=5, timeout=10, command_timeout=20)
    try:
        await pool_round(pool, "before")
        async with pool.acquire() as conn:
            await prepared_round(conn, "before (prepared)")
        await concurrent_round(pool, "before (concurrent)")
        async with pool.acquire() as conn:
            async with conn.transaction():
                for sql, params in WRITE_TX:
                    await conn.execute(sql, *params)
        for sql, params in WRITE_AUTOCOMMIT:
            await pool.execute(sql, *params)
        await pool_round(pool, "after")
        await concurrent_round(pool, "after (concurrent)")
        async with pool.acquire() as conn:
            await prepared_round(conn, "after (prepared)")
        await pool_round(pool, "after again")
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main())

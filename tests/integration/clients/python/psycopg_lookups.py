"""psycopg_lookups.py — the Parlant hot lookups, a write, and the lookups again with psycopg 3: server-side prepared
statements from the first execution (prepare_threshold=0), binary results, and pipeline mode.

Usage: python3 psycopg_lookups.py HOST PORT USER PASSWORD DBNAME  (prints JSON lines, see common.py)
"""

import sys

import psycopg

from common import LOOKUPS, WRITE_AUTOCOMMIT, WRITE_TX, connection_args, emit, to_pyformat


def pipelined_round(conn, name):
    """All lookups queued in one pipeline (one network round trip, one Sync), each on its own binary cursor."""
    with conn.pipeline():
        cursors = []
        for lookup, sql, params in LOOKUPS:
            cur = conn.cursor(binary=True)
            cur.execute(to_pyformat(sql), params)
            cursors.append((lookup, cur))
    for lookup, cur in cursors:
        emit(name, lookup, cur.fetchall())


def lookup_round(conn, name):
    """One lookup after the other (each its own Bind/Execute/Sync on a prepared statement), binary results."""
    for lookup, sql, params in LOOKUPS:
        with conn.cursor(binary=True) as cur:
            cur.execute(to_pyformat(sql), params)
            emit(name, lookup, cur.fetchall())


def main():
    host, port, user, password, dbname = connection_args(sys.argv)
    with psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname, sslmode="disable",
                         connect_timeout=10, autocommit=True, prepare_threshold=0) as conn:
        pipelined_round(conn, "before (pipeline)")
        lookup_round(conn, "before")
        lookup_round(conn, "before again")
        with conn.transaction():
            for sql, params in WRITE_TX:
                conn.execute(to_pyformat(sql), params)
        with conn.pipeline():
            for sql, params in WRITE_AUTOCOMMIT:
                conn.execute(to_pyformat(sql), params)
        lookup_round(conn, "after")
        pipelined_round(conn, "after (pipeline)")
        lookup_round(conn, "after again")


if __name__ == "__main__":
    main()

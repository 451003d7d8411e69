"""The pooler relays the PostgreSQL protocol faithfully: simple and extended query protocol, pipelining, COPY in
both directions, errors, large results and parameters, NULLs and bytea, notices, LISTEN/NOTIFY, cancellation —
for psycopg 3, psycopg2 and psql, with results equal to those of a direct PostgreSQL connection."""

import hashlib
import os
import threading
import time
import uuid

import psycopg
import psycopg2
import pytest
from psycopg import sql

from harness import SRCDIR, psql

MODES = ["session", "transaction"]

# Queries whose results must be identical through the pooler and directly.
QUERIES = [
    "SELECT id, v FROM t ORDER BY id",
    "SELECT 1::int2, 2::int4, 3::int8, 4.5::float8, 6.25::numeric(10,3), true, 'txt'::text, 'c'::char(3)",
    "SELECT NULL::int, NULL::text, ''::text, 'ünïcødé ✓'::text, E'tab\\there'::text",
    "SELECT '2024-02-29'::date, '12:34:56.789'::time, '2024-02-29 01:02:03+00'::timestamptz, '1 day 2 hours'::interval",
    "SELECT ARRAY[1, 2, NULL]::int[], '{\"a\": [1, 2, {\"b\": null}]}'::jsonb, '\\xdeadbeef'::bytea",
    "SELECT g, g * g FROM generate_series(1, 1000) g",
    "SELECT count(*), sum(id) FROM t",
]


class ClientGaveUp(Exception):
    pass


@pytest.fixture
def table(pg):
    """A fresh table (id int primary key, v text, b bytea) created directly in PostgreSQL; yields its name."""
    name = "tmp_" + uuid.uuid4().hex[:12]
    with pg.connect() as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text, b bytea)").format(sql.Identifier(name)))
    yield name
    with pg.connect() as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def direct_results(pg, queries, user="app_md5"):
    with pg.connect(user=user) as conn:
        return [conn.execute(q).fetchall() for q in queries]


@pytest.mark.parametrize("pool_mode", MODES)
def test_simple_protocol_results_equal_direct_postgres(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode)
    expected = direct_results(pg, QUERIES)
    with p.connect() as conn:
        # No parameters: psycopg sends a simple-protocol Query message.
        got = [conn.execute(q).fetchall() for q in QUERIES]
        assert got == expected
        # Client-side binding also uses the simple protocol.
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT %s::int + 1, %s::text, %s::text IS NULL", (41, "it's", None))
        assert cur.fetchall() == [(42, "it's", True)]


@pytest.mark.parametrize("pool_mode", MODES)
def test_extended_protocol_unnamed_statements_equal_direct_postgres(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode)
    params_queries = [
        ("SELECT id, v FROM t WHERE id > %s ORDER BY id", (3,)),
        ("SELECT %s::int, %s::text, %s::numeric, %s::bool, %s::int", (7, "x'y", "1.5", False, None)),
        ("SELECT g FROM generate_series(1, %s) g", (500,)),
    ]
    with pg.connect(user="app_md5") as d:
        expected = [d.execute(q, args, prepare=False).fetchall() for q, args in params_queries]
    with p.connect() as conn:
        for _ in range(3):  # repeated: unnamed statements are re-parsed every time, on whatever server
            got = [conn.execute(q, args, prepare=False).fetchall() for q, args in params_queries]
            assert got == expected
        # Binary result format, and a transaction of extended-protocol statements.
        cur = conn.cursor(binary=True)
        cur.execute("SELECT %s::int8, %s::text, %s::bytea", (2**40, "bin", b"\x00\x01\xff"), prepare=False)
        assert cur.fetchall() == [(2**40, "bin", b"\x00\x01\xff")]
        with conn.transaction():
            conn.execute("SELECT %s", (1,), prepare=False)
            assert conn.execute("SELECT %s::int * 2", (21,), prepare=False).fetchone() == (42,)


def test_named_prepared_statements_work_in_session_mode(parley):
    p = parley(pool_mode="session")
    with p.connect(prepare_threshold=0) as conn:
        for i in range(5):
            assert conn.execute("SELECT %s::int + 1", (i,), prepare=True).fetchone() == (i + 1,)
        names = [r[0] for r in conn.execute("SELECT name FROM pg_prepared_statements").fetchall()]
        assert names, "psycopg prepare=True should have created a named server-side statement"
        # SQL-level PREPARE/EXECUTE too.
        conn.execute("PREPARE p1(int) AS SELECT $1 * 10")
        assert conn.execute("EXECUTE p1(5)").fetchone() == (50,)


@pytest.mark.parametrize("pool_mode", MODES)
def test_pipeline_mode_batches_extended_queries(parley, table, pool_mode):
    p = parley(pool_mode=pool_mode)
    with p.connect() as conn:
        with conn.pipeline():
            with conn.transaction():
                cur = conn.cursor()
                cur.executemany(sql.SQL("INSERT INTO {} (id, v) VALUES (%s, %s)").format(sql.Identifier(table)),
                                [(i, f"p{i}") for i in range(200)])
            c1 = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            c2 = conn.execute("SELECT %s::text", ("after",))
        assert c1.fetchone() == (200,)
        assert c2.fetchone() == ("after",)


@pytest.mark.parametrize("pool_mode", MODES)
def test_psycopg2_results_equal_direct_postgres(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode)

    def run(dsn):
        conn = psycopg2.connect(dsn)
        try:
            conn.autocommit = False
            cur = conn.cursor()
            out = []
            for q in QUERIES:
                cur.execute(q)
                out.append(cur.fetchall())
            cur.execute("SELECT %s::int, %s, %s IS NULL", (5, "q'uote", None))
            out.append(cur.fetchall())
            conn.commit()
            return out
        finally:
            conn.close()

    assert run(p.dsn()) == run(pg.dsn(user="app_md5"))


@pytest.mark.parametrize("pool_mode", MODES)
def test_psql_output_equals_direct_postgres(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode)
    q = "SELECT id, v FROM t ORDER BY id; SELECT 'a|b', NULL, 3.14::numeric"
    via = psql(p, q)
    direct = psql(pg, q)
    assert via.rc == 0, via
    assert direct.rc == 0, direct
    assert via.out == direct.out
    bad = psql(p, "SELECT * FROM no_such_table")
    assert bad.rc != 0
    assert "no_such_table" in bad.err and "does not exist" in bad.err


@pytest.mark.parametrize("pool_mode", MODES)
def test_multi_statement_simple_query_returns_every_result(parley, table, pool_mode):
    p = parley(pool_mode=pool_mode)
    with p.connect() as conn:
        cur = conn.execute(sql.SQL("INSERT INTO {t} (id, v) VALUES (1, 'one'); SELECT 1 AS a; "
                                   "SELECT 'two', 2; SELECT v FROM {t}").format(t=sql.Identifier(table)))
        results = []
        while True:
            results.append(cur.fetchall() if cur.description else ("rowcount", cur.rowcount))
            if not cur.nextset():
                break
        assert results == [("rowcount", 1), [(1,)], [("two", 2)], [("one",)]]
        # An error in the middle aborts the rest (implicit transaction) and the connection stays usable.
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute(sql.SQL("INSERT INTO {t} (id, v) VALUES (2, 'two'); SELECT 1/0; "
                                 "INSERT INTO {t} (id, v) VALUES (3, 'three')").format(t=sql.Identifier(table)))
        assert conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(table))).fetchall() == [(1,)]


@pytest.mark.parametrize("pool_mode", MODES)
def test_copy_from_stdin_and_to_stdout_round_trip(parley, pg, table, pool_mode):
    p = parley(pool_mode=pool_mode)
    n = 20000
    ident = sql.Identifier(table)
    with p.connect() as conn:
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} (id, v, b) FROM STDIN").format(ident)) as cp:
                for i in range(n):
                    cp.write_row((i, f"line {i}\twith tab", bytes([i % 256]) * 3 if i % 7 else None))
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone() == (n,)
        # COPY TO STDOUT through the pooler equals COPY TO STDOUT directly.
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY (SELECT * FROM {} ORDER BY id) TO STDOUT").format(ident)) as cp:
                via = b"".join(bytes(chunk) for chunk in cp)
        # A COPY the client aborts (CopyFail) rolls back and leaves the connection usable.
        with pytest.raises(psycopg.errors.QueryCanceled, match="ClientGaveUp"):
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY {} (id, v) FROM STDIN").format(ident)) as cp:
                    cp.write_row((n + 1, "never"))
                    raise ClientGaveUp()
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone() == (n,)
        # COPY with a data error: server error relayed, connection usable.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.cursor() as cur:
                with cur.copy(sql.SQL("COPY {} (id, v) FROM STDIN").format(ident)) as cp:
                    cp.write_row((1, "duplicate key"))
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pg.connect() as d:
        with d.cursor() as cur:
            with cur.copy(sql.SQL("COPY (SELECT * FROM {} ORDER BY id) TO STDOUT").format(ident)) as cp:
                direct = b"".join(bytes(chunk) for chunk in cp)
    assert hashlib.sha256(via).hexdigest() == hashlib.sha256(direct).hexdigest()
    assert len(via) > 300000


@pytest.mark.parametrize("pool_mode", MODES)
def test_error_then_recovery_on_same_connection(parley, pool_mode):
    p = parley(pool_mode=pool_mode)
    with p.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedTable) as ei:
            conn.execute("SELECT * FROM no_such_table")
        assert ei.value.sqlstate == "42P01"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # Error inside a transaction: aborted until rollback, then fine.
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT 2").fetchone() == (2,)
        # Extended-protocol errors: at Bind (bad parameter) and at Execute.
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT %s::int", ("not a number",), prepare=False)
        with pytest.raises(psycopg.errors.NumericValueOutOfRange):
            conn.execute("SELECT %s::int * 1000000000", (1000,), prepare=False)
        assert conn.execute("SELECT %s::int", (3,), prepare=False).fetchone() == (3,)
        # A server NOTICE reaches the client.
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        assert notices == ["hello from plpgsql"]


@pytest.mark.parametrize("pool_mode", MODES)
def test_large_result_arrives_intact(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode)
    q = "SELECT g, md5(g::text) || repeat('x', 40) FROM generate_series(1, 100000) g"

    def digest(conn):
        h = hashlib.sha256()
        n = size = 0
        with conn.cursor() as cur:
            cur.execute(q)
            for g, s in cur:
                h.update(f"{g}:{s}\n".encode())
                n += 1
                size += len(s)
        return n, size, h.hexdigest()

    with pg.connect(user="app_md5") as d:
        expected = digest(d)
    with p.connect() as conn:
        got = digest(conn)
        assert conn.execute("SELECT 'still fine'").fetchone() == ("still fine",)
    assert got == expected
    assert got[0] == 100000 and got[1] > 5_000_000


@pytest.mark.parametrize("pool_mode", MODES)
def test_nulls_bytea_and_large_parameters_round_trip(parley, table, pool_mode):
    p = parley(pool_mode=pool_mode)
    every_byte = bytes(range(256))
    big = every_byte * 16384  # 4 MiB parameter: a large message from client to server
    ident = sql.Identifier(table)
    with p.connect() as conn:
        ins = sql.SQL("INSERT INTO {} (id, v, b) VALUES (%s, %s, %s)").format(ident)
        conn.execute(ins, (1, None, None), prepare=False)
        conn.execute(ins, (2, "", every_byte), prepare=False)
        conn.execute(ins, (3, "big", big), prepare=False)
        sel = sql.SQL("SELECT id, v, b FROM {} ORDER BY id").format(ident)
        rows = conn.execute(sel).fetchall()
        assert rows == [(1, None, None), (2, "", every_byte), (3, "big", big)]
        rows = conn.cursor(binary=True).execute(sel).fetchall()
        assert rows == [(1, None, None), (2, "", every_byte), (3, "big", big)]
        assert conn.execute(sql.SQL("SELECT md5(b) FROM {} WHERE id = 3").format(ident)).fetchone() == \
            (hashlib.md5(big).hexdigest(),)
        # A large simple-protocol query text (bytea literal inlined by ClientCursor).
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT length(%s::bytea)", (big[: 1 << 20],))
        assert cur.fetchone() == (1 << 20,)


def test_listen_notify_delivered_in_session_mode(parley):
    p = parley(pool_mode="session")
    got = []
    with p.connect() as listener, p.connect(user="app_plain") as notifier:
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("LISTEN parley_chan")
        notifier.execute("NOTIFY parley_chan, 'first'")
        notifier.execute("SELECT pg_notify('parley_chan', 'second')")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            listener.execute("SELECT 1")  # notifications are read along with query results
            time.sleep(0.05)
    assert got == [("parley_chan", "first"), ("parley_chan", "second")]


@pytest.mark.parametrize("pool_mode", MODES)
def test_cancel_request_cancels_running_query(parley, pool_mode):
    p = parley(pool_mode=pool_mode)
    with p.connect() as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(20)")
        finally:
            timer.cancel()
        assert time.monotonic() - t0 < 10
        assert conn.execute("SELECT 'after cancel'").fetchone() == ("after cancel",)


def test_client_parameters_and_server_status_reported(parley):
    p = parley(pool_mode="session")
    with p.connect(user="app_md5", application_name="parley-it-app") as conn:
        assert conn.info.parameter_status("server_version")
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.parameter_status("application_name") == "parley-it-app"
        assert conn.execute("SHOW application_name").fetchone() == ("parley-it-app",)
        assert conn.info.backend_pid != 0
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("app_md5", "parlant")


def test_parlant_schema_tables_queryable_through_pooler(parley, pg):
    """contrib/parlant/schema.sql is loaded into database parlant when present; its tables read the same through
    the pooler as directly."""
    tables = [r[0] for r in pg.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                     "AND tablename LIKE 'parlant\\_%' ORDER BY 1")]
    if os.path.exists(os.path.join(SRCDIR, "contrib", "parlant", "schema.sql")):
        assert tables, "schema.sql exists but no parlant_* table was created"
    p = parley(pool_mode="transaction")
    with p.connect() as conn, pg.connect(user="app_md5") as direct:
        for name in tables:
            q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
            assert conn.execute(q).fetchone() == direct.execute(q).fetchone()

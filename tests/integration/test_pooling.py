"""Pooling behaviour: more clients than server slots, server release between transactions, no state or
transaction leaking from one client to the next, query_wait_timeout, server_reset_query, min_pool_size,
server_idle_timeout, and pgbench (TPC-B and select-only) through the pooler in session and transaction mode."""

import os
import re
import socket
import threading
import time

import pytest

from harness import PASSWORDS, Wire, WireError, pgbench

MODES = ["session", "transaction"]
USER = "app_md5"


def no_backends_left(pg, user=USER):
    """Waits until the server connections of earlier tests' poolers are gone, so counts start from zero."""
    pg.wait_backends(user, lambda n: n == 0, timeout=15, what=f"leftover backends of {user} to exit")


class BackendMonitor:
    """Samples the number of PostgreSQL backends of a user (directly, not through the pooler) in a thread."""

    def __init__(self, pg, user=USER):
        self.pg, self.user = pg, user
        self.samples = []
        self.stop_flag = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            with self.pg.connect(dbname="postgres") as conn:
                while not self.stop_flag.is_set():
                    n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND datname = "
                                     "'parlant' AND backend_type = 'client backend'", (self.user,)).fetchone()[0]
                    self.samples.append(n)
                    time.sleep(0.01)
        except Exception as e:  # pragma: no cover - reported by the test
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(10)

    @property
    def max(self):
        return max(self.samples) if self.samples else 0


def run_threads(n, fn, timeout=60):
    """Runs fn(i) in n threads; returns the list of exceptions raised (empty when all succeeded)."""
    errors = []
    lock = threading.Lock()

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:
            with lock:
                errors.append((i, repr(e)))

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        errors.append(("hung", f"threads {hung} still running after {timeout}s"))
    return errors


def test_session_mode_more_clients_than_pool_slots_all_succeed(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=3)

    def client(i):
        for round_ in range(2):
            with p.connect() as conn:
                conn.execute("SELECT pg_sleep(0.02)")
                assert conn.execute("SELECT %s::int", (i,), prepare=False).fetchone() == (i,)
                with conn.transaction():
                    assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)

    with BackendMonitor(pg) as mon:
        errors = run_threads(20, client)
    assert errors == []
    assert mon.error is None
    assert 1 <= mon.max <= 3, f"server connections exceeded default_pool_size=3: {mon.max}"


def test_transaction_mode_releases_server_between_transactions(parley, pg):
    """20 clients stay connected at once on 3 server connections: only possible if each server goes back to the
    pool at the end of every transaction."""
    no_backends_left(pg)
    p = parley(pool_mode="transaction", default_pool_size=3)
    conns = [p.connect() for _ in range(20)]
    try:
        def client(i):
            conn = conns[i]
            for j in range(10):
                with conn.transaction():
                    conn.execute("SELECT pg_sleep(0.002)")
                    assert conn.execute("SELECT %s::int + %s::int", (i, j), prepare=False).fetchone() == (i + j,)
                assert conn.execute("SELECT 1").fetchone() == (1,)  # autocommit statement

        with BackendMonitor(pg) as mon:
            errors = run_threads(20, client)
        assert errors == []
        assert mon.error is None
        assert 1 <= mon.max <= 3, f"server connections exceeded default_pool_size=3: {mon.max}"
    finally:
        for c in conns:
            c.close()


def test_transaction_mode_two_clients_share_one_server(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="transaction", default_pool_size=1)
    with p.connect() as a, p.connect() as b:
        pids = set()
        for _ in range(5):
            pids.add(a.execute("SELECT pg_backend_pid()").fetchone()[0])
            pids.add(b.execute("SELECT pg_backend_pid()").fetchone()[0])
        assert len(pids) == 1, f"pool_size=1 should mean one server connection, saw backends {pids}"
        assert pg.backend_count(USER) == 1


def abrupt_close(conn):
    """Closes the client's TCP connection without a Terminate message (like a crashed client)."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    try:
        s.shutdown(socket.SHUT_RDWR)
    finally:
        s.close()
    try:
        conn.close()
    except Exception:
        pass


@pytest.mark.parametrize("how", ["abrupt", "terminate"])
@pytest.mark.parametrize("pool_mode", MODES)
def test_client_gone_mid_transaction_never_leaks_into_next_client(parley, pg, pool_mode, how):
    no_backends_left(pg)
    p = parley(pool_mode=pool_mode, default_pool_size=1)
    key = 1000 + MODES.index(pool_mode) * 10 + (how == "abrupt")
    a = p.connect()
    a.execute("BEGIN")
    a.execute("INSERT INTO t (id, v) VALUES (%s, 'must not be committed')", (key,), prepare=False)
    a.execute("SET LOCAL statement_timeout = '4321ms'")
    a_now = a.execute("SELECT now()").fetchone()[0]
    if how == "abrupt":
        abrupt_close(a)
    else:
        a.close()  # Terminate message in the middle of the transaction
    with p.connect() as b:
        # Not inside the leftover transaction: no transaction id assigned, settings reset, row absent.
        assert b.execute("SELECT pg_current_xact_id_if_assigned()").fetchone() == (None,)
        assert b.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert b.execute("SELECT count(*) FROM t WHERE id = %s", (key,), prepare=False).fetchone() == (0,)
        assert b.execute("SELECT now()").fetchone()[0] > a_now, "still in the first client's transaction"
    assert pg.scalar("SELECT count(*) FROM t WHERE id = %s", (key,)) == 0
    # No server connection is left idle in transaction.
    pg.wait_backends(USER, lambda n: all(r[1] != "idle in transaction" for r in pg.backends(USER)) or n == 0,
                     timeout=5, what="no backend idle in transaction")


def test_query_wait_timeout_errors_waiting_client_when_pool_exhausted(parley, pg, target):
    p = parley(pool_mode="transaction", default_pool_size=1, query_wait_timeout=2)
    holder = p.connect()
    holder.execute("BEGIN")
    holder.execute("SELECT 1")  # holds the only server connection
    t0 = time.monotonic()
    fields = None
    with Wire(p.host, p.port, timeout=15) as w:
        try:
            w.login(USER, PASSWORDS[USER])
            w.send(b"Q" + (len(b"SELECT 'waiting'\0") + 4).to_bytes(4, "big") + b"SELECT 'waiting'\0")
            msgs, closed = w.read_until_closed(timeout=12)
            errs = w.errors(msgs)
            assert errs, f"expected an ErrorResponse, got {msgs!r} (closed={closed})"
            fields = errs[0]
        except WireError as e:  # a pooler may also wait for a server at login
            fields = e.fields
    elapsed = time.monotonic() - t0
    msg = fields.get("M", "")
    assert "timeout" in msg.lower(), fields
    assert fields.get("C") == "08P01" or "query_wait_timeout" in msg, fields
    assert 1.5 <= elapsed <= 9, f"error after {elapsed:.1f}s with query_wait_timeout=2"
    # The holder is unaffected and the pool works again once it commits.
    assert holder.execute("SELECT 'holder ok'").fetchone() == ("holder ok",)
    holder.execute("COMMIT")
    holder.close()
    with p.connect() as c:
        assert c.execute("SELECT 'next ok'").fetchone() == ("next ok",)


def test_server_reset_query_clears_session_state_in_session_mode(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=1, server_reset_query="DISCARD ALL")
    with p.connect() as a:
        pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        a.execute("SET statement_timeout = '12345ms'")
        a.execute("SET parley_test.custom = 'leaky'")
        a.execute("PREPARE leaky_stmt AS SELECT 1")
        a.execute("CREATE TEMP TABLE leaky_temp (x int)")
    with p.connect() as b:
        assert b.execute("SELECT pg_backend_pid()").fetchone()[0] == pid_a, "pool_size=1 reuses the server"
        assert b.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert b.execute("SELECT current_setting('parley_test.custom', true)").fetchone()[0] in (None, "")
        assert b.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_class WHERE relname = 'leaky_temp'").fetchone() == (0,)


def test_min_pool_size_keeps_server_connections_open(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=5, min_pool_size=3)
    # The pool exists once a client uses it (PgBouncer fills min_pool_size only while the pool has clients).
    with p.connect() as c:
        c.execute("SELECT 1")
        n = pg.wait_backends(USER, lambda n: n >= 3, timeout=10, what="min_pool_size=3 server connections")
        assert n <= 5
        time.sleep(1.5)
        assert 3 <= pg.backend_count(USER) <= 5
        assert c.execute("SELECT 2").fetchone() == (2,)


def test_server_idle_timeout_closes_idle_servers(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=5, server_idle_timeout=1)
    conns = [p.connect() for _ in range(3)]
    for c in conns:
        c.execute("SELECT 1")
    assert pg.backend_count(USER) == 3
    for c in conns:
        c.close()
    t0 = time.monotonic()
    pg.wait_backends(USER, lambda n: n == 0, timeout=10, what="idle servers to be closed (server_idle_timeout=1)")
    assert time.monotonic() - t0 >= 0.3, "servers were closed at once, not after being idle"
    with p.connect() as c:
        assert c.execute("SELECT 'reconnects'").fetchone() == ("reconnects",)


PGBENCH_CASES = [
    ("session", "simple", "tpcb"),
    ("session", "extended", "tpcb"),
    ("session", "prepared", "tpcb"),
    ("session", "simple", "select-only"),
    ("session", "extended", "select-only"),
    ("transaction", "simple", "tpcb"),
    ("transaction", "extended", "tpcb"),
    ("transaction", "simple", "select-only"),
    ("transaction", "extended", "select-only"),
]


@pytest.mark.parametrize("pool_mode,protocol,script", PGBENCH_CASES,
                         ids=["-".join(c) for c in PGBENCH_CASES])
def test_pgbench_through_pooler_completes_every_transaction(parley, pgbench_tables, pool_mode, protocol, script):
    clients, per_client = 10, 50
    p = parley(pool_mode=pool_mode, default_pool_size=3)
    # pgbench -M prepared prepares synchronously (PQprepare), blocking its whole thread while that client waits
    # for a server; with fewer servers than clients that deadlocks pgbench itself, so give each client a thread.
    threads = clients if protocol == "prepared" else 2
    args = ["-n", "-c", clients, "-j", threads, "-t", per_client, "-M", protocol]
    if script == "select-only":
        args.append("-S")
    r = pgbench(p, args)
    assert r.rc == 0, r
    assert "error" not in r.text.lower(), r
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", r.out)
    assert m, r
    assert int(m.group(1)) == int(m.group(2)) == clients * per_client, r

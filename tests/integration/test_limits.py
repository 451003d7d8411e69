"""Pool modes and limits against a real PostgreSQL: statement mode, reserve_pool_size / reserve_pool_timeout,
max_db_connections, max_user_connections, per-database and per-user pool_mode / pool_size, ignore_startup_parameters,
application_name_add_host, and the SHOW CONFIG rows of these settings."""

import socket
import struct
import threading
import time

import psycopg
import pytest

from harness import SSL_REQUEST_CODE, Wire, WireError, console_rows, message, wait_until

USER = "app_md5"
OTHER = "app_plain"


def no_backends_left(pg, *users):
    """Waits until the server connections of earlier tests' poolers are gone, so counts start from zero."""
    for user in users or (USER,):
        pg.wait_backends(user, lambda n: n == 0, timeout=15, what=f"leftover backends of {user} to exit")


def backends_of(pg, users):
    """Client backends in database parlant logged in as any of users."""
    return pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                     "AND datname = 'parlant' AND usename = ANY(%s)", (list(users),))


class Background:
    """Runs fn() in a thread; .done tells whether it returned, .result / .error what it gave."""

    def __init__(self, fn):
        self.result = self.error = None
        self.finished = threading.Event()

        def run():
            try:
                self.result = fn()
            except Exception as e:  # reported by the test
                self.error = e
            finally:
                self.finished.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def done(self):
        return self.finished.is_set()

    def wait(self, timeout):
        assert self.finished.wait(timeout), f"background client still waiting after {timeout}s"
        if self.error:
            raise self.error
        return self.result


def one_query(p, sql, **kw):
    """Connects through p, runs sql and returns its first row."""
    with p.connect(**kw) as conn:
        return conn.execute(sql).fetchone()


def pool_row(p, db, user):
    rows = [r for r in console_rows(p, "SHOW POOLS") if r["database"] == db and r["user"] == user]
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------------------------------------------------------
# statement mode


def test_statement_mode_releases_server_after_every_statement_and_refuses_transactions(parley, pg):
    no_backends_left(pg)
    # query_wait_timeout: were the server not released after each statement, b would fail instead of hanging
    p = parley(pool_mode="statement", default_pool_size=1, query_wait_timeout=3)
    a, b = p.connect(), p.connect()
    try:
        pids = set()
        for i in range(3):  # a and b take turns on the one server connection, extended and simple protocol
            assert a.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            assert b.execute("SELECT 'b'").fetchone() == ("b",)
            pids.add(a.execute("SELECT pg_backend_pid()").fetchone()[0])
            pids.add(b.execute("SELECT pg_backend_pid()").fetchone()[0])
        assert len(pids) == 1, pids
        assert pool_row(p, "parlant", USER)["pool_mode"] == "statement"

        # several statements in one Query message are one implicit transaction: allowed
        with p.wire() as w:
            w.login(USER)
            msgs = w.query("SELECT 1; SELECT 2")
            assert Wire.errors(msgs) == [] and Wire.data_rows(msgs) == [["1"], ["2"]], msgs

        # an explicit transaction is refused on the statement that opens it
        with pytest.raises(psycopg.Error) as ei:
            a.execute("BEGIN")
        assert "transaction blocks not allowed in statement pooling mode" in str(ei.value), ei.value
        with p.wire() as w:
            w.login(USER)
            w.send(message(b"Q", b"BEGIN\0"))
            msgs, closed = w.read_until_closed(timeout=5)
            assert closed and b"Z" not in [t for t, _ in msgs], msgs
            assert "statement pooling mode" in Wire.errors(msgs)[0]["M"], msgs
        # the server left inside that transaction is not handed to anyone
        assert b.execute("SELECT pg_current_xact_id_if_assigned() IS NULL, now() = statement_timestamp()"
                         ).fetchone() == (True, True)
    finally:
        a.close()
        b.close()
    pg.wait_backends(USER, lambda n: all(r[1] != "idle in transaction" for r in pg.backends(USER)), timeout=5,
                     what="no backend idle in transaction")


# ---------------------------------------------------------------------------------------------------------------
# reserve pool


def test_reserve_pool_opens_after_reserve_pool_timeout_and_no_further(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=1,
               query_wait_timeout=15)
    a = p.connect()
    b = None
    try:
        assert a.execute("SELECT 'a'").fetchone() == ("a",)  # holds the one regular server
        t0 = time.monotonic()
        b = p.connect()
        assert b.execute("SELECT 'b'").fetchone() == ("b",)
        elapsed = time.monotonic() - t0
        assert 0.8 <= elapsed < 3, f"b served after {elapsed:.2f}s with reserve_pool_timeout=1"
        assert pg.backend_count(USER) == 2

        # the reserve is spent: a third client waits for a server to come free, however long it waits
        with p.wire(timeout=15) as w:
            w.login(USER)
            w.send(message(b"Q", b"SELECT 'c'\0"))
            time.sleep(1.5)
            row = pool_row(p, "parlant", USER)
            assert (row["cl_waiting"], row["sv_active"]) == ("1", "2"), row
            assert pg.backend_count(USER) == 2
            a.close()
            msgs = []
            while not msgs or msgs[-1][0] != b"Z":
                msgs.append(w.read_message())
            assert Wire.data_rows(msgs) == [["c"]], msgs
        assert pg.backend_count(USER) <= 2
    finally:
        a.close()
        if b:
            b.close()


def test_reserve_pool_timeout_zero_disables_the_reserve_pool(parley, pg):
    no_backends_left(pg)
    p = parley(pool_mode="session", default_pool_size=1, reserve_pool_size=1, reserve_pool_timeout=0,
               query_wait_timeout=2)
    with p.connect() as a:
        assert a.execute("SELECT 'a'").fetchone() == ("a",)
        with p.connect() as b:
            with pytest.raises(psycopg.Error) as ei:
                b.execute("SELECT 'b'")
            assert "query_wait_timeout" in str(ei.value), ei.value
        assert pg.backend_count(USER) == 1


# ---------------------------------------------------------------------------------------------------------------
# max_db_connections / max_user_connections


@pytest.mark.parametrize("where", ["global", "database"])
def test_max_db_connections_caps_servers_of_all_users_of_a_database(parley, pg, where):
    no_backends_left(pg, USER, OTHER)
    if where == "global":
        p = parley(pool_mode="session", default_pool_size=5, query_wait_timeout=15, max_db_connections=2)
    else:
        p = parley(pool_mode="session", default_pool_size=5, query_wait_timeout=15,
                   parlant_params="max_db_connections=2")
    a1, a2 = p.connect(), p.connect()
    waiter = None
    try:
        assert a1.execute("SELECT 1").fetchone() == (1,)
        assert a2.execute("SELECT 2").fetchone() == (2,)
        waiter = Background(lambda: one_query(p, "SELECT 'other user'", user=OTHER))
        time.sleep(1.0)
        assert not waiter.done, "a third server connection was opened beyond max_db_connections=2"
        assert backends_of(pg, [USER, OTHER]) == 2
        # a1 leaves: its server goes idle in app_md5's pool, and is closed to make room for app_plain's client
        a1.close()
        assert waiter.wait(5) == ("other user",)
        assert backends_of(pg, [USER, OTHER]) <= 2
    finally:
        a1.close()
        a2.close()


@pytest.mark.parametrize("where", ["global", "users"])
def test_max_user_connections_caps_servers_of_a_user_across_databases(parley, pg, where):
    no_backends_left(pg, USER, OTHER)
    second_db = f"parlant2 = host={pg.host} port={pg.port} dbname=parlant"
    if where == "global":
        p = parley(pool_mode="session", default_pool_size=5, query_wait_timeout=15, max_user_connections=1,
                   databases_extra=[second_db])
    else:
        p = parley(pool_mode="session", default_pool_size=5, query_wait_timeout=15, databases_extra=[second_db],
                   users_extra=[f"{USER} = max_user_connections=1"])
    a = p.connect(dbname="parlant")
    waiter = None
    try:
        assert a.execute("SELECT 1").fetchone() == (1,)
        waiter = Background(lambda: one_query(p, "SELECT 'second database'", dbname="parlant2"))
        time.sleep(1.0)
        assert not waiter.done, "a second server connection was opened beyond max_user_connections=1"
        assert pg.backend_count(USER) == 1
        if where == "users":
            # the limit is app_md5's alone: app_plain opens two server connections at once
            b1, b2 = p.connect(user=OTHER), p.connect(user=OTHER)
            assert b1.execute("SELECT 1").fetchone() == b2.execute("SELECT 1").fetchone() == (1,)
            assert pg.backend_count(OTHER) == 2
            b1.close()
            b2.close()
        a.close()
        assert waiter.wait(5) == ("second database",)
        assert pg.backend_count(USER) <= 1
    finally:
        a.close()


# ---------------------------------------------------------------------------------------------------------------
# per-database and per-user pool_mode / pool_size


def test_database_and_user_pool_mode_and_pool_size_override_the_globals(parley, pg, target):
    if target != "parley":
        pytest.skip("PgBouncer 1.18 has no pool_size in [users]")
    no_backends_left(pg, USER, OTHER)
    p = parley(pool_mode="session", default_pool_size=4, query_wait_timeout=5,
               databases_extra=[f"parlant_tx = host={pg.host} port={pg.port} dbname=parlant "
                                f"pool_mode=transaction pool_size=1"],
               users_extra=[f"{OTHER} = pool_mode=statement pool_size=2"])
    expected = {("parlant", USER): ("session", "4"), ("parlant_tx", USER): ("transaction", "1"),
                ("parlant", OTHER): ("statement", "2"), ("parlant_tx", OTHER): ("statement", "2")}  # user wins
    for (db, user) in expected:
        assert one_query(p, "SELECT 1", dbname=db, user=user) == (1,)
    for (db, user), (mode, size) in expected.items():
        row = pool_row(p, db, user)
        assert (row["pool_mode"], row["pool_size"]) == (mode, size), row

    # behaviour follows: parlant_tx/app_md5 shares its one server between two open clients (transaction mode) ...
    x, y = p.connect(dbname="parlant_tx"), p.connect(dbname="parlant_tx")
    try:
        px = {x.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(2)}
        py = {y.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(2)}
        assert px == py and len(px) == 1, (px, py)
    finally:
        x.close()
        y.close()
    # ... parlant/app_md5 keeps one server per client (session mode) ...
    s1, s2 = p.connect(), p.connect()
    try:
        assert s1.execute("SELECT pg_backend_pid()").fetchone() != s2.execute("SELECT pg_backend_pid()").fetchone()
    finally:
        s1.close()
        s2.close()
    # ... and app_plain refuses transactions everywhere (statement mode)
    with p.connect(user=OTHER, dbname="parlant_tx") as conn:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("BEGIN")
        assert "statement pooling mode" in str(ei.value)


# ---------------------------------------------------------------------------------------------------------------
# startup parameters


def test_unknown_startup_parameter_refused_by_name_unless_ignored(parley, pg):
    p = parley()
    with p.wire() as w:
        with pytest.raises(WireError) as ei:
            w.login(USER, options="-c geqo=off")
    assert ei.value.sqlstate == "08P01" and "options" in ei.value.message, ei.value.fields
    with pytest.raises(psycopg.OperationalError) as ei2:
        one_query(p, "SELECT 1", options="-c geqo=off")
    assert "unsupported startup parameter: options" in str(ei2.value)

    q = parley(ignore_startup_parameters="options, search_path")
    with q.wire() as w:
        w.login(USER, options="-c geqo=off", search_path="nowhere")
        assert Wire.data_rows(w.query("SELECT 'accepted'")) == [["accepted"]]
    # ignored means not passed on: the server keeps its own settings
    assert one_query(q, "SELECT current_setting('geqo')", options="-c geqo=off") == ("on",)


def test_application_name_add_host_appends_client_address_and_port(parley, pg):
    p = parley(pool_mode="transaction", application_name_add_host=1)
    with p.connect(application_name="tmo-app") as conn:
        s = socket.socket(fileno=socket.dup(conn.pgconn.socket))
        try:
            host, port = s.getsockname()[:2]
        finally:
            s.close()
        want = f"tmo-app - {host}:{port}"
        assert conn.info.parameter_status("application_name") == want
        assert conn.execute("SHOW application_name").fetchone() == (want,)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pg.scalar("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (backend,)) == want
    # a client that gives no name is called "app"
    with p.wire() as w:
        msgs = w.login(USER)
        host, port = w.sock.getsockname()[:2]
        status = dict(payload.rstrip(b"\0").split(b"\0", 1) for t, payload in msgs if t == b"S")
        assert status[b"application_name"].decode() == f"app - {host}:{port}"
    # off (the default): the name is left alone
    q = parley(pool_mode="transaction")
    with q.connect(application_name="tmo-app") as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("tmo-app",)


# ---------------------------------------------------------------------------------------------------------------
# SHOW CONFIG


def test_show_config_reports_these_settings_with_their_values_and_defaults(parley):
    given = {"pool_mode": "statement", "query_timeout": "7", "client_idle_timeout": "8",
             "idle_transaction_timeout": "9", "client_login_timeout": "11", "server_check_delay": "12",
             "server_check_query": "select 2", "server_login_retry": "13", "reserve_pool_size": "3",
             "reserve_pool_timeout": "4", "max_user_connections": "14", "max_db_connections": "15",
             "ignore_startup_parameters": "extra_float_digits", "application_name_add_host": "1"}
    defaults = {"pool_mode": "session", "query_timeout": "0", "client_idle_timeout": "0",
                "idle_transaction_timeout": "0", "client_login_timeout": "60", "server_check_delay": "30",
                "server_check_query": "select 1", "server_login_retry": "15", "reserve_pool_size": "0",
                "reserve_pool_timeout": "5", "max_user_connections": "0", "max_db_connections": "0",
                "ignore_startup_parameters": "", "application_name_add_host": "0"}
    p = parley(**given)
    rows = {r["key"]: r for r in console_rows(p, "SHOW CONFIG")}
    for key, value in given.items():
        assert key in rows, f"{key} missing from SHOW CONFIG"
        assert rows[key]["value"] == value, rows[key]
        assert rows[key]["default"] == defaults[key], rows[key]
        assert rows[key]["changeable"] == "yes", rows[key]


# ---------------------------------------------------------------------------------------------------------------
# max_client_conn


def test_max_client_conn_refuses_logins_but_not_cancels_or_the_admin_console(parley, target):
    """With max_client_conn clients connected, another login gets 53300 after its SSLRequest is answered and its
    StartupMessage read (as PostgreSQL's "too many clients"), while a CancelRequest still stops a running query and
    the admin console still answers (PostgreSQL's superuser_reserved_connections); only 3 connections are taken
    beyond the limit, and one more is refused at once."""
    if not target.is_parley:
        pytest.skip("PgBouncer refuses the console and cancels too once max_client_conn is reached")
    p = parley(max_client_conn=3, default_pool_size=5)
    conns = [p.connect() for _ in range(3)]
    try:
        sleeper = Background(lambda: conns[0].execute("SELECT pg_sleep(30)"))
        wait_until(lambda: any(r["state"] == "active" for r in console_rows(p, "SHOW SERVERS")), 10,
                   what="the sleeping query to reach a server")
        # a login: the SSLRequest is answered, then the login is refused by name
        with p.wire(timeout=5) as w:
            w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
            assert w.read_bytes(1) == b"N"
            with pytest.raises(WireError) as e:
                w.login(USER)
            assert e.value.sqlstate == "53300" and "max_client_conn" in e.value.message
        # the admin console still works while the pooler is full
        assert pool_row(p, "parlant", USER)["cl_active"] == "3"
        # and a cancel still reaches the running query (psycopg sends a CancelRequest on a new connection)
        t0 = time.monotonic()
        conns[0].cancel()
        with pytest.raises(psycopg.errors.QueryCanceled):
            sleeper.wait(10)
        assert time.monotonic() - t0 < 10
        # the reserve is 3 connections: with them taken by connections that send nothing, the next is refused at
        # once, before it sends a byte
        idle = [socket.create_connection((p.host, p.port), timeout=5) for _ in range(3)]
        try:
            # (the listen backlog is accepted in order: the idle three are in before the next one)
            with Wire(p.host, p.port, timeout=5) as w:
                msgs, closed = w.read_until_closed(timeout=5)
            assert closed and [(e.get("C"), e.get("M")) for e in Wire.errors(msgs)] == [
                ("53300", "no more connections allowed (max_client_conn)")], msgs
        finally:
            for s in idle:
                s.close()
        # the clients already in are unaffected
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()
    # and once they are gone, logins work again
    def login_works():
        try:
            return one_query(p, "SELECT 2") == (2,)
        except psycopg.OperationalError:
            return False
    wait_until(login_works, 10, what="a login after the clients left")

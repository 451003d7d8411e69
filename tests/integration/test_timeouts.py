"""Timeouts against a real PostgreSQL: query_timeout, client_idle_timeout, idle_transaction_timeout,
server_check_delay / server_check_query and server_login_retry (client_login_timeout is in test_faults.py)."""

import time

import psycopg
import pytest

from harness import BADSRV_USERLIST_PASSWORD, console_rows, wait_until, wire_login_error

USER = "app_md5"
CHECK_SEQ = "tmo_check_seq"


def no_backends_left(pg, user=USER):
    """Waits until the server connections of earlier tests' poolers are gone, so counts start from zero."""
    pg.wait_backends(user, lambda n: n == 0, timeout=15, what=f"leftover backends of {user} to exit")


def active_backends_running(pg, marker):
    """PIDs of backends (other than the one asking) whose running query contains marker."""
    return [r[0] for r in pg.query("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s "
                                   "AND pid <> pg_backend_pid()", (f"%{marker}%",))]


# ---------------------------------------------------------------------------------------------------------------
# query_timeout


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_query_timeout_cancels_the_query_and_closes_the_client(parley, pg, target, pool_mode):
    p = parley(pool_mode=pool_mode, default_pool_size=1, query_timeout=1)
    marker = f"tmo-query-timeout-{pool_mode}"
    with p.connect() as conn:
        # a query shorter than the timeout is untouched, however long the client then stays
        assert conn.execute("SELECT 'quick' FROM pg_sleep(0.5)").fetchone() == ("quick",)
        time.sleep(1.2)
        t0 = time.monotonic()
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"SELECT pg_sleep(30) /* {marker} */")
        elapsed = time.monotonic() - t0
    assert "query_timeout" in str(ei.value) or "query timeout" in str(ei.value), ei.value
    assert 0.9 <= elapsed < 3.5, f"error after {elapsed:.2f}s with query_timeout=1"
    if target == "parley":
        # parley cancels the statement too: the backend does not go on sleeping for 30 s
        wait_until(lambda: not active_backends_running(pg, marker), 3, what="the timed-out query to stop")
    else:
        # PgBouncer 1.18 only closes the connection: end the sleeper so it does not hold a backend for later tests
        for pid in active_backends_running(pg, marker):
            pg.query("SELECT pg_terminate_backend(%s)", (pid,))
    # the pool serves the next client
    with p.connect() as conn:
        assert conn.execute("SELECT 'next'").fetchone() == ("next",)


# ---------------------------------------------------------------------------------------------------------------
# client_idle_timeout


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_client_idle_timeout_closes_idle_client_but_not_one_that_waited_for_a_long_query(parley, target, pool_mode):
    if target != "parley" and pool_mode == "session":
        pytest.skip("PgBouncer 1.18 leaves an idle session-mode client that holds a server open")
    p = parley(pool_mode=pool_mode, client_idle_timeout=1)
    idle = p.connect()
    busy = p.connect()
    try:
        assert idle.execute("SELECT 1").fetchone() == (1,)
        # busy's request runs longer than the timeout: time spent waiting for a result is not idleness
        # (PgBouncer 1.18 counts from when the request was sent, and closes busy too)
        assert busy.execute("SELECT 'busy' FROM pg_sleep(1.5)").fetchone() == ("busy",)
        time.sleep(0.4)
        if target == "parley":
            assert busy.execute("SELECT 'busy still here'").fetchone() == ("busy still here",)
        with pytest.raises(psycopg.Error) as ei:
            idle.execute("SELECT 'idle too long'")
        assert "client_idle_timeout" in str(ei.value), ei.value
        # a new client is served as usual
        with p.connect() as conn:
            assert conn.execute("SELECT 'fresh'").fetchone() == ("fresh",)
    finally:
        idle.close()
        busy.close()


# ---------------------------------------------------------------------------------------------------------------
# idle_transaction_timeout


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_idle_transaction_timeout_closes_client_and_never_reuses_its_server(parley, pg, target, pool_mode):
    no_backends_left(pg)
    p = parley(pool_mode=pool_mode, default_pool_size=1, idle_transaction_timeout=1)
    key = 5100 + (pool_mode == "transaction")
    a = p.connect()
    try:
        a.execute("BEGIN")
        a.execute("INSERT INTO t (id, v) VALUES (%s, 'idle_transaction_timeout')", (key,))
        pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
        # a statement longer than the timeout is work, not idleness: the transaction survives it
        a.execute("SELECT pg_sleep(1.3)")
        time.sleep(0.3)
        assert a.execute("SELECT count(*) FROM t WHERE id = %s", (key,)).fetchone() == (1,)
        time.sleep(1.6)
        with pytest.raises(psycopg.Error) as ei:
            a.execute("SELECT 'too late'")
        assert "idle transaction timeout" in str(ei.value) or "idle_transaction_timeout" in str(ei.value), ei.value
    finally:
        a.close()
    # the transaction was rolled back and its server closed, not handed to the next client in that state
    assert pg.scalar("SELECT count(*) FROM t WHERE id = %s", (key,)) == 0
    wait_until(lambda: pid_a not in [r[0] for r in pg.backends(USER)], 5, what="the timed-out server to close")
    with p.connect() as b:
        assert b.execute("SELECT pg_backend_pid() <> %s, pg_current_xact_id_if_assigned() IS NULL",
                         (pid_a,)).fetchone() == (True, True)


# ---------------------------------------------------------------------------------------------------------------
# server_check_delay / server_check_query


@pytest.fixture
def check_seq(pg):
    """A sequence the check query advances, so the number of checks PostgreSQL ran can be read back."""
    with pg.connect() as conn:
        conn.execute(f"DROP SEQUENCE IF EXISTS {CHECK_SEQ}")
        conn.execute(f"CREATE SEQUENCE {CHECK_SEQ}")
        conn.execute(f"GRANT USAGE, SELECT, UPDATE ON SEQUENCE {CHECK_SEQ} TO {USER}")
    yield lambda: pg.scalar(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {CHECK_SEQ}")
    with pg.connect() as conn:
        conn.execute(f"DROP SEQUENCE IF EXISTS {CHECK_SEQ}")


def test_server_check_query_runs_on_servers_idle_longer_than_the_delay(parley, pg, target, check_seq):
    no_backends_left(pg)
    p = parley(pool_mode="transaction", default_pool_size=1, server_check_delay=1,
               server_check_query=f"SELECT nextval('{CHECK_SEQ}')")
    with p.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(3):  # the server was idle for less than server_check_delay each time: no check
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert check_seq() == 0
        time.sleep(1.3)
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (pid,)  # checked first, then handed out
        assert check_seq() == 1
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert check_seq() == 1

        if target != "parley":
            return  # PgBouncer 1.18 runs one check fewer after SET server_check_delay = 0
        # server_check_delay = 0: every hand-out is checked
        console_rows(p, "SET server_check_delay = 0")
        for _ in range(3):
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert check_seq() == 4

        # a server that fails its check is closed, and the client gets a fresh one without noticing
        console_rows(p, "SET server_check_query = 'SELECT 1/0'")
        new_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert new_pid != pid
        wait_until(lambda: pid not in [r[0] for r in pg.backends(USER)], 5, what="the failed server to close")

        # an empty server_check_query turns checking off
        console_rows(p, "SET server_check_query = ''")
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (new_pid,)
        assert conn.execute("SELECT pg_backend_pid()").fetchone() == (new_pid,)
    assert check_seq() == 4


# ---------------------------------------------------------------------------------------------------------------
# server_login_retry


def test_server_login_retry_refuses_at_once_then_tries_again(parley, pg, target):
    """app_badsrv's auth_file password is not the one PostgreSQL has: every server login is refused."""
    p = parley(server_login_retry=1.5, query_wait_timeout=10)
    before = pg.log_size()

    def attempts():
        return pg.log_since(before).count('password authentication failed for user "app_badsrv"')

    first = wire_login_error(p, "app_badsrv", BADSRV_USERLIST_PASSWORD)
    assert "authentication failed" in first.message, first.fields
    wait_until(lambda: attempts() == 1, 5, what="PostgreSQL to log the refused login")
    t_fail = time.monotonic()

    # within server_login_retry: the error at once, without another login attempt (as PgBouncer's documentation
    # says; PgBouncer 1.18 itself keeps the client waiting until the pause is over)
    if target == "parley":
        second = wire_login_error(p, "app_badsrv", BADSRV_USERLIST_PASSWORD)
        assert time.monotonic() - t_fail < 1.2
        assert "server_login_retry" in second.message and "authentication failed" in second.message, second.fields
        time.sleep(0.2)
        assert attempts() == 1, "the pooler tried again before server_login_retry passed"

    # afterwards the pooler tries PostgreSQL again
    time.sleep(max(0.0, 1.7 - (time.monotonic() - t_fail)))
    third = wire_login_error(p, "app_badsrv", BADSRV_USERLIST_PASSWORD)
    assert "authentication failed" in third.message, third.fields
    wait_until(lambda: attempts() == 2, 5, what="a second login attempt after server_login_retry")
    # other pools are not affected
    with p.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

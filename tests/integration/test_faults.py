"""Faults: PostgreSQL restarted under load, a backend terminated mid-result with the cache on, PostgreSQL down at
parley's startup, a server that accepts and never answers, a client that stops reading a huge result, and clients
that connect and never send a startup packet. (Malformed input, a 2 GB length and refused connections are in
test_robustness.py.)"""

import socket
import threading
import time

import psycopg
import pytest

import harness
from harness import Wire, WireError, console_rows, free_port, message, wait_until

USER = "app_md5"


# ---------------------------------------------------------------------------------------------------------------
# helpers




def pool_row(p, database, user=USER):
    rows = [r for r in console_rows(p, "SHOW POOLS") if r["database"] == database and r["user"] == user]
    return rows[0] if rows else None


def rss_kb(pid):
    """VmRSS of a process in kB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def faultdb_line(server, name="faultdb"):
    return f"{name} = host={server.host} port={server.port} dbname=parlant"


@pytest.fixture(scope="module")
def own_pg(tmp_base):
    """A PostgreSQL of this module's own, which the tests stop and start (the session's `pg` stays untouched)."""
    with harness.running_pg(tmp_base, "pg-faults-") as server:
        yield server


def ensure_started(server):
    if server.pid is None or not harness.port_accepts(server.host, server.port):
        server.start()


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL restarted under load


class LoopClient:
    """A thread that queries through the pooler in a loop, reconnecting after an error; it records what it saw."""

    def __init__(self, pooler, dbname, idx):
        self.pooler, self.dbname, self.idx = pooler, dbname, idx
        self.ok = []            # monotonic times of correct results
        self.errors = []        # (time, repr) of psycopg errors: the clean failures allowed while PostgreSQL is down
        self.bad = []           # wrong results or non-psycopg exceptions: never allowed
        self.max_latency = 0.0  # longest single connect or query, in seconds
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n = 0
        while not self.stop.is_set():
            conn = None
            try:
                t0 = time.monotonic()
                conn = psycopg.connect(self.pooler.dsn(USER, self.dbname, connect_timeout=10), autocommit=True)
                conn.prepare_threshold = None
                self.max_latency = max(self.max_latency, time.monotonic() - t0)
                while not self.stop.is_set():
                    n += 1
                    want = self.idx * 1000000 + n
                    t0 = time.monotonic()
                    row = conn.execute("SELECT %s::int", (want,)).fetchone()
                    self.max_latency = max(self.max_latency, time.monotonic() - t0)
                    if row != (want,):
                        self.bad.append(f"wrong result {row!r} for {want}")
                    else:
                        self.ok.append(time.monotonic())
                    time.sleep(0.005)
            except psycopg.Error as e:
                self.max_latency = max(self.max_latency, time.monotonic() - t0)
                self.errors.append((time.monotonic(), repr(e)))
                time.sleep(0.05)
            except Exception as e:  # noqa: BLE001 - anything else is a bug worth reporting
                self.bad.append(repr(e))
                time.sleep(0.05)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass


def test_postgres_restart_under_load_clean_errors_fast_recovery_no_leaked_slots(parley, own_pg, target):
    ensure_started(own_pg)
    pool_size = 4
    # server_login_retry keeps its 15 s default for parley: an unreachable server is retried after at most a second
    # (PgBouncer waits the whole server_login_retry, so it gets the lowered value to take part in this test)
    extra = {} if target == "parley" else {"server_login_retry": 0.25}
    p = parley(pool_mode="transaction", default_pool_size=pool_size, server_connect_timeout=3,
               query_wait_timeout=10, databases_extra=[faultdb_line(own_pg)], **extra)
    clients = [LoopClient(p, "faultdb", i) for i in range(8)]
    for c in clients:
        c.thread.start()
    try:
        wait_until(lambda: all(c.ok for c in clients), 15, what="every client's first result")
        time.sleep(1.0)
        own_pg.stop()              # immediate shutdown: backends die mid-flight
        time.sleep(1.5)
        own_pg.start()             # returns once PostgreSQL accepts connections
        t_back = time.monotonic()

        # A fresh client is served within a second of PostgreSQL being back.
        first_ok = None
        while time.monotonic() - t_back < 10:
            try:
                with p.connect(dbname="faultdb", connect_timeout=5) as conn:
                    if conn.execute("SELECT 'back'").fetchone() == ("back",):
                        first_ok = time.monotonic()
                        break
            except psycopg.Error:
                time.sleep(0.02)
        assert first_ok is not None, "parley never served again after PostgreSQL came back"
        recovery = first_ok - t_back
        print(f"\nparley served again {recovery:.3f}s after PostgreSQL was back")
        assert recovery < 1.0, f"parley took {recovery:.2f}s to serve again after PostgreSQL was back"

        # Every loop client gets results again.
        wait_until(lambda: all(c.ok and c.ok[-1] > first_ok for c in clients), 10,
                   what="every client to be served again after the restart")
        time.sleep(0.5)
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.thread.join(15)
    bad = [b for c in clients for b in c.bad]
    assert bad == [], f"wrong results or unclean failures: {bad[:10]}"
    errors = [e for c in clients for e in c.errors]
    print(f"{len(errors)} clean errors while PostgreSQL was down, e.g. {errors[:2]}")
    # Errors happen only around the outage, none well after parley serves again.
    late = [e for e in errors if e[0] > first_ok + 2.0]
    assert late == [], f"errors long after recovery: {late[:5]}"
    assert max(c.max_latency for c in clients) < 10, "a client hung instead of getting a result or an error"

    if target != "parley":
        return
    # No leaked slot: no client or server left active/waiting/logging in, at most pool_size servers, and parley's
    # servers are exactly PostgreSQL's backends of that user.
    last = {}

    def settled():
        r = pool_row(p, "faultdb")
        # (by port: parley's SHOW SERVERS names the server-side dbname where PgBouncer names the pool's)
        servers = [s for s in console_rows(p, "SHOW SERVERS") if s["port"] == str(own_pg.port)]
        backends = own_pg.backend_count(USER)
        last.update(pool=r, servers=servers, backends=backends)
        if r is None or any(int(r[k]) for k in ("cl_active", "cl_waiting", "sv_active", "sv_login")):
            return False
        return len(servers) == backends and (r, servers)
    try:
        r, servers = wait_until(settled, 10, what="SHOW POOLS/SHOW SERVERS to settle with no busy or stale slot")
    except AssertionError as e:
        raise AssertionError(f"{e}: last seen {last}") from None
    assert len(servers) <= pool_size, servers
    assert int(r["sv_idle"]) + int(r["sv_used"]) == len(servers), (r, servers)
    assert all(s["state"] in ("idle", "used") for s in servers), servers


# ---------------------------------------------------------------------------------------------------------------
# pg_terminate_backend mid-result with the cache on

KILL_POLICY = "[cache]\nfaults_kill = 300\n"
# Streams 5 rows over half a second or more (the SRF in the target list is evaluated lazily), reading faults_kill once;
# each row is larger than PostgreSQL's 8 kB output buffer, so it is sent as soon as it is computed.
STREAMING_SQL = ("SELECT repeat((SELECT v FROM faults_kill WHERE id = 1), 2000) AS v, g "
                 "FROM (SELECT generate_series(1, 10000000) AS g) s WHERE g % 2000000 = 0")


@pytest.fixture(scope="module")
def kill_table(pg):
    pg.query("DROP TABLE IF EXISTS faults_kill")
    pg.query("CREATE TABLE faults_kill (id int PRIMARY KEY, v text)")
    pg.query("INSERT INTO faults_kill VALUES (1, 'before')")
    pg.query("GRANT ALL ON faults_kill TO app_md5")
    return pg


def run_streaming(p):
    """Runs STREAMING_SQL over a raw connection; returns its rows (all of them)."""
    with Wire(p.host, p.port, timeout=30) as w:
        w.login(USER)
        msgs = w.query(STREAMING_SQL)
        assert not Wire.errors(msgs), Wire.errors(msgs)
        return Wire.data_rows(msgs)


def test_backend_terminated_mid_result_with_cache_on_errors_then_nothing_stale(parley, kill_table, target):
    if target != "parley":
        pytest.skip("the [cache] section is parley's")
    pg = kill_table
    p = parley(pool_mode="transaction", default_pool_size=2, extra_config=KILL_POLICY)
    w = Wire(p.host, p.port, timeout=20)
    try:
        w.login(USER)
        w.send(message(b"Q", STREAMING_SQL.encode() + b"\0"))
        got = []
        while True:  # up to the first DataRow
            t, payload = w.read_message()
            got.append((t, payload))
            if t == b"D":
                break
            assert t in (b"T", b"N"), got
        pid = wait_until(lambda: pg.query("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND usename = %s "
                                          "AND query LIKE '%%faults_kill%%'", (USER,)), 5,
                         what="the streaming backend")[0][0]
        assert pg.scalar("SELECT pg_terminate_backend(%s)", (pid,)) is True
        rest, _closed = w.read_until_closed(timeout=10)
    finally:
        w.close()
    msgs = got + rest
    rows = Wire.data_rows(msgs)
    assert 1 <= len(rows) < 5, f"expected a partial result, got {rows}"
    errors = Wire.errors(msgs)
    assert errors, f"no ErrorResponse after the backend was terminated: {[m[0] for m in msgs]}"
    assert errors[0].get("C", "")[:2] in ("57", "08"), errors
    print(f"\n{len(rows)} of 5 rows, then {errors[0].get('C')} {errors[0].get('M')}")

    # The next query works and is not answered from a (partial or old) cache entry.
    pg.query("UPDATE faults_kill SET v = 'after-kill' WHERE id = 1")
    rows = run_streaming(p)
    assert rows == [["after-kill" * 2000, str(g)] for g in range(2000000, 10000001, 2000000)], \
        [(r[0][:20], len(r[0]), r[1]) for r in rows]
    # ... while the shape is cached once complete: a change behind parley's back is not seen (a hit).
    pg.query("UPDATE faults_kill SET v = 'behind-parley' WHERE id = 1")
    rows = run_streaming(p)
    assert [r[0] for r in rows] == ["after-kill" * 2000] * 5, \
        f"expected a cache hit: {[(r[0][:20], len(r[0]), r[1]) for r in rows]}"
    pg.query("UPDATE faults_kill SET v = 'before' WHERE id = 1")


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL unreachable at parley's startup


def test_postgres_down_at_startup_clear_error_then_served_once_up(parley, own_pg, target):
    own_pg.stop()
    try:
        p = parley(pool_mode="transaction", server_login_retry=0.25, server_connect_timeout=3,
                   query_wait_timeout=5, databases_extra=[faultdb_line(own_pg)])
        assert p.running()
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as ei:
                with p.connect(dbname="faultdb") as conn:
                    conn.execute("SELECT 1")
            # parley fails at once; PgBouncer 1.18 keeps the client waiting up to query_wait_timeout (5 s)
            limit = 5 if target == "parley" else 9
            assert time.monotonic() - t0 < limit, "the error took longer than server_connect_timeout + slack"
            text = str(ei.value)
            print(f"\nerror while PostgreSQL is down: {text.strip()}")
            assert "refused" in text or "connect" in text, text
        if target == "parley":  # the SQLSTATE, which libpq does not expose for a failed connection attempt
            with Wire(p.host, p.port) as w:
                try:
                    w.login(USER, database="faultdb")
                    errs = Wire.errors(w.query("SELECT 1"))
                    assert errs, "no error while PostgreSQL is down"
                    fields = errs[0]
                except WireError as e:
                    fields = e.fields
            assert fields.get("C", "").startswith("08"), fields
        # Other databases of the same parley are unaffected.
        with p.connect() as conn:
            assert conn.execute("SELECT 'other db ok'").fetchone() == ("other db ok",)
    finally:
        own_pg.start()
    t_back = time.monotonic()

    def served():
        try:
            with p.connect(dbname="faultdb", connect_timeout=5) as conn:
                return conn.execute("SELECT 'up'").fetchone() == ("up",)
        except psycopg.Error:
            return False
    wait_until(served, 5, interval=0.02, what="a client to be served once PostgreSQL is up")
    print(f"served {time.monotonic() - t_back:.3f}s after PostgreSQL was up")
    assert time.monotonic() - t_back < 1.5


# ---------------------------------------------------------------------------------------------------------------
# server_connect_timeout against a port that accepts and never answers


class SilentServer:
    """A TCP listener that accepts connections, reads nothing and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((harness.LOCALHOST, free_port()))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except (socket.timeout, TimeoutError):
                pass
            except OSError:
                return

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


def test_server_connect_timeout_against_silent_port(parley, target):
    if target != "parley":
        pytest.skip("PgBouncer 1.18 keeps the client queued (retrying the server) until query_wait_timeout")
    silent = SilentServer()
    timeout = 1.5
    try:
        p = parley(server_connect_timeout=timeout, server_login_retry=0.25, query_wait_timeout=30,
                   databases_extra=[f"silentdb = host=127.0.0.1 port={silent.port} dbname=parlant"])
        for attempt in range(2):
            t0 = time.monotonic()
            err = None
            with Wire(p.host, p.port, timeout=30) as w:
                try:
                    w.login(USER, database="silentdb")
                    msgs = w.query("SELECT 1")
                    errs = Wire.errors(msgs)
                    assert errs, f"query on a silent server answered without an error: {msgs!r}"
                    err = errs[0]
                except WireError as e:
                    err = e.fields
                except EOFError:
                    err = {}
            elapsed = time.monotonic() - t0
            print(f"\nattempt {attempt}: {elapsed:.2f}s: {err}")
            assert err, "connection closed without an ErrorResponse"
            assert elapsed < timeout + 2.0, f"error after {elapsed:.2f}s with server_connect_timeout={timeout}"
            assert elapsed > timeout - 0.3, f"error after {elapsed:.2f}s: before server_connect_timeout={timeout}?"
            if target == "parley":
                assert err.get("C", "").startswith("08"), err
                assert "server_connect_timeout" in err.get("M", "") or "timeout" in err.get("M", ""), err
            time.sleep(0.3)  # past server_login_retry, so the second attempt connects again
        assert len(silent.accepted) >= 2, "parley never reached the silent server"
        with p.connect() as conn:
            assert conn.execute("SELECT 'other db ok'").fetchone() == ("other db ok",)
    finally:
        silent.close()


# ---------------------------------------------------------------------------------------------------------------
# A client that stops reading mid-result

BIG_SQL = "SELECT repeat('x', 1000) FROM generate_series(1, 200000)"  # about 200 MB of DataRows


def test_client_that_stops_reading_keeps_parley_memory_bounded(parley, pg):
    p = parley(pool_mode="transaction", default_pool_size=4)
    with p.connect() as conn:
        conn.execute("SELECT 1")
    base = rss_kb(p.pid)
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    stalled.connect((p.host, p.port))
    w = Wire.__new__(Wire)  # a Wire over the socket with the small receive buffer
    w.sock, w.buf, w.closed_by_peer, w.auth_requests = stalled, b"", False, []
    w.sock.settimeout(10)
    try:
        w.login(USER)
        w.send(message(b"Q", BIG_SQL.encode() + b"\0"))
        # PostgreSQL ends up blocked writing to parley (back-pressure), or parley buffered everything.
        def blocked():
            rows = pg.query("SELECT wait_event FROM pg_stat_activity WHERE usename = %s AND query = %s",
                            (USER, BIG_SQL))
            return rows and rows[0][0] == "ClientWrite"
        try:
            wait_until(blocked, 20, interval=0.1, what="PostgreSQL to block writing the result")
        except AssertionError:
            pytest.fail(f"the backend never blocked on ClientWrite; parley RSS {rss_kb(p.pid)} kB (base {base} kB)")
        peak = rss_kb(p.pid)
        # Other clients are served meanwhile.
        for i in range(20):
            with p.connect() as conn:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        time.sleep(1.0)
        peak = max(peak, rss_kb(p.pid))
        grown = peak - base
        print(f"\nparley RSS {base} kB before, {peak} kB with a stalled 200 MB result (+{grown} kB)")
        assert grown < 32 * 1024, f"parley grew by {grown} kB for a client that does not read"
    finally:
        w.close()
    # The stalled client's server is released (closed or reused) and the pool keeps working.
    with p.connect() as conn:
        assert conn.execute("SELECT 'after'").fetchone() == ("after",)
    wait_until(lambda: not pg.query("SELECT 1 FROM pg_stat_activity WHERE usename = %s AND query = %s "
                                    "AND state = 'active'", (USER, BIG_SQL)), 10,
               what="the stalled result's backend to stop")


# ---------------------------------------------------------------------------------------------------------------
# Clients that connect and never send a startup packet


def test_silent_clients_closed_by_client_login_timeout_others_unaffected(parley, target):
    p = parley(client_login_timeout=1, max_client_conn=500)
    silent = []
    try:
        for _ in range(200):
            s = socket.create_connection((p.host, p.port), timeout=5)
            silent.append(s)
        t0 = time.monotonic()
        # Meanwhile other clients log in and query normally.
        for i in range(10):
            with p.connect() as conn:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        # Every silent connection is closed by parley (EOF, possibly after an ErrorResponse).
        open_ = list(silent)
        deadline = time.monotonic() + 15
        while open_ and time.monotonic() < deadline:
            still = []
            for s in open_:
                s.settimeout(0.01)
                try:
                    while True:
                        data = s.recv(4096)
                        if not data:
                            break
                except (socket.timeout, TimeoutError, BlockingIOError):
                    still.append(s)
                except OSError:
                    pass
            open_ = still
            if open_:
                time.sleep(0.1)
        elapsed = time.monotonic() - t0
        print(f"\n{len(silent) - len(open_)} of {len(silent)} silent connections closed after {elapsed:.1f}s")
        assert not open_, f"{len(open_)} silent connections still open {elapsed:.1f}s later"
        with p.connect() as conn:
            assert conn.execute("SELECT 'still fine'").fetchone() == ("still fine",)
        assert p.running()
    finally:
        for s in silent:
            s.close()

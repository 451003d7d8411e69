"""Robustness: malformed or truncated input closes only the offending connection (with ErrorResponse 08P01 where
a reply is possible) while other clients carry on; SSL/GSS encryption requests; unreachable servers; server
connections dying; configuration reloads (valid and broken); signals; the command line (-V, bad config)."""

import os
import random
import re
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

from harness import (CANCEL_REQUEST_CODE, PASSWORDS, PROTOCOL_3, SSL_REQUEST_CODE, Wire, WireError, free_port,
                     startup_packet, wait_until, write_file)

GSSENC_REQUEST_CODE = 80877104
USER = "app_md5"


class BusyClient:
    """A psycopg client running queries in a loop through the pooler, recording any error."""

    def __init__(self, pooler):
        self.pooler = pooler
        self.errors = []
        self.count = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            with self.pooler.connect(user="app_plain") as conn:
                while not self.stop_flag.is_set():
                    i = self.count
                    assert conn.execute("SELECT %s::int", (i,), prepare=False).fetchone() == (i,)
                    self.count += 1
                    time.sleep(0.002)
        except Exception as e:
            self.errors.append(repr(e))

    def check(self):
        """Asserts the loop is still running without errors and made progress."""
        before = self.count
        time.sleep(0.1)
        assert self.errors == [], self.errors
        assert self.count > before, "the concurrent client made no progress"


@pytest.fixture
def busy():
    clients = []

    def start(pooler):
        b = BusyClient(pooler)
        b.thread.start()
        wait = time.monotonic() + 10
        while b.count == 0 and not b.errors and time.monotonic() < wait:
            time.sleep(0.01)
        clients.append(b)
        return b

    yield start
    for b in clients:
        b.stop_flag.set()
        b.thread.join(10)
        assert b.errors == [], f"concurrent client saw errors: {b.errors}"


def qmsg(sql):
    payload = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(payload) + 4) + payload


def garbage_startup_huge_length():
    return struct.pack("!II", 0x7FFFFFFF, PROTOCOL_3) + b"user\0app_md5\0\0"


def garbage_startup_tiny_length():
    return struct.pack("!II", 3, PROTOCOL_3)


def garbage_random_bytes():
    data = bytearray(random.Random(20240229).randbytes(8192))
    data[0] = 0x5A  # as a startup length: ~1.5 GB
    return bytes(data)


def garbage_startup_random_body():
    body = random.Random(7).randbytes(192)  # after a 3.0 version word (any other version is refused as such)
    return struct.pack("!II", 200, PROTOCOL_3) + body


# name -> (needs a logged-in connection first, bytes to send)
MALFORMED = {
    "startup-huge-length": (False, garbage_startup_huge_length),
    "startup-tiny-length": (False, garbage_startup_tiny_length),
    "startup-random-body": (False, garbage_startup_random_body),
    "random-bytes": (False, garbage_random_bytes),
    "query-length-2GB": (True, lambda: b"Q" + struct.pack("!I", 0x80000000) + b"SELECT 1\0"),
    # over PostgreSQL's own limits (1 GB, 10000 bytes for the small messages): it would drop the server
    "query-length-1.5GB": (True, lambda: b"Q" + struct.pack("!I", 0x5FFFFFFF) + b"SELECT 1\0"),
    "execute-length-20000": (True, lambda: b"E" + struct.pack("!I", 20000) + b"\0\0\0\0\0"),
    "query-length-3": (True, lambda: b"Q" + struct.pack("!I", 3) + b"SELECT 1\0"),
    "unknown-message-type": (True, lambda: b"\x01" + struct.pack("!I", 8) + b"abcd"),
    "random-after-login": (True, lambda: b"\x01" + random.Random(99).randbytes(8191)),
    # fixed-length messages with a body: PostgreSQL would answer with an error nobody waits for
    "flush-with-body": (True, lambda: b"H" + struct.pack("!I", 5) + b"E"),
    "sync-with-body": (True, lambda: b"S" + struct.pack("!I", 8) + b"abcd"),
    "copydone-with-body": (True, lambda: b"c" + struct.pack("!I", 6) + b"xy"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_gets_08P01_and_close_while_others_unaffected(parley, busy, target, case):
    p = parley()
    b = busy(p)
    login_first, make = MALFORMED[case]
    with p.wire() as w:
        if login_first:
            w.login(USER)
        w.send(make())
        msgs, closed = w.read_until_closed(timeout=5)
    assert closed, f"{case}: connection still open 5s after malformed input; got {msgs!r}"
    errors = Wire.errors(msgs)
    assert errors, f"{case}: closed without an ErrorResponse; got {msgs!r}"
    assert errors[-1].get("C") == "08P01", errors
    assert errors[-1].get("S") == "FATAL", errors
    b.check()
    with p.connect() as conn:
        assert conn.execute("SELECT 'new client ok'").fetchone() == ("new client ok",)
    assert p.running()


def test_many_random_garbage_connections_do_not_disturb_pooler(parley, busy):
    p = parley()
    b = busy(p)
    rnd = random.Random(4242)
    for i in range(60):
        with p.wire(timeout=5) as w:
            kind = i % 3
            if kind == 0:
                w.send(rnd.randbytes(rnd.randint(1, 3000)))
            elif kind == 1:
                pkt = startup_packet(USER, "parlant")
                w.send(pkt[: rnd.randint(1, len(pkt) - 1)])  # truncated startup, then close
            else:
                w.send(startup_packet(USER, "parlant") + rnd.randbytes(rnd.randint(1, 500)))
    b.check()
    with p.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert p.running()


@pytest.mark.parametrize("stage", ["startup", "auth", "query", "copy"])
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_truncated_message_then_close_leaves_pool_usable(parley, pg, pool_mode, stage):
    """With a single server connection, a client that vanishes in the middle of a message must not wedge it."""
    p = parley(pool_mode=pool_mode, default_pool_size=1)
    with p.connect() as warm:  # the server connection exists and is idle
        warm.execute("SELECT 1")
    with p.wire() as w:
        if stage == "startup":
            w.send(startup_packet(USER, "parlant")[:11])
        elif stage == "auth":
            w.startup(USER, "parlant")
            w.read_message()  # authentication request; the password never comes
            w.send(b"p\x00\x00\x00\x40md5")
        elif stage == "query":
            w.login(USER)
            w.send(b"Q" + struct.pack("!I", 100) + b"SELECT 1")  # 8 of 96 bytes
        else:
            w.login(USER)
            w.send(qmsg("COPY t (id, v) FROM STDIN"))
            assert w.read_message()[0] == b"G"  # CopyInResponse
            w.send(b"d" + struct.pack("!I", 4 + 9) + b"777\tcopy\n")  # CopyData, then vanish mid-COPY
            w.send(b"d" + struct.pack("!I", 100) + b"12")
    t0 = time.monotonic()
    with p.connect() as c:
        assert c.execute("SELECT 'pool still usable'").fetchone() == ("pool still usable",)
        assert c.execute("SELECT count(*) FROM t WHERE id = 777").fetchone() == (0,)
    assert time.monotonic() - t0 < 10, "the next client had to wait for the vanished client's server"
    assert p.running()


@pytest.mark.parametrize("msg", [b"H" + struct.pack("!I", 5) + b"E", b"H" + struct.pack("!I", 8) + b"\0\0\0\0",
                                 b"S" + struct.pack("!I", 5) + b"x"], ids=["flush-5", "flush-8", "sync-5"])
def test_flush_or_sync_with_a_body_is_refused_and_never_reaches_the_server(parley, msg):
    """Forwarded, PostgreSQL answers a Flush with a body with an error and then ignores everything until a Sync: a
    server released after that would swallow its next client's query (found with a pool of one)."""
    p = parley(pool_mode="transaction", default_pool_size=1)
    with p.connect() as warm:
        warm.execute("SELECT 1")
    for _ in range(3):
        with p.wire() as w:
            w.login(USER)
            w.send(msg)
            msgs, closed = w.read_until_closed(timeout=5)
        assert closed, f"connection still open after {msg!r}: {msgs!r}"
        errors = Wire.errors(msgs)
        assert errors and errors[-1].get("C") == "08P01", msgs
        with p.wire(timeout=5) as nxt:  # the pool's one server, after the refused client: answered, not swallowed
            nxt.login(USER)
            assert nxt.data_rows(nxt.query("SELECT 'next client answered'")) == [["next client answered"]]
    assert p.running()


def test_ssl_request_answered_N_then_plain_startup_works(parley):
    p = parley()
    with p.wire() as w:
        w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        assert w.read_bytes(1) == b"N"
        w.login(USER)
        assert w.data_rows(w.query("SELECT 6 * 7")) == [["42"]]
    # libpq's sslmode=prefer takes the same path.
    with psycopg.connect(p.dsn(sslmode="prefer")) as conn:
        assert conn.info.pgconn.ssl_in_use is False
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_gssenc_request_answered_N_then_plain_startup_works(parley):
    p = parley()
    with p.wire(timeout=3) as w:
        w.send(struct.pack("!II", 8, GSSENC_REQUEST_CODE))
        try:
            reply = w.read_bytes(1)
        except (OSError, EOFError):
            reply = None
        assert reply == b"N"  # like PostgreSQL built without GSSAPI
        w.login(USER)
        assert w.data_rows(w.query("SELECT 1")) == [["1"]]
    assert p.running()


def test_a_second_ssl_request_is_refused_as_postgres_does(parley, pg):
    """PostgreSQL answers one SSLRequest, then reads the next packet as a StartupMessage: a second SSLRequest is an
    unsupported protocol version (1234.5679) and the connection ends. parley used to answer 'N' forever."""
    p = parley()
    seen = {}
    for name, ep in (("postgres", pg), ("pooler", p)):
        with Wire(ep.host, ep.port, timeout=5) as w:
            w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
            assert w.read_bytes(1) == b"N"
            w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
            msgs, closed = w.read_until_closed(timeout=5)
        assert closed, f"{name}: connection still open after a second SSLRequest"
        errs = Wire.errors(msgs)
        assert len(errs) == 1, (name, msgs)
        seen[name] = (errs[0].get("C"), errs[0].get("M"))
    assert seen["pooler"] == seen["postgres"] == (
        "0A000", "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0")
    with p.wire(timeout=5) as w:  # each of SSL and GSS encryption is offered once; libpq may ask for both
        w.send(struct.pack("!II", 8, GSSENC_REQUEST_CODE))
        assert w.read_bytes(1) == b"N"
        w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        assert w.read_bytes(1) == b"N"
        w.send(struct.pack("!II", 8, GSSENC_REQUEST_CODE))
        msgs, closed = w.read_until_closed(timeout=5)
        assert closed and [e.get("C") for e in Wire.errors(msgs)] == ["0A000"], msgs
    assert p.running()


def test_newer_protocol_minor_and_protocol_options_get_negotiate_protocol_version(parley, pg):
    """A client asking for protocol 3.2 with a _pq_ option gets the same NegotiateProtocolVersion from parley as
    from PostgreSQL 15 (newest minor 0, the option not recognized), then logs in and runs queries as 3.0."""
    p = parley()
    got = {}
    for name, ep in (("postgres", pg), ("pooler", p)):
        with Wire(ep.host, ep.port, timeout=5) as w:
            w.login(USER, protocol=(3 << 16) | 2, **{"_pq_.parley_test": "on"})
            got[name] = w.negotiate
            assert w.data_rows(w.query("SELECT 6 * 7")) == [["42"]], name
    assert got["postgres"] == struct.pack("!II", 3 << 16, 1) + b"_pq_.parley_test\0"
    assert got["pooler"] == got["postgres"]
    with p.wire(timeout=5) as w:  # 3.0 without options: no NegotiateProtocolVersion
        w.login(USER)
        assert w.negotiate is None


@pytest.mark.parametrize("version", [(2, 0), (1, 5)], ids=["2.0", "1.5"])
def test_protocol_before_3_is_refused_in_its_own_format_as_postgres_does(parley, pg, busy, version):
    """PostgreSQL answers a client asking for protocol 1.x or 2.x with a 2.0-style error ('E', the text, a NUL; no
    length word, no fields), so that an old client can show why it was refused: the bytes must be the same."""
    p = parley()
    b = busy(p)
    seen = {}
    for name, ep in (("postgres", pg), ("pooler", p)):
        with socket.create_connection((ep.host, ep.port), timeout=5) as s:
            s.sendall(startup_packet(USER, "parlant", protocol=version[0] << 16 | version[1]))
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        seen[name] = data
    assert seen["pooler"] == seen["postgres"] == (
        f"EFATAL:  unsupported frontend protocol {version[0]}.{version[1]}: server supports 3.0 to 3.0\n\0".encode())
    b.check()


@pytest.mark.parametrize("version", [(4, 0), (0x1234, 0x5678)], ids=["4.0", "garbage"])
def test_unsupported_protocol_version_is_refused_as_postgres_does(parley, pg, busy, version):
    p = parley()
    b = busy(p)
    seen = {}
    for name, ep in (("postgres", pg), ("pooler", p)):
        with Wire(ep.host, ep.port, timeout=5) as w:
            w.send(startup_packet(USER, "parlant", protocol=version[0] << 16 | version[1]))
            msgs, closed = w.read_until_closed(timeout=5)
        assert closed, name
        errs = Wire.errors(msgs)
        assert len(errs) == 1, (name, msgs)
        seen[name] = (errs[0].get("S"), errs[0].get("C"), errs[0].get("M"))
    assert seen["pooler"] == seen["postgres"] == (
        "FATAL", "0A000", f"unsupported frontend protocol {version[0]}.{version[1]}: server supports 3.0 to 3.0")
    b.check()


def test_cancel_request_with_unknown_key_is_ignored(parley, busy):
    p = parley()
    b = busy(p)
    with p.wire() as w:
        w.send(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, 12345, 67890))
        msgs, closed = w.read_until_closed(timeout=5)
    assert closed and msgs == []
    b.check()


def test_unreachable_server_gives_client_clear_error_quickly(parley, busy, target):
    dead_port = free_port()  # nothing listens there
    p = parley(server_connect_timeout=2, query_wait_timeout=2, server_login_retry=1,
               databases_extra=[f"deaddb = host=127.0.0.1 port={dead_port} dbname=parlant"])
    b = busy(p)
    for attempt in range(2):
        t0 = time.monotonic()
        err = None
        with Wire(p.host, p.port, timeout=15) as w:
            try:
                w.login(USER, database="deaddb")
                w.send(qmsg("SELECT 1"))
                msgs, closed = w.read_until_closed(timeout=12)
                errs = Wire.errors(msgs)
                assert errs, f"no error for a query on an unreachable server: {msgs!r}"
                err = errs[0]
            except WireError as e:
                err = e.fields
        elapsed = time.monotonic() - t0
        assert err.get("M"), err
        assert elapsed < 8, f"error took {elapsed:.1f}s (server_connect_timeout=2, query_wait_timeout=2)"
        if target == "parley":
            assert err.get("C", "").startswith("08"), err
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(p.dsn(dbname="deaddb", connect_timeout=10))
    b.check()


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_server_connection_killed_then_pool_recovers(parley, pg, pool_mode):
    p = parley(pool_mode=pool_mode, default_pool_size=2)
    with p.connect() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert pg.scalar("SELECT pg_terminate_backend(%s)", (pid,)) is True
        time.sleep(0.2)
        if pool_mode == "session":
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        else:
            # Transaction mode: the dead idle server is dropped; this query may get an error or a new server.
            try:
                conn.execute("SELECT 1")
            except psycopg.OperationalError:
                pass
    with p.connect() as conn:
        new_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert new_pid != pid
        assert conn.execute("SELECT 'recovered'").fetchone() == ("recovered",)


def wait_log(p, pattern, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, p.log_text()):
            return True
        time.sleep(0.05)
    return False


def test_reload_with_an_emptied_config_file_keeps_old_config(parley, busy):
    """A truncated save leaves an empty file: loading it would mean defaults and no database at all."""
    p = parley()
    b = busy(p)
    p.write_raw_config("")
    p.reload()
    assert wait_log(p, r"no section at all"), p.log_text()
    with p.connect() as conn:
        assert conn.execute("SELECT 'old config works'").fetchone() == ("old config works",)
    b.check()
    assert p.running()


def test_reload_with_broken_config_keeps_old_config(parley, busy):
    p = parley()
    b = busy(p)
    good = p.config_text()
    broken_line = good.count("\n") + 2  # the blank line, then the garbage line
    p.write_raw_config(good + "\nthis line is not valid ini\n[pgbouncer\n")
    log_before = p.log_text()
    p.reload()
    assert wait_log(p, r"(?i)(error|invalid|syntax|fail)") and p.log_text() != log_before, \
        f"no error logged for the broken config:\n{p.log_text()}"
    time.sleep(0.3)
    assert p.running()
    with p.connect() as conn:
        assert conn.execute("SELECT 'old config works'").fetchone() == ("old config works",)
    b.check()
    assert f"parley.ini:{broken_line}" in p.log_text(), \
        f"expected the file:line of the error (parley.ini:{broken_line}) in the log:\n{p.log_text()}"
    # Fixing the file and reloading again works.
    p.write_raw_config(good)
    p.reload()
    time.sleep(0.3)
    with p.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_reload_with_valid_change_adds_database(parley, pg, busy):
    p = parley()
    b = busy(p)
    with pytest.raises(psycopg.OperationalError, match="no such database"):
        psycopg.connect(p.dsn(dbname="parlant2"))
    p.write_config(databases_extra=[f"parlant2 = host={pg.host} port={pg.port} dbname=parlant"])
    p.reload()
    deadline = time.monotonic() + 5
    while True:
        try:
            with psycopg.connect(p.dsn(dbname="parlant2")) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("parlant",)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    b.check()


def test_sigint_exits_cleanly_when_idle(parley):
    p = parley()
    with p.connect() as conn:
        conn.execute("SELECT 1")
    p.signal(signal.SIGINT)
    rc = p.wait_exit(5)
    assert rc == 0, f"exit status {rc} after SIGINT:\n{p.log_text()}"


def test_sigint_lets_running_query_finish(parley):
    p = parley()
    result = {}
    with p.connect() as conn:
        def run():
            try:
                result["row"] = conn.execute("SELECT 'finished' FROM pg_sleep(1)").fetchone()
            except Exception as e:
                result["error"] = repr(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(0.3)
        p.signal(signal.SIGINT)
        t.join(10)
    assert result.get("row") == ("finished",), result
    rc = p.wait_exit(10)
    assert rc == 0, f"exit status {rc} after SIGINT:\n{p.log_text()}"


def test_sigterm_waits_for_clients_then_exits(parley, target):
    p = parley()
    conn = p.connect()
    conn.execute("SELECT 1")
    p.signal(signal.SIGTERM)
    if target == "parley":  # PgBouncer 1.18's SIGTERM is an immediate shutdown; parley's waits for clients
        time.sleep(1.0)
        assert p.running(), "SIGTERM should wait for connected clients"
        assert conn.execute("SELECT 'still served'").fetchone() == ("still served",)
        conn.close()
        rc = p.wait_exit(10)
        assert rc == 0, f"exit status {rc} after SIGTERM once clients left:\n{p.log_text()}"
    else:
        assert p.wait_exit(10) is not None
        conn.close()


def test_sigquit_exits_immediately_despite_clients(parley, target):
    p = parley()
    conn = p.connect()
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    t0 = time.monotonic()
    p.signal(signal.SIGQUIT)
    rc = p.wait_exit(5)
    assert rc is not None, "SIGQUIT should exit at once"
    assert time.monotonic() - t0 < 5
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    if target == "parley":
        assert rc == 0, f"exit status {rc} after SIGQUIT"


def test_version_flag_prints_version(target):
    r = target.run(["-V"], cwd="/")
    assert r.rc == 0, r
    assert re.search(r"\d+\.\d+", r.out), r
    if target == "parley":
        assert "parley" in r.out.lower(), r


def test_bad_config_file_exits_nonzero_with_file_and_line(target, parley):
    p = parley(start=False)
    bad = os.path.join(p.workdir, "bad.ini")
    write_file(bad, f"[pgbouncer]\nlisten_port = {p.port}\nthis line is not valid\n")
    r = target.run([bad], cwd=p.workdir)
    assert r.rc != 0, r
    assert "bad.ini:3" in r.err, r


def test_missing_config_file_exits_nonzero(target, parley):
    p = parley(start=False)
    missing = os.path.join(p.workdir, "missing.ini")
    r = target.run([missing], cwd=p.workdir)
    assert r.rc != 0, r
    assert "missing.ini" in r.err, r


def test_auth_file_reloaded_on_sighup(parley):
    p = parley(userlist_extra={"app_trust": None})  # app_trust starts missing from the auth_file
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(p.dsn(user="app_trust"))
    p.userlist_extra["app_trust"] = PASSWORDS["app_trust"]
    p.write_userlist()
    p.reload()
    deadline = time.monotonic() + 5
    while True:
        try:
            with psycopg.connect(p.dsn(user="app_trust")) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("app_trust",)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_file_descriptors_pauses_accepting_instead_of_spinning(parley):
    """accept() failing with EMFILE leaves the connection queued and the listener readable: parley must stop
    watching it for a while (not spin at full CPU writing a warning per attempt), and serve again once descriptors
    are free."""
    import resource
    import socket
    p = parley(start=False, max_client_conn=1000)
    p.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)))
    assert "open files limit (ulimit -n) is 40" in p.log_text()  # the startup warning
    socks = []
    try:
        for _ in range(80):
            s = socket.create_connection((p.host, p.port), timeout=5)
            socks.append(s)
        time.sleep(0.5)
        cpu0 = _cpu_seconds(p.pid)
        time.sleep(3)
        cpu = _cpu_seconds(p.pid) - cpu0
        failures = p.log_text().count("accept() failed")
        assert 1 <= failures <= 8, f"{failures} accept() warnings in about 3.5 s"
        assert "Too many open files" in p.log_text()
        assert cpu < 1.0, f"parley used {cpu:.2f} s of CPU in 3 s while out of file descriptors"
    finally:
        for s in socks:
            s.close()
    def answered():
        try:
            with p.connect() as conn:
                return conn.execute("SELECT 'accepting again'").fetchone()
        except psycopg.OperationalError:
            return None
    assert wait_until(answered, 15, interval=0.2, what="a new client after the descriptors were freed") == \
        ("accepting again",)
    assert p.running()


@pytest.mark.parametrize("params", [{"TimeZone": "Mars/Olympus"}, {"DateStyle": "nonsense"}],
                         ids=["timezone", "datestyle"])
def test_a_startup_parameter_postgres_refuses_gets_postgres_own_error(parley, busy, params):
    """parley accepts the startup parameters and sets them on each server the client gets: when PostgreSQL refuses a
    value, the client gets PostgreSQL's SQLSTATE and message (22023 invalid_parameter_value), not a protocol error."""
    p = parley(pool_mode="transaction")
    b = busy(p)
    with p.wire() as w:
        try:  # refused at login, or (as now) when the first query needs a server
            w.login(USER, **params)
            w.send(qmsg("SELECT 1"))
            msgs, closed = w.read_until_closed(timeout=5)
            assert closed, msgs
            err = (Wire.errors(msgs) or [None])[-1]
        except WireError as e:
            err = e.fields
    assert err is not None
    assert err.get("C") == "22023", err
    name = next(iter(params))
    assert name.lower() in err.get("M", "").lower(), err
    b.check()
    assert p.running()

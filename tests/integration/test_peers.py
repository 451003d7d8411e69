"""test_peers.py — several parley processes on one port (so_reuseport = 1, peer_id, [peers]): connections spread over them, cancel requests reach the owning process wherever the kernel hands them, rolling restart."""

import os
import signal
import socket
import struct
import threading
import time

import psycopg
import pytest

import harness
from harness import CANCEL_REQUEST_CODE, Wire

USER = "app_md5"


@pytest.fixture(autouse=True)
def parley_only(target):
    if target != "parley":
        pytest.skip("peering (peer_id / [peers]) is newer than the PgBouncer the suite compares against")


class UnixWire(Wire):
    """harness.Wire over one process's own unix socket (the shared TCP port reaches whichever process the kernel
    picks)."""

    def __init__(self, pooler, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(sock_path(pooler))
        self.buf = b""
        self.closed_by_peer = False
        self.auth_requests = []


def sock_path(p):
    return os.path.join(p.workdir, f".s.PGSQL.{p.port}")


def peer_of(backend_pid):
    """The peer id a BackendKeyData process id carries (PgBouncer's layout: bytes 1 and 2 on the wire)."""
    b = struct.pack("!I", backend_pid & 0xffffffff)
    return b[1] | (b[2] << 8)


def peers_section(procs, ids, skip=()):
    lines = ["[peers]"]
    for p, i in zip(procs, ids):
        if i not in skip:
            lines.append(f"{i} = host={p.workdir} port={p.port}")
    return "\n".join(lines)


def start_group(parley, n, peering=True, **settings):
    """n parley processes with so_reuseport = 1 on one TCP port, each with its own unix_socket_dir (its workdir);
    with peering, peer ids 1..n and a [peers] section listing all of them (its own entry included, as PgBouncer
    allows)."""
    port = harness.free_port()
    procs = []
    for i in range(n):
        extra = dict(settings)
        if peering:
            extra["peer_id"] = i + 1
        p = parley(start=False, so_reuseport=1, listen_port=port, **extra)
        p.port = port
        procs.append(p)
    for p in procs:
        p.write_config(extra_config=peers_section(procs, range(1, n + 1)) if peering else "")
    for p in procs:
        p.start()
        harness.wait_until(lambda: os.path.exists(sock_path(p)) and p.running(), 10,
                           what=f"unix socket of pid {p.pid}")
        assert p.running(), p.log_text()
    return procs


def login(p):
    """A logged-in UnixWire to process p and its (pid, key) from BackendKeyData."""
    w = UnixWire(p)
    msgs = w.login(USER)
    keys = [struct.unpack("!II", payload) for t, payload in msgs if t == b"K"]
    assert len(keys) == 1, msgs
    return w, keys[0]


def send_cancel(p, pid, key):
    """A CancelRequest to process p over its unix socket; waits until p closes the connection."""
    w = UnixWire(p, timeout=5)
    try:
        w.send(struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid, key))
        msgs, closed = w.read_until_closed(timeout=5)
        assert closed and msgs == [], msgs
    finally:
        w.close()


def wait_sleepers(pg, marker, n):
    harness.wait_until(lambda: pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                         "AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",)) >= n,
                       10, what=f"{n} running {marker} queries")


def start_sleep(w, marker):
    w.send(harness.message(b"Q", f"SELECT pg_sleep(30) /* {marker} */".encode() + b"\0"))


def outcome(w, timeout):
    """The SQLSTATE of the error that ends the running query (None if it succeeded), or 'timeout' when nothing
    arrived within timeout seconds."""
    w.sock.settimeout(timeout)
    code = None
    try:
        while True:
            t, payload = w.read_message()
            if t == b"E":
                code = harness.parse_error_fields(payload).get("C")
            if t == b"Z":
                return code
    except (socket.timeout, TimeoutError):
        return "timeout"


def show_clients(p):
    """SHOW CLIENTS rows of process p's own admin console (over its unix socket)."""
    return show(p, "SHOW CLIENTS")


def show(p, command):
    """The rows of a SHOW command on process p's own admin console (over its unix socket), as dicts."""
    w = UnixWire(p)
    try:
        w.login("postgres", database="pgbouncer")
        msgs = w.query(command)
        assert not Wire.errors(msgs), msgs
        return Wire.row_dicts(msgs)
    finally:
        w.close()


def app_clients(p):
    return sum(1 for r in show_clients(p) if r["user"] == USER and r["database"] == "parlant")


def test_each_process_puts_its_peer_id_in_cancel_keys_and_peers_forward_misrouted_cancels(parley, pg):
    procs = start_group(parley, 3)
    marker = "peers-forward"
    # SHOW LISTS counts the [peers] entries (this process's own included, as written in the file)
    assert {r["list"]: r["items"] for r in show(procs[0], "SHOW LISTS")}["peers"] == "3"
    for i, owner in enumerate(procs):
        other = procs[(i + 1) % 3]
        w, (pid, key) = login(owner)
        try:
            assert peer_of(pid) == i + 1, hex(pid)
            assert key & 3 == 3, hex(key)            # TTL bits: may be forwarded
            start_sleep(w, marker)
            wait_sleepers(pg, marker, 1)
            t0 = time.monotonic()
            send_cancel(other, pid, key)             # lands on the wrong process: it forwards to the owner
            assert outcome(w, 3) == "57014"
            assert time.monotonic() - t0 < 2
            # the connection (and its server) goes on normally
            assert Wire.data_rows(w.query("SELECT 'after'")) == [["after"]]
        finally:
            w.close()


def test_psycopg_cancels_over_the_shared_port_all_arrive(parley, pg):
    procs = start_group(parley, 3)
    conns = [psycopg.connect(procs[0].dsn(USER), autocommit=True) for _ in range(12)]
    try:
        # the kernel spread the connections: each process's SHOW CLIENTS agrees with the peer ids in the keys
        by_key = {i + 1: 0 for i in range(3)}
        for c in conns:
            by_key[peer_of(c.info.backend_pid)] += 1
        by_console = {i + 1: app_clients(p) for i, p in enumerate(procs)}
        assert by_console == by_key
        assert sum(1 for n in by_console.values() if n > 0) > 1, by_console

        sleepers = conns[:6]
        marker = "peers-psycopg"
        results = {}

        def run(i, c):
            try:
                c.execute(f"SELECT pg_sleep(30) /* {marker} */")
                results[i] = ("finished", time.monotonic())
            except psycopg.Error as e:
                results[i] = (e.sqlstate, time.monotonic())

        threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(sleepers)]
        for t in threads:
            t.start()
        wait_sleepers(pg, marker, len(sleepers))
        sent = {}
        for i, c in enumerate(sleepers):
            sent[i] = time.monotonic()
            c.cancel()                               # a new TCP connection to the shared port: any process
        for t in threads:
            t.join(5)
        assert sorted(results) == list(range(len(sleepers))), results
        for i, (state, at) in results.items():
            assert state == "57014", (i, state)
            assert at - sent[i] < 2, (i, at - sent[i])
        for c in sleepers:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        for c in conns:
            c.close()


def test_without_peers_a_misrouted_cancel_is_dropped(parley, pg):
    a, b = start_group(parley, 2, peering=False)
    marker = "peers-none"
    w, (pid, key) = login(a)
    try:
        start_sleep(w, marker)
        wait_sleepers(pg, marker, 1)
        send_cancel(b, pid, key)
        assert outcome(w, 1.0) == "timeout"          # b does not know the key and has nowhere to send it
        send_cancel(a, pid, key)
        assert outcome(w, 3) == "57014"
    finally:
        w.close()


def test_a_forwarded_cancel_is_never_forwarded_again(parley, pg):
    a, b = start_group(parley, 2)
    marker = "peers-ttl"
    w, (pid, key) = login(a)
    try:
        start_sleep(w, marker)
        wait_sleepers(pg, marker, 1)
        forwarded = key - 1                          # what a peer sends on: one TTL step used
        send_cancel(b, pid, forwarded)
        assert outcome(w, 1.0) == "timeout"
        harness.wait_until(lambda: "already forwarded by a peer and is not forwarded again"
                           in harness.read_text(b.log_path), 5, what="b's log line")
        send_cancel(a, pid, forwarded)               # the owner itself accepts a forwarded key
        assert outcome(w, 3) == "57014"
    finally:
        w.close()


def test_reload_applies_peers_changes_and_keeps_them_on_a_bad_file(parley, pg):
    a, b = start_group(parley, 2)
    good = peers_section([a, b], [1, 2])
    b.write_config(extra_config=peers_section([a, b], [1, 2], skip=(1,)))
    b.reload()
    harness.wait_until(lambda: harness.read_text(b.log_path).count("configuration reloaded") >= 1, 5,
                       what="b's first reload")
    marker = "peers-reload"
    w, (pid, key) = login(a)
    try:
        start_sleep(w, marker)
        wait_sleepers(pg, marker, 1)
        send_cancel(b, pid, key)
        assert outcome(w, 1.0) == "timeout"          # b has no [peers] entry 1 now
        assert "[peers] has no entry 1" in harness.read_text(b.log_path)

        # a broken [peers] line: the reload fails naming FILE:LINE and the running configuration stays
        b.write_config(extra_config=good + "\nfoo = host=/tmp")
        b.reload()
        harness.wait_until(lambda: "reload failed" in harness.read_text(b.log_path), 5, what="b's failed reload")
        log = harness.read_text(b.log_path)
        assert f"{b.config_path}:" in log and '[peers]: "foo" is not a peer id' in log, log

        b.write_config(extra_config=good)
        b.reload()
        harness.wait_until(lambda: harness.read_text(b.log_path).count("configuration reloaded") >= 2, 5,
                           what="b's second reload")
        send_cancel(b, pid, key)
        assert outcome(w, 3) == "57014"
        assert b.running()
    finally:
        w.close()


@pytest.mark.parametrize("entry, expect", [
    ("0 = host=/tmp", '[peers]: "0" is not a peer id (an integer between 1 and 16383, as peer_id)'),
    ("2 = port=6432", "peer 2: host is required"),
    ("2 = host=/tmp sslmode=require", 'peer 2: unknown parameter "sslmode" (expected host, port or pool_size)'),
])
def test_bad_peers_entry_refuses_to_start_naming_the_line(parley, target, entry, expect):
    p = parley(start=False, peer_id=1, extra_config="[peers]\n" + entry)
    lines = p.config_text().split("\n")
    line = lines.index(entry) + 1
    r = target.run([p.config_path], cwd=p.workdir, timeout=10)
    assert r.rc != 0, r
    assert f"{p.config_path}:{line}: {expect}" in r.err + harness.read_text(p.log_path), r


def test_processes_sharing_a_unix_socket_dir_are_refused(parley, target):
    a, = start_group(parley, 1, peering=False)
    b = parley(start=False, so_reuseport=1, listen_port=a.port, unix_socket_dir=a.workdir)
    r = target.run([b.config_path], cwd=b.workdir, timeout=10)
    assert r.rc != 0, r
    assert "is in use by another process" in r.err + harness.read_text(b.log_path), r
    assert a.running() and os.path.exists(sock_path(a))   # a's socket was left alone
    with UnixWire(a) as w:
        w.login(USER)


def test_rolling_restart_the_others_keep_accepting(parley, pg):
    procs = start_group(parley, 3)
    a = procs[0]
    # a query running on a when it is told to stop finishes normally (SIGINT waits for running queries)
    w, _ = login(a)
    marker = "peers-rolling"
    w.send(harness.message(b"Q", f"SELECT pg_sleep(1.5) /* {marker} */".encode() + b"\0"))
    wait_sleepers(pg, marker, 1)
    a.signal(signal.SIGINT)
    # a closes its TCP listener, then removes its unix socket
    harness.wait_until(lambda: not os.path.exists(sock_path(a)), 5, what="a to stop listening")
    assert a.running()                               # still finishing its running query
    # a closed its listeners: every new connection to the shared port is taken by one of the others
    for _ in range(20):
        with psycopg.connect(a.dsn(USER), autocommit=True) as c:
            assert peer_of(c.info.backend_pid) in (2, 3)
            assert c.execute("SELECT 1").fetchone() == (1,)
    try:
        assert outcome(w, 5) is None                 # the sleep completed, no error
    finally:
        w.close()
    assert a.wait_exit(5) == 0, a.log_text()
    # a comes back with the same configuration and takes its share again
    a.start()
    harness.wait_until(lambda: os.path.exists(sock_path(a)), 5, what="a's unix socket")
    seen = set()
    conns = []
    try:
        for _ in range(30):
            c = psycopg.connect(a.dsn(USER), autocommit=True)
            conns.append(c)
            seen.add(peer_of(c.info.backend_pid))
            if 1 in seen:
                break
        assert 1 in seen, seen
    finally:
        for c in conns:
            c.close()

"""Load: 2000 concurrent pgbench clients on a pool of 20 in transaction mode (zero errors, every client served), and
parley's memory per idle logged-in client, measured beside Debian's PgBouncer the same way and printed."""

import glob
import os
import resource
import time

import pytest

import harness
from harness import PGBOUNCER, Pooler, Target, Wire

CLIENTS = 2000
POOL_SIZE = 20
DURATION = 15          # seconds of pgbench -T
IDLE_CLIENTS = 1000    # logged-in idle clients for the memory measurement


@pytest.fixture(autouse=True)
def enough_fds():
    """Raises this process's open-file limit (inherited by pgbench and the poolers) for thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < CLIENTS * 2 + 200:
        pytest.fail(f"open-file limit {want} is too low for {CLIENTS} clients (raise the hard limit: ulimit -Hn)")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def test_2000_clients_on_pool_of_20_transaction_mode_zero_errors_all_served(parley, tmp_path):
    p = parley(pool_mode="transaction", default_pool_size=POOL_SIZE, max_client_conn=CLIENTS + 100,
               query_wait_timeout=60, log_connections=0, log_disconnections=0)
    script = tmp_path / "select.sql"
    script.write_text("\\set n random(1, 1000000)\nSELECT :n::int;\n")
    logdir = harness.make_owned_dir(str(tmp_path), "pgbench-log-")
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(script), 0o644)
    prefix = os.path.join(logdir, "tx")
    t0 = time.monotonic()
    r = harness.pgbench(p, ["-n", "-c", CLIENTS, "-j", 2, "-T", DURATION, "-f", str(script),
                            "--log", "--log-prefix", prefix], timeout=DURATION + 90)
    elapsed = time.monotonic() - t0
    print(f"\npgbench -c {CLIENTS} -j 2 -T {DURATION} through parley (pool {POOL_SIZE}), {elapsed:.1f}s:\n{r.out}")
    assert r.rc == 0, r
    assert "number of clients: %d" % CLIENTS in r.out, r
    processed = int(r.out.split("number of transactions actually processed:")[1].split()[0].split("/")[0])
    assert processed >= CLIENTS, r
    if "number of failed transactions:" in r.out:
        assert int(r.out.split("number of failed transactions:")[1].split()[0]) == 0, r
    assert "error" not in r.err.lower(), r
    # Every client ran at least one transaction: the per-transaction log names the client in its first field.
    served = set()
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                served.add(int(line.split(" ", 1)[0]))
    assert len(served) == CLIENTS, f"only {len(served)} of {CLIENTS} clients ran a transaction"
    # PostgreSQL never saw more than the pool.
    assert p.pg.backend_count("app_md5") <= POOL_SIZE
    assert p.running()


def idle_client_memory(pooler, n):
    """(RSS in kB with no clients, RSS with n idle logged-in clients) of pooler's process."""
    with pooler.connect() as conn:  # warm up: the pool, its server connection and the auth path exist
        conn.execute("SELECT 1")
    time.sleep(0.3)
    before = rss_kb(pooler.pid)
    clients = []
    try:
        for _ in range(n):
            w = Wire(pooler.host, pooler.port, timeout=30)
            clients.append(w)
            w.login("app_md5")
        with clients[-1] as last:  # all are served: the last one can query
            assert last.data_rows(last.query("SELECT 1")) == [["1"]]
        clients.pop()
        time.sleep(0.5)
        after = rss_kb(pooler.pid)
    finally:
        for w in clients:
            w.close()
    return before, after


def test_memory_per_idle_client_parley_and_pgbouncer(parley, pg, target, tmp_base):
    settings = dict(pool_mode="transaction", default_pool_size=POOL_SIZE, max_client_conn=IDLE_CLIENTS + 100,
                    log_connections=0, log_disconnections=0)
    figures = {}
    p = parley(**settings)
    before, after = idle_client_memory(p, IDLE_CLIENTS)
    figures[target.name] = (before, after)
    if target == "parley" and os.access(PGBOUNCER, os.X_OK):
        bt = Target()
        bt.name, bt.binary, bt.as_pg = "pgbouncer", PGBOUNCER, harness.IS_ROOT
        b = Pooler(bt, pg, harness.make_owned_dir(tmp_base, "pgbouncer-mem-"), settings)
        b.start()
        try:
            figures["pgbouncer"] = idle_client_memory(b, IDLE_CLIENTS)
        finally:
            b.stop()
    elif target == "parley":
        print(f"\n{PGBOUNCER} is not installed: no PgBouncer figure")
    print()
    for name, (b0, b1) in figures.items():
        print(f"{name}: RSS {b0} kB idle, {b1} kB with {IDLE_CLIENTS} idle logged-in clients: "
              f"{(b1 - b0) * 1024 / IDLE_CLIENTS:.0f} bytes per client")
    b0, b1 = figures[target.name]
    per_client = (b1 - b0) * 1024 / IDLE_CLIENTS
    assert per_client < 64 * 1024, f"{target.name} uses {per_client:.0f} bytes per idle client"

"""conftest.py — fixtures of parley's integration tests (see harness.py for the helpers behind them).

  target   which pooler runs: parley ($PARLEY_BIN) or PgBouncer (PARLEY_TEST_TARGET=pgbouncer); compares equal
           to "parley" / "pgbouncer". Assertions that only parley must satisfy are guarded by `target == "parley"`.
  pg       a throwaway PostgreSQL 15 for the whole session (roles app_md5, app_scram, app_plain, app_trust,
           postgres; database parlant with table t and the Parlant schema when contrib/parlant/schema.sql exists)
  pgbench_tables   pgbench -i -s 1 run once, directly against PostgreSQL, into database parlant
  parley   factory: parley(**settings) starts a pooler (config section [pgbouncer]) and returns a harness.Pooler;
           every pooler is stopped by pid at teardown, and the test fails if one crashed (fatal signal, sanitizer
           report) or exited without being told to.
"""

import os
import shutil
import signal

import pytest

import harness
from harness import Pooler, Target


def pytest_report_header(config):
    t = Target()
    return [f"parley integration tests: target={t.name} binary={t.binary} run_as_postgres={t.as_pg}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Per-test time limit (PARLEY_TEST_TIMEOUT seconds, default 120): a hung pooler must fail a test, not hang
    `make check`. SIGALRM interrupts the main thread's blocking socket calls."""
    limit = int(os.environ.get("PARLEY_TEST_TIMEOUT", "120"))

    def on_alarm(signum, frame):
        raise TimeoutError(f"test ran longer than {limit}s (PARLEY_TEST_TIMEOUT)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _keep():
    return os.environ.get("PARLEY_TEST_KEEP", "") not in ("", "0")


@pytest.fixture(scope="session")
def target():
    t = Target()
    t.check_binary()
    return t


@pytest.fixture(scope="session")
def tmp_base():
    d = harness.make_owned_dir()
    yield d
    if _keep():
        print(f"\nPARLEY_TEST_KEEP: kept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg(tmp_base):
    with harness.running_pg(tmp_base, "pg-") as server:
        yield server


@pytest.fixture(scope="session")
def pgbench_tables(pg):
    """pgbench's TPC-B tables (scale 1) in database parlant, created directly against PostgreSQL."""
    r = harness.pgbench(pg, ["-i", "-s", "1", "-q"], user="postgres")
    assert r.rc == 0, r
    return pg


@pytest.fixture
def parley(request, target, pg, tmp_base):
    """Factory: parley(start=True, parlant_params="", databases_extra=[], users_extra=[], userlist_extra={},
    **settings) -> harness.Pooler. settings are [pgbouncer] keys (None removes a default one)."""
    poolers = []

    def factory(start=True, parlant_params="", databases_extra=(), users_extra=(), userlist_extra=None,
                **settings):
        workdir = harness.make_owned_dir(tmp_base, f"{request.node.name[:40]}-".replace("/", "_"))
        p = Pooler(target, pg, workdir, settings, parlant_params=parlant_params, databases_extra=databases_extra,
                   users_extra=users_extra, userlist_extra=userlist_extra)
        poolers.append(p)
        if start:
            p.start()
        return p

    yield factory

    problems = []
    for p in poolers:
        if p.proc is None:
            continue
        p.stop()
        for what in p.problems():
            problems.append(f"{what} (pid {p.pid}, port {p.port})")
    failed = any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                 for w in ("setup", "call"))
    if failed or problems:
        for p in poolers:
            if p.proc is not None:
                print(f"\n----- {target.name} pid {p.pid} port {p.port} exit status {p.proc.returncode} -----")
                print(p.log_text()[-20000:])
    if not _keep():
        for p in poolers:
            shutil.rmtree(p.workdir, ignore_errors=True)
    if problems:
        pytest.fail("pooler crashed or misbehaved: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def psql():
    """harness.psql(endpoint, sql, user=..., dbname=..., password=..., args=()) -> Result(rc, out, err)."""
    return harness.psql


@pytest.fixture
def pgbench():
    """harness.pgbench(endpoint, args, user=..., dbname=..., password=...) -> Result(rc, out, err)."""
    return harness.pgbench

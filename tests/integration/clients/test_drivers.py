"""test_drivers.py — the Parlant hot lookups, a write and the lookups again through real drivers (psycopg 3, asyncpg,
node-postgres with drizzle-orm, postgres.js, pgjdbc): straight against PostgreSQL, through parley in transaction
mode with the cache off, and with the cache on; the three outputs must be identical.

Each driver has a small program in this directory (python/, node/, java/) that prints one JSON line per lookup
(see python/common.py for the lookups and the write). Before each run the data set drivers_data.sql is loaded
again directly in PostgreSQL, so the three runs start from the same rows. A missing driver package fails the test
with the Debian or npm package to install (scripts/install-deps.sh installs the Debian ones; the npm ones come from
node/package-lock.json through `npm ci`).
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import harness
from harness import PASSWORDS, Wire, console_rows

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_SQL = os.path.join(HERE, "drivers_data.sql")
NODE_DIR = os.path.join(HERE, "node")
JAVA_SRC = os.path.join(HERE, "java", "ParlantLookups.java")
PGJDBC_JAR = "/usr/share/java/postgresql.jar"
USER = "app_md5"
RUN_TIMEOUT = 40  # seconds one driver program may take for one run

# The Parlant cache policy of etc/parlant.ini, plus the session and event tables so that every lookup here is cached.
CACHE_POLICY = """
[cache]
parlant_agent = 300
parlant_tool = 600
parlant_agent_tool = 600
parlant_session = 60
parlant_event = 60
parlant_journey = 600
parlant_journey_state = 600
parlant_journey_transition = 600
"""


def fail_missing(package, what):
    pytest.fail(f"{what} is not available: install the Debian package {package} (scripts/install-deps.sh does)",
                pytrace=False)


# ---------------------------------------------------------------------------------------------------------------
# Preparing the drivers (once per module)


def npm_ci(workdir):
    """npm ci into workdir/node_modules from the committed package-lock.json, unless node_modules already holds
    exactly that lock (a stamp file records its hash)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            fail_missing("nodejs", f"{tool} (Node.js 18 or later)")
    with open(os.path.join(workdir, "package-lock.json"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(workdir, "node_modules", ".parley-lock-sha256")
    if os.path.exists(stamp) and harness.read_text(stamp).strip() == digest:
        return
    p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=workdir,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"npm ci in {workdir} failed ({p.returncode}):\n{p.stdout.decode()}\n{p.stderr.decode()}",
                    pytrace=False)
    with open(stamp, "w") as f:
        f.write(digest + "\n")


@pytest.fixture(scope="module")
def node_dir(tmp_base):
    """The directory holding the Node programs and their node_modules: node/ itself when writable (node_modules
    is git-ignored), else a copy in the test's temporary directory (a read-only source tree, as in distcheck)."""
    workdir = NODE_DIR
    if not os.access(workdir, os.W_OK):
        workdir = os.path.join(tmp_base, "node-clients")
        shutil.copytree(NODE_DIR, workdir, ignore=shutil.ignore_patterns("node_modules"), dirs_exist_ok=True)
    npm_ci(workdir)
    return workdir


@pytest.fixture(scope="module")
def java_classes(tmp_base):
    """ParlantLookups.java compiled with javac against Debian's pgjdbc; returns the classpath to run it with."""
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            fail_missing("openjdk-17-jdk-headless", tool)
    if not os.path.exists(PGJDBC_JAR):
        fail_missing("libpostgresql-jdbc-java", f"pgjdbc ({PGJDBC_JAR})")
    out = os.path.join(tmp_base, "java-classes")
    os.makedirs(out, exist_ok=True)
    p = subprocess.run(["javac", "-encoding", "UTF-8", "-cp", PGJDBC_JAR, "-d", out, JAVA_SRC],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert p.returncode == 0, f"javac failed:\n{p.stdout.decode()}\n{p.stderr.decode()}"
    return f"{out}:{PGJDBC_JAR}"


def python_driver(module, package):
    if importlib.util.find_spec(module) is None:
        fail_missing(package, f"Python module {module} (under {sys.executable})")


def jar_version(jar):
    """pgjdbc's version from the jar's file name (Debian's postgresql.jar links to postgresql-<version>.jar)."""
    name = os.path.basename(os.path.realpath(jar))
    return name[len("postgresql-"):-len(".jar")] if name.startswith("postgresql-") else name


def node_package_version(workdir, name):
    """The version npm ci installed of package name."""
    with open(os.path.join(workdir, "node_modules", name, "package.json")) as f:
        return json.load(f)["version"]


# ---------------------------------------------------------------------------------------------------------------
# Running a driver program three ways


def load_data(pg):
    """(Re)loads drivers_data.sql directly in PostgreSQL: the same starting rows for every run."""
    r = harness.psql(pg, None, user="postgres", args=["-q", "-f", DATA_SQL])
    assert r.rc == 0, f"loading {DATA_SQL} failed: {r}"


@pytest.fixture(scope="module", autouse=True)
def driver_rows(pg):
    """The data set's rows exist only while this module runs: other tests see the Parlant tables as they were."""
    yield
    pg.query("DELETE FROM parlant_workspace WHERE id = 710001")


def run_program(argv, endpoint, cwd, env_extra=None):
    """Runs a driver program against endpoint; returns its stdout (the JSON lines). Fails on a non-zero exit or a
    hang, showing what it printed."""
    env = dict(os.environ)
    env.pop("PGSERVICE", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(env_extra or {})
    full = [*argv, endpoint.host, str(endpoint.port), USER, PASSWORDS[USER], "parlant"]
    started = time.monotonic()
    try:
        p = subprocess.run(full, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{argv} against port {endpoint.port} hung for {RUN_TIMEOUT}s; it printed:\n"
                             f"{(e.stdout or b'').decode()}\n{(e.stderr or b'').decode()}") from None
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, (f"{argv} against port {endpoint.port} exited with {p.returncode} after "
                               f"{time.monotonic() - started:.1f}s\n--- stdout ---\n{out}\n--- stderr ---\n{err}")
    print(f"{os.path.basename(argv[-1])} against port {endpoint.port}: {time.monotonic() - started:.1f}s")
    return out


def parse(out):
    """JSON lines -> {(round, lookup): rows}, in order."""
    result = {}
    for line in out.splitlines():
        rec = json.loads(line)
        key = (rec["round"], rec["lookup"])
        assert key not in result, f"{key} printed twice"
        result[key] = rec["rows"]
    return result


def col(rows, i):
    return [str(r[i]) for r in rows]


def check_lookups(out):
    """The values the data set and the write must produce, whatever the driver's types (compared as text)."""
    res = parse(out)
    lookups = ["agent", "deleted agent", "agent tools", "events page 0", "events page 1", "journey states"]
    rounds = list(dict.fromkeys(r for r, _ in res))
    befores = [r for r in rounds if r.startswith("before")]
    afters = [r for r in rounds if r.startswith("after")]
    assert len(befores) >= 2 and len(afters) >= 2 and rounds == befores + afters, rounds
    assert sorted(res) == sorted((r, lk) for r in rounds for lk in lookups), sorted(res)
    for lk in lookups:
        for group in (befores, afters):
            for r in group[1:]:
                assert res[(r, lk)] == res[(group[0], lk)], f"{lk}: {r!r} differs from {group[0]!r}"
    before = {lk: res[(befores[0], lk)] for lk in lookups}
    after = {lk: res[(afters[0], lk)] for lk in lookups}

    # agent by id (the soft-deleted one is never found); the write changed description, status, total_sessions
    assert len(before["agent"]) == 1 and col(before["agent"], 0) == ["710001"], before["agent"]
    assert col(before["agent"], 2) == ["support-agent"] and col(before["agent"], 3) == ["First-line support"]
    assert col(before["agent"], 4) == ["active"] and col(before["agent"], 6) == ["7"], before["agent"]
    assert col(after["agent"], 3) == ["Updated by driver"] and col(after["agent"], 4) == ["inactive"], after["agent"]
    assert col(after["agent"], 6) == ["8"], after["agent"]
    assert before["deleted agent"] == [] and after["deleted agent"] == []
    # enabled tools by priority: the write linked 710006 at priority 5 and disabled 710002
    assert col(before["agent tools"], 0) == ["710002", "710003", "710001", "710004"], before["agent tools"]
    assert col(after["agent tools"], 0) == ["710006", "710003", "710001", "710004"], after["agent tools"]
    assert col(after["agent tools"], 5) == ["5", "20", "30", "40"], after["agent tools"]
    # pages of 50 events: the write appended offset 80
    assert col(before["events page 0"], 1) == [str(n) for n in range(50)]
    assert before["events page 0"] == after["events page 0"]
    assert col(before["events page 1"], 1) == [str(n) for n in range(50, 80)]
    assert col(after["events page 1"], 1) == [str(n) for n in range(50, 81)]
    assert after["events page 1"][:30] == before["events page 1"]
    # the enabled journey's states: the write changed the initial state's prompt
    assert col(before["journey states"], 0) == ["710001", "710002", "710003", "710004"], before["journey states"]
    assert col(before["journey states"], 3)[0] == "Hello! How can I help?"
    assert col(after["journey states"], 3)[0] == "Welcome back! How can I help?"
    assert after["journey states"][1:] == before["journey states"][1:]




def cache_figures(pooler):
    return {r["name"]: r["value"] for r in console_rows(pooler, "SHOW CACHE")}


def run_three_ways(argv, pg, parley, target, cwd, env_extra=None, **settings):
    """Runs argv directly against PostgreSQL, through parley with the cache off, then with the cache on (a fresh
    parley each, data reloaded before each run; settings are extra parley settings) and checks that the three
    outputs are identical."""
    if target != "parley":
        pytest.skip("the driver suite proves parley (cache settings); PgBouncer 1.18 has no named statements in "
                    "transaction mode")
    outputs = {}
    load_data(pg)
    outputs["direct"] = run_program(argv, pg, cwd, env_extra)
    check_lookups(outputs["direct"])

    pooled = dict(pool_mode="transaction", default_pool_size=4, extra_config=CACHE_POLICY, **settings)
    off = parley(cache_enabled=0, **pooled)
    load_data(pg)
    outputs["cache off"] = run_program(argv, off, cwd, env_extra)
    off_figures = cache_figures(off)
    off.stop()

    on = parley(cache_enabled=1, **pooled)
    load_data(pg)
    outputs["cache on"] = run_program(argv, on, cwd, env_extra)
    on_figures = cache_figures(on)

    for mode in ("cache off", "cache on"):
        if outputs[mode] != outputs["direct"]:
            direct, pooled_res = parse(outputs["direct"]), parse(outputs[mode])
            diffs = [f"{k}:\n  direct: {direct.get(k)}\n  {mode}: {pooled_res.get(k)}"
                     for k in sorted(set(direct) | set(pooled_res)) if direct.get(k) != pooled_res.get(k)]
            pytest.fail(f"through parley ({mode}) the results differ from PostgreSQL's:\n" + "\n".join(diffs[:6]),
                        pytrace=False)
    print(f"cache figures with the cache on: {on_figures}")
    # the cache really answered some lookups (repeated ones) and the write really invalidated entries
    assert int(off_figures["hits"]) == 0 and int(off_figures["stores"]) == 0, off_figures
    assert int(on_figures["hits"]) > 0, on_figures
    assert int(on_figures["invalidations"]) > 0, on_figures


# ---------------------------------------------------------------------------------------------------------------
# One test per driver


def test_psycopg3_prepared_binary_pipeline_same_results_through_parley(pg, parley, target):
    python_driver("psycopg", "python3-psycopg")
    import psycopg
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}")
    run_three_ways([sys.executable, os.path.join(HERE, "python", "psycopg_lookups.py")], pg, parley, target,
                   cwd=os.path.join(HERE, "python"))


def test_asyncpg_prepared_binary_pool_same_results_through_parley(pg, parley, target):
    python_driver("asyncpg", "python3-asyncpg")
    import asyncpg
    print(f"asyncpg {asyncpg.__version__}")
    run_three_ways([sys.executable, os.path.join(HERE, "python", "asyncpg_lookups.py")], pg, parley, target,
                   cwd=os.path.join(HERE, "python"))


def test_node_postgres_drizzle_pool_same_results_through_parley(pg, parley, target, node_dir):
    print(", ".join(f"{n} {node_package_version(node_dir, n)}" for n in ("pg", "pg-pool", "drizzle-orm")))
    run_three_ways(["node", os.path.join(node_dir, "drizzle_pg.mjs")], pg, parley, target, cwd=node_dir)


def test_postgresjs_named_statements_same_results_through_parley(pg, parley, target, node_dir):
    print(f"postgres.js {node_package_version(node_dir, 'postgres')}")
    run_three_ways(["node", os.path.join(node_dir, "postgresjs.mjs")], pg, parley, target, cwd=node_dir)


def java_argv(java_classes):
    return ["java", "-Duser.timezone=UTC", "-cp", java_classes, "ParlantLookups"]


def test_pgjdbc_named_statements_binary_same_results_through_parley(pg, parley, target, java_classes):
    print(f"pgjdbc {jar_version(PGJDBC_JAR)}")
    # pgjdbc sends extra_float_digits=3 in its startup packet: parley tracks it like client_encoding (PgBouncer
    # needs ignore_startup_parameters = extra_float_digits)
    extra = {} if target == "parley" else {"ignore_startup_parameters": "extra_float_digits"}
    run_three_ways(java_argv(java_classes), pg, parley, target, cwd=os.path.dirname(JAVA_SRC), **extra)


def test_pgjdbc_connects_to_parley_with_default_settings(pg, parley, target, java_classes):
    if target != "parley":
        pytest.skip("parley only")
    load_data(pg)
    p = parley(pool_mode="transaction", default_pool_size=4, extra_config=CACHE_POLICY)
    check_lookups(run_program(java_argv(java_classes), p, os.path.dirname(JAVA_SRC)))


# The reset query asyncpg's pool runs each time a connection goes back to the pool (asyncpg 0.27,
# Connection._get_reset_query against PostgreSQL 15).
ASYNCPG_RESET_QUERY = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"


@pytest.mark.parametrize("reset", [ASYNCPG_RESET_QUERY, "RESET ALL"], ids=["asyncpg pool reset", "RESET ALL"])
def test_cache_keeps_answering_a_client_after_its_pool_reset_query(pg, parley, target, reset):
    """asyncpg's pool sends its reset query on every release, so this is what decides whether an asyncpg application
    gets any cache hits: after a reset the session's settings are the defaults again, and a repeated read should be
    a hit on the entry filled before the reset."""
    if target != "parley":
        pytest.skip("parley only")
    load_data(pg)
    p = parley(pool_mode="transaction", default_pool_size=4, extra_config=CACHE_POLICY)
    w = Wire(p.host, p.port)
    try:
        w.login(USER)
        read = "SELECT name FROM parlant_agent WHERE id = 710001"
        assert Wire.data_rows(w.query(read)) == [["support-agent"]]
        for _ in range(3):
            assert not Wire.errors(w.query(reset))
            assert Wire.data_rows(w.query(read)) == [["support-agent"]]
    finally:
        w.close()
    figures = cache_figures(p)
    assert (int(figures["misses"]), int(figures["hits"]), int(figures["entries"])) == (1, 3, 1), figures

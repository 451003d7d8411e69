"""test_pgbouncer_compat.py — parley as a drop-in for PgBouncer: one pgbouncer.ini in PgBouncer's own syntax is run by
Debian's /usr/sbin/pgbouncer (1.18) and by parley side by side, and clients, the admin console, RELOAD and SIGHUP must
behave the same; the pgbouncer.ini Debian ships (as shipped, and with every commented-out setting switched on) must
start parley; the tls column of SHOW CLIENTS / SHOW SERVERS must read exactly as PgBouncer's."""

import os
import re
import signal
from contextlib import closing

import psycopg2
import pytest

import harness
from harness import LOCALHOST, PASSWORDS, Pooler, Wire, wait_until
# Certificates and the ssl = on PostgreSQL come from test_tls.py (imported fixtures, not copies).
from test_tls import certs, pg_tls  # noqa: F401  (pytest fixtures)

DEBIAN_INI = next((p for p in ("/usr/share/doc/pgbouncer/examples/pgbouncer.ini", "/etc/pgbouncer/pgbouncer.ini")
                   if os.path.exists(p)), None)

# Columns parley shows that PgBouncer 1.18 does not: columns of newer PgBouncer releases (so scripts written for
# those keep working) and parley's own (SHOW POOLS utilization). They may only be added; PgBouncer 1.18's columns
# must all be there, in its order. Anything else that differs is a bug.
NEWER_COLUMNS = {
    "POOLS": {"load_balance_hosts", "pool_size", "utilization", "paused"},
    "DATABASES": {"reserve_pool_size", "server_lifetime", "load_balance_hosts", "max_client_connections",
                  "current_client_connections"},
    "CLIENTS": {"replication", "prepared_statements", "id"},
    "SERVERS": {"replication", "prepared_statements", "id"},
    "USERS": {"pool_size", "reserve_pool_size", "max_user_connections", "current_connections",
              "max_user_client_connections", "current_client_connections"},
    "CONFIG": set(),
}

# The production-style configuration both poolers run. Only the directory, the ports and the userlist differ between
# the two copies. PgBouncer's syntax: ';' and '#' comments on their own lines only, connection strings in
# [databases] with a '*' fallback, per-user settings in [users], and %include.
COMPAT_INI = """\
;;; pgbouncer.ini of a typical production deployment (PgBouncer syntax; parley reads it unchanged)
# comments may also start with a hash

[databases]
;; the application database, redirected to PostgreSQL over TCP
parlant = host={host} port={pgport} dbname=parlant
;; a second name for the same database with its own pool size, mode and application_name
appdb = host={host} port={pgport} dbname=parlant pool_size=4 pool_mode=session application_name=compat_app
;; auth_user is accepted in a connection string (used with auth_query for users missing from auth_file)
authdb = host={host} port={pgport} dbname=parlant auth_user=postgres
;; every other database name goes to the same server
* = host={host} port={pgport}

[users]
app_scram = pool_mode=session

[pgbouncer]
logfile = {dir}/pooler.log
pidfile = {dir}/pooler.pid
listen_addr = {host}
listen_port = {port}
unix_socket_dir = {dir}
unix_socket_mode = 0777

auth_type = md5
auth_file = {dir}/userlist.txt
admin_users = postgres
stats_users = app_md5

pool_mode = transaction
server_reset_query = DISCARD ALL
server_reset_query_always = 0
ignore_startup_parameters = extra_float_digits
server_check_query = select 1
server_check_delay = 30
application_name_add_host = 0

max_client_conn = 200
default_pool_size = 10
min_pool_size = 0
reserve_pool_size = 2
reserve_pool_timeout = 3
max_db_connections = 0
max_user_connections = 0

log_connections = 1
log_disconnections = 1
log_pooler_errors = 1
log_stats = 0
stats_period = 60
verbose = 0

server_lifetime = 3600
server_connect_timeout = 15
server_login_retry = 1
query_timeout = 0
query_wait_timeout = 120
client_idle_timeout = 0
client_login_timeout = 60
autodb_idle_timeout = 3600
idle_transaction_timeout = 0

pkt_buf = 4096
listen_backlog = 128
max_packet_size = 2147483647
tcp_keepalive = 1
tcp_keepidle = 60
tcp_keepintvl = 10
tcp_keepcnt = 3

;; site-specific overrides live in a second file
%include {dir}/overrides.ini
"""

OVERRIDES_INI = """\
; included by pgbouncer.ini; the [pgbouncer] section carries on
server_idle_timeout = {idle}
"""

# Keys the compat config sets (and their values after the include), read back through SHOW CONFIG.
SET_KEYS = re.findall(r"^([a-z_]+) = ", COMPAT_INI, re.M)


def bouncer_target():
    """Debian's PgBouncer as a harness.Target, whatever PARLEY_TEST_TARGET says."""
    t = harness.Target.__new__(harness.Target)
    t.name, t.binary, t.as_pg = "pgbouncer", harness.PGBOUNCER, True
    return t


def console(p, user="postgres", **kw):
    """A psycopg2 connection to the admin console (psycopg2 speaks the simple protocol the console needs)."""
    conn = psycopg2.connect(host=p.host, port=p.port, user=user, dbname="pgbouncer", password=PASSWORDS[user],
                            connect_timeout=5, **{"sslmode": "disable", **kw})
    conn.autocommit = True
    return closing(conn)


def show(p, what, **kw):
    """(column names, rows as dicts) of SHOW what on p's admin console."""
    with console(p, **kw) as conn, conn.cursor() as cur:
        cur.execute(f"SHOW {what}")
        cols = [d[0] for d in cur.description]
        return cols, [dict(zip(cols, ["" if v is None else str(v) for v in r])) for r in cur.fetchall()]


def config_of(p):
    return {r["key"]: r["value"] for r in show(p, "CONFIG")[1]}


class Pair:
    """The same pgbouncer.ini text under PgBouncer and under parley."""

    def __init__(self, parley_target, pg, tmp_base, idle=300, ini=COMPAT_INI, **subs):
        self.poolers = []
        for t in (bouncer_target(), parley_target):
            p = Pooler(t, pg, harness.make_owned_dir(tmp_base, f"compat-{t.name}-"))
            p.log_path = os.path.join(p.workdir, "pooler.log")
            p.pid_path = os.path.join(p.workdir, "pooler.pid")
            self.poolers.append(p)
        self.bouncer, self.parley = self.poolers
        self.pg = pg
        self.subs = subs
        self.write(idle=idle, ini=ini)

    def write(self, idle, ini=COMPAT_INI, **subs):
        for p in self.poolers:
            harness.write_file(os.path.join(p.workdir, "overrides.ini"), OVERRIDES_INI.format(idle=idle))
            p.write_raw_config(ini.format(host=LOCALHOST, pgport=self.pg.port, port=p.port, dir=p.workdir,
                                          **{**self.subs, **subs}))

    def start(self):
        for p in self.poolers:
            p.start()
        return self

    def stop(self):
        for p in self.poolers:
            if p.proc is not None:
                p.stop()


@pytest.fixture
def pair(request, target, pg, tmp_base):
    """Factory: pair() -> a started Pair. Stopped at teardown; a crashed pooler fails the test."""
    if target != "parley":
        pytest.skip("this module runs PgBouncer and parley side by side itself")
    if not os.access(harness.PGBOUNCER, os.X_OK):
        pytest.fail(f"{harness.PGBOUNCER} is missing: install Debian's pgbouncer (scripts/install-deps.sh)")
    made = []

    def factory(**kw):
        pr = Pair(target, pg, tmp_base, **kw)
        made.append(pr)
        return pr.start()

    yield factory
    problems = []
    for pr in made:
        pr.stop()
        for p in pr.poolers:
            problems += [f"{p.target.name}: {what}" for what in p.problems()]
            rep = getattr(request.node, "rep_call", None)
            if problems or (rep is not None and rep.failed):
                print(f"\n----- {p.target.name} -----\n{p.log_text()[-6000:]}")
    if problems:
        pytest.fail("pooler crashed or misbehaved: " + "; ".join(problems), pytrace=False)


def psql_rows(p, sql, dbname="parlant", user="app_md5", **conn):
    """Rows of psql -A -t output (fields split on |); asserts success."""
    argv = [harness.PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-d", harness.conninfo(host=conn.pop("host", p.host), port=p.port, user=user, dbname=dbname, **conn),
            "-c", sql]
    r = harness._run_client(argv, PASSWORDS[user], 30)
    assert r.rc == 0, r
    return [line.split("|") for line in r.out.splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# One production pgbouncer.ini, two poolers


def test_clients_see_the_same_databases_users_and_results_through_both(pair):
    pr = pair()
    sql = "SELECT current_database(), current_user, current_setting('application_name') LIKE 'compat_app%'"
    for dbname, user in (("parlant", "app_md5"), ("appdb", "app_md5"), ("authdb", "app_md5"),
                         ("postgres", "app_md5"), ("parlant", "app_scram")):
        got = [psql_rows(p, sql, dbname=dbname, user=user) for p in pr.poolers]
        assert got[0] == got[1], f"{dbname}/{user}: PgBouncer {got[0]} vs parley {got[1]}"
    assert got[0] == [["parlant", "app_scram", "f"]]
    # over the unix socket in unix_socket_dir as well
    for p in pr.poolers:
        assert psql_rows(p, "SELECT 42", host=p.workdir) == [["42"]]
    # psycopg (extended protocol) in transaction pooling, with a parameter and a transaction
    for p in pr.poolers:
        with p.connect() as conn:
            assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = '5s'")
                assert conn.execute("SHOW statement_timeout").fetchone() == ("5s",)


def test_startup_parameters_ignored_or_refused_alike(pair):
    pr = pair()
    outcomes = []
    for p in pr.poolers:
        # extra_float_digits is in ignore_startup_parameters (pgjdbc sends it): accepted
        with Wire(p.host, p.port, timeout=5) as w:
            w.login("app_md5", PASSWORDS["app_md5"], extra_float_digits="2")
            assert Wire.data_rows(w.query("SELECT 7")) == [["7"]]
        # a parameter neither pooler tracks and that is not ignored: the login is refused
        with Wire(p.host, p.port, timeout=5) as w:
            with pytest.raises(harness.WireError) as e:
                w.login("app_md5", PASSWORDS["app_md5"], geqo="off")
            outcomes.append((e.value.sqlstate, "unsupported startup parameter" in e.value.message))
    assert outcomes[0] == outcomes[1], f"PgBouncer {outcomes[0]} vs parley {outcomes[1]}"
    assert outcomes[1][1], outcomes


def test_admin_console_shows_the_same_columns_and_settings(pair):
    pr = pair()
    # a pool, a client and a server on both so that every list has rows
    conns = [p.connect() for p in pr.poolers]
    try:
        for c in conns:
            c.execute("SELECT 1")
        for what, newer in NEWER_COLUMNS.items():
            bcols, _ = show(pr.bouncer, what)
            pcols, _ = show(pr.parley, what)
            assert [c for c in pcols if c not in newer] == bcols, \
                f"SHOW {what}: PgBouncer 1.18 has {bcols}, parley {pcols} (known newer columns: {sorted(newer)})"
        # every key the file sets reads back with the same value (server_idle_timeout comes from the %include)
        bconf, pconf = config_of(pr.bouncer), config_of(pr.parley)
        assert pconf["server_idle_timeout"] == "300"
        # PgBouncer 1.18 prints unix_socket_mode in decimal (511); parley prints it in octal, as it is written
        assert (bconf["unix_socket_mode"], pconf["unix_socket_mode"]) == ("511", "0777")
        diff = {k: (bconf.get(k), pconf.get(k)) for k in SET_KEYS + ["server_idle_timeout"]
                if k not in ("logfile", "pidfile", "listen_port", "unix_socket_dir", "auth_file", "unix_socket_mode")
                and bconf.get(k) != pconf.get(k)}
        assert not diff, f"SHOW CONFIG values (PgBouncer, parley) differ: {diff}"
        missing = sorted(set(bconf) - set(pconf))
        assert not missing, f"SHOW CONFIG keys of PgBouncer 1.18 missing in parley: {missing}"
        # the databases of the file, with their pool size and mode
        for p in pr.poolers:
            rows = {r["name"]: r for r in show(p, "DATABASES")[1]}
            assert {"parlant", "appdb", "authdb", "pgbouncer"} <= set(rows), (p.target.name, sorted(rows))
            assert (rows["appdb"]["pool_size"], rows["appdb"]["pool_mode"]) == ("4", "session")
            assert rows["parlant"]["pool_size"] == "10"
        # the pool of the open connection, as both list it (PgBouncer also lists its admin console as a pool
        # pgbouncer/pgbouncer; parley does not)
        pools = [{(r["database"], r["user"]): r["pool_mode"] for r in show(p, "POOLS")[1]
                  if r["database"] != "pgbouncer"} for p in pr.poolers]
        assert pools[0] == pools[1]
        assert pools[1][("parlant", "app_md5")] == "transaction"
        # stats_users may read, not change
        for p in pr.poolers:
            assert show(p, "POOLS", user="app_md5")[1]
            with console(p, user="app_md5") as conn, conn.cursor() as cur:
                with pytest.raises(psycopg2.Error):
                    cur.execute("RELOAD")
    finally:
        for c in conns:
            c.close()


def test_reload_command_and_sighup_apply_the_edited_file_on_both(pair):
    pr = pair()
    # RELOAD from the console: a main setting and the included file change
    pr.write(idle=120, ini=COMPAT_INI.replace("default_pool_size = 10", "default_pool_size = 7"))
    for p in pr.poolers:
        with console(p) as conn, conn.cursor() as cur:
            cur.execute("RELOAD")
            assert cur.statusmessage == "RELOAD"
        conf = config_of(p)
        assert (conf["default_pool_size"], conf["server_idle_timeout"]) == ("7", "120"), p.target.name
    # SIGHUP: another edit, applied without a console
    pr.write(idle=90, ini=COMPAT_INI.replace("default_pool_size = 10", "default_pool_size = 5"))
    for p in pr.poolers:
        p.signal(signal.SIGHUP)
    for p in pr.poolers:
        wait_until(lambda: config_of(p)["default_pool_size"] == "5", 5, what=f"{p.target.name} to reload on SIGHUP")
        assert config_of(p)["server_idle_timeout"] == "90"
        assert psql_rows(p, "SELECT 1") == [["1"]]
        assert p.running()


def test_parley_only_settings_live_in_a_file_that_includes_the_untouched_pgbouncer_ini(parley, target, pg):
    """The migration pattern of the README: PgBouncer rejects [cache] and parley's own keys, so they go in a small
    parley.ini that %includes pgbouncer.ini, which stays as it was (and PgBouncer can still run it for a rollback)."""
    if target != "parley":
        pytest.skip("parley's own settings")
    p = parley(start=False)
    p.log_path = os.path.join(p.workdir, "pooler.log")
    p.pid_path = os.path.join(p.workdir, "pooler.pid")
    harness.write_file(os.path.join(p.workdir, "overrides.ini"), OVERRIDES_INI.format(idle=300))
    harness.write_file(os.path.join(p.workdir, "pgbouncer.ini"),
                       COMPAT_INI.format(host=LOCALHOST, pgport=pg.port, port=p.port, dir=p.workdir))
    p.write_raw_config("\n".join([
        "; parley.ini: the site's pgbouncer.ini plus what only parley understands",
        "%include pgbouncer.ini",
        "[pgbouncer]",
        "cache_max_memory = 64MB",
        "[cache]",
        "t = 30",
        "",
    ]))
    p.start()
    conf = config_of(p)
    assert (conf["default_pool_size"], conf["pool_mode"], conf["cache_max_memory"]) == ("10", "transaction", "64MB")
    assert [(r["table"], r["ttl"]) for r in show(p, "CACHE_TABLES")[1]] == [("t", "30")]
    assert psql_rows(p, "SELECT count(*) >= 0 FROM t") == [["t"]]


# ---------------------------------------------------------------------------------------------------------------
# The pgbouncer.ini Debian ships


# Settings of the example that PgBouncer itself rejects on Linux ("unknown parameter"): Windows service names.
WINDOWS_ONLY = ("service_name", "job_name")


def debian_ini(workdir, port, uncomment, keep_commented=()):
    """Debian's example pgbouncer.ini with its paths and port moved into workdir; with uncomment, every commented-out
    `;key = value` line (but those in keep_commented) is switched on with the value the file suggests
    (`<system default>` becomes empty)."""
    text = harness.read_text(DEBIAN_INI)
    lines = []
    for line in text.splitlines():
        m = re.match(r"^;\s*(\w+)\s*=(.*)$", line)
        if uncomment and m and not line.startswith(";;") and m.group(1) not in keep_commented:
            line = f"{m.group(1)} ={m.group(2)}".replace("<system default>", "")
        lines.append(line)
    text = "\n".join(lines) + "\n"
    for old, new in (("/var/log/postgresql/pgbouncer.log", f"{workdir}/pgbouncer.log"),
                     ("/var/run/postgresql/pgbouncer.pid", f"{workdir}/pgbouncer.pid"),
                     ("/etc/pgbouncer/userlist.txt", f"{workdir}/userlist.txt"),
                     ("/var/run/postgresql", workdir),
                     ("listen_addr = localhost", f"listen_addr = {LOCALHOST}"),
                     ("listen_port = 6432", f"listen_port = {port}")):
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("uncomment", [False, True], ids=["as-shipped", "every-key-on"])
def test_debian_shipped_pgbouncer_ini_starts_parley(parley, target, uncomment):
    if DEBIAN_INI is None:
        pytest.fail("Debian's pgbouncer package (its example pgbouncer.ini) is not installed")
    p = parley(start=False)
    p.log_path = os.path.join(p.workdir, "pgbouncer.log")
    p.pid_path = os.path.join(p.workdir, "pgbouncer.pid")
    text = debian_ini(p.workdir, p.port, uncomment, keep_commented=WINDOWS_ONLY if target == "pgbouncer" else ())
    if uncomment:
        assert "server_round_robin = 0" in text and "auth_hba_file =" in text   # the rewrite did switch keys on
    p.write_raw_config(text)
    p.start()
    assert harness.port_accepts(p.host, p.port)
    assert os.path.exists(os.path.join(p.workdir, f".s.PGSQL.{p.port}")), "no unix socket in unix_socket_dir"
    log = harness.read_text(p.log_path)
    assert "FATAL" not in log and "ERROR" not in log, log
    if target == "parley" and uncomment:
        # every setting parley accepts without acting on it is named in the log and listed in doc/config.md
        ignored = set(re.findall(r'setting "(\w+)" is accepted for compatibility but has no effect', log))
        assert "syslog" in ignored, log
        doc = harness.read_text(os.path.join(harness.SRCDIR, "doc", "config.md"))
        section = doc.split("## Compatibility with pgbouncer.ini", 1)[-1].split("\n## ", 1)[0]
        undocumented = sorted(k for k in ignored if f"`{k}`" not in section)
        assert not undocumented, f"doc/config.md does not list these ignored settings: {undocumented}"
    # the file parley wrote its pid to is the rewritten pidfile
    assert int(harness.read_text(p.pid_path).strip()) == p.pid


# ---------------------------------------------------------------------------------------------------------------
# The tls column of SHOW CLIENTS / SHOW SERVERS


def tls_of(p, table, sslconn=None, **match):
    """The tls column of the rows of SHOW table (CLIENTS or SERVERS) that match, read over a TLS console login."""
    _, rows = show(p, table, **(sslconn or {}))
    return sorted(r["tls"] for r in rows if all(r[k] == v for k, v in match.items()))


def test_show_clients_and_servers_tls_column_reads_as_pgbouncers(pair, certs, pg_tls):  # noqa: F811
    tls_ini = COMPAT_INI.replace("[users]\n", "tlsdb = host={host} port={tlsport} dbname=parlant\n\n[users]\n", 1)
    tls_ini = tls_ini.replace("[pgbouncer]\n", "[pgbouncer]\n" + "\n".join([
        "client_tls_sslmode = prefer",
        f"client_tls_cert_file = {certs.path('server.crt')}",
        f"client_tls_key_file = {certs.path('server.key')}",
        "client_tls_ciphers = fast",
        # parley's default and PgBouncer's since 1.20; Debian's 1.18 still defaults to disable
        "server_tls_sslmode = prefer",
    ]) + "\n", 1)
    pr = pair(ini=tls_ini, tlsport=pg_tls.port)
    seen = {}
    for p in pr.poolers:
        v13 = {"sslmode": "require", "application_name": "tls13"}
        v12 = {"sslmode": "require", "application_name": "tls12", "ssl_max_protocol_version": "TLSv1.2"}
        with console(p, **v13), console(p, **v12):
            rows = show(p, "CLIENTS")[1]     # read over a third, plain-text console connection
        by_app = {r["application_name"]: r["tls"] for r in rows}
        plain = [r["tls"] for r in rows if r["application_name"] not in ("tls13", "tls12")]
        # server connections with server_tls_sslmode = prefer: over TLS to pg_tls, and in plain text to the harness
        # PostgreSQL, which has ssl off and answers the SSLRequest with 'N'
        with p.connect(dbname="tlsdb") as a, p.connect() as b:
            a.execute("SELECT 1")
            with b.transaction():
                b.execute("SELECT 1")
                servers = show(p, "SERVERS")[1]
        srv = {db: sorted(r["tls"] for r in servers if r["database"] == db) for db in ("tlsdb", "parlant")}
        seen[p.target.name] = (by_app["tls13"], by_app["tls12"], plain, srv)
    b, q = seen["pgbouncer"], seen["parley"]
    assert q == b, f"tls columns differ: PgBouncer {b}, parley {q}"
    assert q[0].startswith("TLSv1.3/TLS_"), q
    assert re.fullmatch(r"TLSv1\.2/ECDHE-[A-Z0-9-]+/ECDH=X25519", q[1]), q
    assert q[2] == [""], "the plain-text console client has an empty tls column"
    assert q[3]["tlsdb"] and all(s.startswith("TLSv1.3/") for s in q[3]["tlsdb"]), q
    assert q[3]["parlant"] == [""], q


# ---------------------------------------------------------------------------------------------------------------
# server_tls_sslmode defaults to prefer, as in PgBouncer


def test_default_server_tls_sslmode_prefer_uses_tls_when_offered_and_plain_otherwise(parley, target, pg_tls):  # noqa: F811
    if target != "parley":
        pytest.skip("PgBouncer 1.18 defaults to server_tls_sslmode = disable (prefer since 1.20)")
    p = parley(start=False, databases_extra=[f"tlsdb = host={LOCALHOST} port={pg_tls.port} dbname=parlant"])
    p.start()
    assert config_of(p)["server_tls_sslmode"] == "prefer"
    ssl_sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    # the harness PostgreSQL has ssl = off: SSLRequest, 'N', and the login goes on in plain text
    with p.connect() as conn:
        assert conn.execute(ssl_sql).fetchone() == (False,)
    # pg_tls lets app_md5 in over TLS only (hostssl): the default must have negotiated TLS
    with p.connect(dbname="tlsdb") as conn:
        assert conn.execute(ssl_sql).fetchone() == (True,)

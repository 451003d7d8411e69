"""auth_user + auth_query (users missing from auth_file are looked up on PostgreSQL at each login, with the secret then
driving client authentication and the pooler's own server login) and `parley --hash-password`."""

import os
import subprocess
import threading
import time

import psycopg
import pytest

import harness
from harness import PASSWORDS, Wire, WireError

AUTH_MD5, AUTH_SASL = 5, 10
SAFE_QUERY = ("SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid "
              "WHERE rolname=$1 AND rolcanlogin")
AUTH_PW = "aq-Auth-pw-7"          # password of the auth_user roles
LOOKUP_FN = "aq_lookup"           # SECURITY DEFINER lookup function for a non-superuser auth_user
ROLES = {
    # role: (options, password)
    "aq_auth": ("LOGIN SUPERUSER", AUTH_PW),      # may read pg_authid: runs the default auth_query
    "aq_auth2": ("LOGIN", AUTH_PW),               # may only call the lookup function
    "aq_expired": ("LOGIN VALID UNTIL '2001-01-01'", "expired-Pw-8"),
    "aq_nologin": ("NOLOGIN", "nologin-Pw-9"),
    "aq_hashed": ("LOGIN", None),                 # password set by the --hash-password tests
}


@pytest.fixture(scope="module")
def aq_roles(pg):
    """The roles of this module (SCRAM passwords) and the lookup function, in databases parlant and postgres."""
    with pg.connect(dbname="postgres") as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        for role, (opts, pw) in ROLES.items():
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} {opts}" + (f" PASSWORD '{pw}'" if pw else ""))
    for db in ("parlant", "postgres"):
        with pg.connect(dbname=db) as conn:
            conn.execute(f"CREATE OR REPLACE FUNCTION public.{LOOKUP_FN}(i_user text, OUT uname text, OUT phash text) "
                         "RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$ "
                         "SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
                         "FROM pg_authid WHERE rolname = i_user AND rolcanlogin $$")
            conn.execute(f"REVOKE ALL ON FUNCTION public.{LOOKUP_FN}(text) FROM PUBLIC")
            conn.execute(f"GRANT EXECUTE ON FUNCTION public.{LOOKUP_FN}(text) TO aq_auth2")
    yield pg
    for db in ("parlant", "postgres"):
        with pg.connect(dbname=db) as conn:
            conn.execute(f"DROP FUNCTION IF EXISTS public.{LOOKUP_FN}(text)")
    with pg.connect(dbname="postgres") as conn:
        for role in ROLES:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def aq_parley(parley, target, auth_pw=AUTH_PW, **settings):
    """A pooler where app_md5 and app_scram are NOT in the auth_file (auth_query must find them); aq_auth and
    aq_auth2 are, with auth_pw as their plain password. parley runs its default auth_query; PgBouncer 1.18's default
    predates the CVE-2025-2291 fix, so it gets the fixed query spelled out."""
    extra = {"app_md5": None, "app_scram": None, "aq_auth": auth_pw, "aq_auth2": auth_pw}
    extra.update(settings.pop("userlist_extra", {}))
    settings.setdefault("auth_user", "aq_auth")
    if target == "pgbouncer":
        settings.setdefault("auth_query", SAFE_QUERY)
    settings.setdefault("server_connect_timeout", 2)
    return parley(userlist_extra=extra, **settings)


def login(p, user, password, dbname="parlant"):
    """Raw-protocol login: (authentication requests, WireError or None, current_user through the pooler)."""
    with Wire(p.host, p.port, timeout=10) as w:
        try:
            w.login(user, password, dbname)
        except WireError as e:
            return w.auth_requests, e, None
        rows = w.data_rows(w.query("SELECT current_user"))
        return w.auth_requests, None, rows[0][0] if rows else None


def assert_refused_as_wrong_password(err, user, target):
    assert err is not None, f"{user} was let in"
    if target == "pgbouncer":
        # PgBouncer 1.18 answers 08P01 "password/SASL authentication failed", and "no such user" when auth_query
        # returns no row: unlike parley it tells a client which users exist
        assert err.sqlstate in ("28P01", "08P01"), err.fields
        assert "authentication failed" in err.message or err.message == "no such user", err.fields
        return
    assert err.sqlstate == "28P01", err.fields
    assert err.message == f'password authentication failed for user "{user}"', err.fields


def test_md5_and_scram_users_found_by_auth_query_log_in_and_reach_the_server(parley, aq_roles, target):
    p = aq_parley(parley, target)
    log_at = aq_roles.log_size()
    # app_md5's secret in PostgreSQL is md5: md5 challenge, and the pooler logs in with the md5 hash
    seen, err, who = login(p, "app_md5", PASSWORDS["app_md5"])
    assert err is None, err.fields
    assert seen[0] == AUTH_MD5 and who == "app_md5"
    # app_scram's is SCRAM: SCRAM exchange, and the pooler logs in with the ClientKey the client's proof revealed
    seen, err, who = login(p, "app_scram", PASSWORDS["app_scram"])
    assert err is None, err.fields
    assert seen[0] == AUTH_SASL and who == "app_scram"
    with p.connect(user="app_scram") as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)
    # the lookups ran as aq_auth in the client's database (PostgreSQL logs every connection): parley opens one
    # connection per login, PgBouncer reuses a pooled one
    pg_log = aq_roles.log_since(log_at)
    lookups = pg_log.count("connection authorized: user=aq_auth database=parlant")
    assert lookups >= (3 if target == "parley" else 1), pg_log[-3000:]


def test_wrong_password_and_unknown_user_are_the_same_28P01(parley, aq_roles, target):
    p = aq_parley(parley, target)
    for user, pw in (("app_scram", "not-the-password"), ("app_md5", "not-the-password"),
                     ("aq_no_such_user", "whatever")):
        _, err, _ = login(p, user, pw)
        assert_refused_as_wrong_password(err, user, target)


def test_expired_and_nologin_roles_refused_by_the_default_query(parley, aq_roles, target):
    """CVE-2025-2291: the default auth_query honours VALID UNTIL (and rolcanlogin), so a right but expired
    password is refused like a wrong one."""
    p = aq_parley(parley, target)
    for user in ("aq_expired", "aq_nologin"):
        _, err, _ = login(p, user, ROLES[user][1])
        assert_refused_as_wrong_password(err, user, target)
    # the same roles are refused by PostgreSQL itself (the test would be meaningless otherwise)
    for user in ("aq_expired", "aq_nologin"):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(aq_roles.dsn(user=user, password=ROLES[user][1])).close()
    # and once the expiry is lifted, the next login looks the role up again and gets in: nothing was cached
    aq_roles.query("ALTER ROLE aq_expired VALID UNTIL 'infinity'", dbname="postgres")
    try:
        _, err, who = login(p, "aq_expired", ROLES["aq_expired"][1])
        assert err is None, err.fields
        assert who == "aq_expired"
    finally:
        aq_roles.query("ALTER ROLE aq_expired VALID UNTIL '2001-01-01'", dbname="postgres")
    _, err, _ = login(p, "aq_expired", ROLES["aq_expired"][1])
    assert_refused_as_wrong_password(err, "aq_expired", target)


def test_auth_user_with_wrong_password_gives_a_clear_error(parley, aq_roles, target):
    if target == "pgbouncer":
        pytest.skip("PgBouncer 1.18 keeps the client waiting while it retries the auth_user login")
    p = aq_parley(parley, target, auth_pw="not-aq-auth-password")
    _, err, _ = login(p, "app_scram", PASSWORDS["app_scram"])
    assert err is not None
    if target == "parley":
        assert err.sqlstate == "08001", err.fields
        assert 'auth_user "aq_auth" cannot log into' in err.message, err.fields
        assert 'password authentication failed for user "aq_auth"' in err.message, err.fields
        log = harness.read_text(p.log_path)
        assert "auth_query lookup failed" in log and "app_scram" in log
    # users of the auth_file are not affected
    with p.connect(user="app_plain") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_plain",)


def test_per_database_auth_user_and_query_override_the_global_ones(parley, aq_roles, target):
    """[databases] auth_user / auth_query: aqdb looks users up as aq_auth2 through the SECURITY DEFINER function;
    the global auth_user (aq_auth, whose auth_file password is wrong here) is used for parlant only."""
    if target == "pgbouncer":
        pytest.skip("PgBouncer 1.18 has no per-database auth_query")
    pg = aq_roles
    p = aq_parley(parley, target, auth_pw="wrong-for-aq_auth", userlist_extra={"aq_auth2": AUTH_PW},
                  databases_extra=[f"aqdb = host={pg.host} port={pg.port} dbname=parlant auth_user=aq_auth2 "
                                   f"auth_query='SELECT * FROM public.{LOOKUP_FN}($1)'"])
    _, err, who = login(p, "app_scram", PASSWORDS["app_scram"], dbname="aqdb")
    assert err is None, err.fields
    assert who == "app_scram"
    _, err, _ = login(p, "aq_expired", ROLES["aq_expired"][1], dbname="aqdb")
    assert_refused_as_wrong_password(err, "aq_expired", target)
    _, err, _ = login(p, "app_scram", PASSWORDS["app_scram"], dbname="parlant")
    assert err is not None and err.sqlstate != "28P01", "the global auth_user should have been used for parlant"


def test_auth_dbname_runs_the_query_in_another_database(parley, aq_roles, target):
    """The lookup function exists in both databases; auth_dbname=authdb runs it in database postgres, which the
    pg_stat_activity of the lookup connection shows while auth_query sleeps."""
    if target != "parley":
        pytest.skip("parley's own auth_query connection is checked")
    pg = aq_roles
    query = f"SELECT uname, phash FROM public.{LOOKUP_FN}($1), pg_sleep(0.3)"
    p = aq_parley(parley, target, auth_user="aq_auth2", auth_dbname="authdb", auth_query=query,
                  databases_extra=[f"authdb = host={pg.host} port={pg.port} dbname=postgres"])
    seen_db = []

    def watch():
        deadline = time.time() + 3
        while time.time() < deadline and not seen_db:
            seen_db.extend(r[0] for r in pg.query("SELECT datname FROM pg_stat_activity "
                                                  "WHERE application_name = 'parley-auth_query'"))
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    _, err, who = login(p, "app_md5", PASSWORDS["app_md5"])
    t.join()
    assert err is None, err.fields
    assert who == "app_md5"
    assert seen_db and set(seen_db) == {"postgres"}, seen_db


def test_slow_lookup_neither_blocks_other_clients_nor_outlives_server_connect_timeout(parley, aq_roles, target):
    if target != "parley":
        pytest.skip("parley's timeout message is checked")
    p = aq_parley(parley, target, server_connect_timeout=1,
                  auth_query="SELECT rolname, rolpassword FROM pg_authid, pg_sleep(2) WHERE rolname = $1")
    result = {}

    def slow_login():
        t0 = time.monotonic()
        result["login"] = login(p, "app_scram", PASSWORDS["app_scram"])
        result["secs"] = time.monotonic() - t0

    t = threading.Thread(target=slow_login)
    t.start()
    # a second client gives up while its lookup runs: parley abandons that lookup (and must not crash)
    with Wire(p.host, p.port, timeout=5) as w:
        w.startup("app_md5", "parlant")
    time.sleep(0.2)
    t0 = time.monotonic()
    with p.connect(user="app_plain") as conn:   # an auth_file user: no lookup
        assert conn.execute("SELECT 1").fetchone() == (1,)
    fast = time.monotonic() - t0
    t.join()
    assert fast < 0.7, f"a client of the auth_file waited {fast:.2f}s behind a lookup"
    _, err, _ = result["login"]
    assert err is not None and err.sqlstate == "08001", err and err.fields
    assert "timed out after 1.0 s" in err.message, err.fields
    assert 0.8 < result["secs"] < 3, result["secs"]
    # both lookup connections were closed (PQfinish): their backends exit once pg_sleep returns, instead of
    # staying connected as aq_auth
    aq_roles.wait_backends("aq_auth", lambda n: n == 0, timeout=5)
    with p.connect(user="app_plain") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_lookups_run_at_most_default_pool_size_at_once_and_queued_ones_still_succeed(parley, aq_roles, target):
    """A burst of logins must not open a backend each: parley runs default_pool_size lookups at a time (PgBouncer
    runs them over auth_user's pool, of the same size)."""
    if target != "parley":
        pytest.skip("parley's lookup connections are counted")
    pg = aq_roles
    p = aq_parley(parley, target, default_pool_size=2, server_connect_timeout=5,
                  auth_query="SELECT rolname, rolpassword FROM pg_authid, pg_sleep(0.3) WHERE rolname = $1")
    results, peak, done = [], [0], threading.Event()

    def watch():
        while not done.is_set():
            n = pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'parley-auth_query'")
            peak[0] = max(peak[0], n)
            time.sleep(0.03)

    def one():
        results.append(login(p, "app_md5", PASSWORDS["app_md5"]))

    w = threading.Thread(target=watch)
    w.start()
    clients = [threading.Thread(target=one) for _ in range(6)]
    t0 = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    took = time.monotonic() - t0
    done.set()
    w.join()
    assert [r[1] for r in results] == [None] * 6, [r[1] and r[1].fields for r in results]
    assert [r[2] for r in results] == ["app_md5"] * 6
    assert peak[0] == 2, f"{peak[0]} lookup connections at once (default_pool_size = 2)"
    assert took >= 0.85, f"6 lookups of 0.3 s, 2 at a time, took only {took:.2f}s"


# ---- parley --hash-password


def hash_password(target, args, stdin):
    r = subprocess.run([target.binary, "--hash-password", *args], input=stdin.encode(), capture_output=True,
                       timeout=30, cwd="/")
    for pat in harness.SANITIZER_PATTERNS:
        assert pat not in r.stderr.decode(), r.stderr
    return r


@pytest.fixture
def parley_only(target):
    if target != "parley":
        pytest.skip("parley --hash-password")


def test_hash_password_secret_is_accepted_by_postgresql(parley_only, target, aq_roles):
    pg = aq_roles
    r = hash_password(target, [], "hashed-Pw-10\n")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.decode().strip()
    assert secret.startswith("SCRAM-SHA-256$4096:"), secret
    other = hash_password(target, [], "hashed-Pw-10\n").stdout.decode().strip()
    assert other != secret, "two secrets of one password must differ by their random salt"
    pg.query(f"ALTER ROLE aq_hashed PASSWORD '{secret}'", dbname="postgres")
    # PostgreSQL stored the secret as given (not as a password to hash) and accepts the password
    assert pg.scram_secret("aq_hashed") == secret
    psycopg.connect(pg.dsn(user="aq_hashed", password="hashed-Pw-10")).close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(user="aq_hashed", password="hashed-Pw-11")).close()


def test_hash_password_auth_file_line_logs_in_through_parley_without_plaintext(parley_only, target, aq_roles,
                                                                              parley):
    pg = aq_roles
    r = hash_password(target, ["--iterations", "5000", "aq_hashed"], "hashed-Pw-12\r\n")
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode()
    assert line.startswith('"aq_hashed" "SCRAM-SHA-256$5000:') and line.endswith('"\n'), line
    secret = line.split('" "', 1)[1][:-2]
    pg.query(f"ALTER ROLE aq_hashed PASSWORD '{secret}'", dbname="postgres")
    p = parley(auth_type="scram-sha-256", userlist_extra={"aq_hashed": secret})
    assert secret in harness.read_text(p.auth_file) and "hashed-Pw-12" not in harness.read_text(p.auth_file)
    with p.connect(user="aq_hashed", password="hashed-Pw-12") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("aq_hashed",)
    with pytest.raises(psycopg.OperationalError):
        p.connect(user="aq_hashed", password="hashed-Pw-13").close()


@pytest.mark.parametrize("args,stdin,code,message", [
    (["--iterations", "0"], "pw\n", 2, "invalid iteration count"),
    (["--iterations", "x1"], "pw\n", 2, "invalid iteration count"),
    (["--bogus"], "pw\n", 2, "unknown option --bogus"),
    (["a", "b"], "pw\n", 2, "at most one user name"),
    ([], "", 1, "no password given on standard input"),
    ([], "\n", 1, "empty password"),
])
def test_hash_password_bad_input_is_named(parley_only, target, args, stdin, code, message):
    r = hash_password(target, args, stdin)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert message in r.stderr.decode(), r.stderr
    assert r.stdout == b""

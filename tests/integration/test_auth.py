"""Client authentication by the pooler (auth_type md5, scram-sha-256, plain, trust against the auth_file) and the
pooler's own login to PostgreSQL with the secrets of the auth_file (md5, SCRAM, cleartext)."""

import time

import psycopg
import pytest

from harness import PASSWORDS, Wire, WireError

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10

# auth_type -> {user: authentication request the pooler must send}. The request follows PgBouncer: md5 asks
# for md5 unless the auth_file holds a SCRAM secret (then SCRAM); scram-sha-256 always SCRAM; plain cleartext.
ACCEPTED = {
    "md5": {"app_md5": AUTH_MD5, "app_scram": AUTH_SASL, "app_plain": AUTH_MD5, "app_trust": AUTH_MD5,
            "postgres": AUTH_MD5},
    "scram-sha-256": {"app_scram": AUTH_SASL, "app_plain": AUTH_SASL, "app_trust": AUTH_SASL, "postgres": AUTH_SASL},
    "plain": {"app_md5": AUTH_CLEARTEXT, "app_plain": AUTH_CLEARTEXT, "app_trust": AUTH_CLEARTEXT,
              "postgres": AUTH_CLEARTEXT},
    "trust": {"app_md5": AUTH_OK, "app_plain": AUTH_OK, "app_trust": AUTH_OK, "postgres": AUTH_OK},
}


def login(endpoint, user, password=None, dbname="parlant"):
    """Raw-protocol login: (authentication requests seen, WireError or None, first row of SELECT current_user)."""
    with Wire(endpoint.host, endpoint.port, timeout=15) as w:
        try:
            w.login(user, password, dbname)
        except WireError as e:
            return w.auth_requests, e, None
        rows = w.data_rows(w.query("SELECT current_user"))
        return w.auth_requests, None, rows[0] if rows else None


def assert_rejected(err, target, what):
    assert err is not None, f"{what} was accepted"
    assert "authentication failed" in err.message, err.fields
    assert err.fields.get("S") == "FATAL", err.fields
    # PostgreSQL answers a failed password with 28P01 (invalid_password); PgBouncer 1.18 uses 08P01.
    expected = {"28P01", "08P01"} if target == "pgbouncer" else {"28P01"}
    assert err.sqlstate in expected, f"{what}: {err.fields}"


@pytest.mark.parametrize("auth_type", list(ACCEPTED))
def test_auth_type_accepts_right_password_and_requests_expected_method(parley, auth_type):
    p = parley(auth_type=auth_type)
    for user, request in ACCEPTED[auth_type].items():
        seen, err, row = login(p, user, PASSWORDS[user])
        assert err is None, f"{auth_type}: {user}: {err and err.fields}"
        assert seen[0] == request, f"{auth_type}: {user}: authentication requests {seen}"
        assert row == [user]
        # The same through libpq (psycopg 3).
        with p.connect(user=user) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256", "plain"])
def test_wrong_password_rejected_with_28P01(parley, target, auth_type):
    p = parley(auth_type=auth_type)
    for user in ACCEPTED[auth_type]:
        seen, err, _ = login(p, user, "wrong-" + PASSWORDS[user])
        assert_rejected(err, target, f"{auth_type}: {user} with a wrong password")
    good = next(iter(ACCEPTED[auth_type]))
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        p.connect(user=good, password="wrong")
    with p.connect(user=good) as conn:  # the pooler still serves good clients
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_md5_and_scram_wrong_password_give_28P01(parley, target):
    """The SQLSTATE contract spelled out for the two common cases: an md5 user and a SCRAM user."""
    p = parley(auth_type="md5")
    for user, method in (("app_md5", AUTH_MD5), ("app_scram", AUTH_SASL)):
        seen, err, _ = login(p, user, "not-the-password")
        assert seen[:1] == [method]
        assert_rejected(err, target, f"{user} with a wrong password")


def test_scram_auth_type_rejects_user_with_md5_secret(parley):
    """An md5 hash cannot verify a SCRAM exchange: with auth_type=scram-sha-256 the md5 user cannot log in."""
    p = parley(auth_type="scram-sha-256")
    _, err, _ = login(p, "app_md5", PASSWORDS["app_md5"])
    assert err is not None and err.fields.get("S") == "FATAL"


@pytest.mark.parametrize("auth_type", ["md5", "scram-sha-256", "plain", "trust"])
def test_unknown_user_rejected(parley, target, auth_type):
    p = parley(auth_type=auth_type)
    _, err, _ = login(p, "no_such_user", "whatever")
    assert err is not None, "a user missing from auth_file was let in"
    assert err.fields.get("S") == "FATAL"
    if target == "parley":
        assert err.sqlstate in ("28P01", "28000"), err.fields
    with pytest.raises(psycopg.OperationalError):
        p.connect(user="no_such_user", password="whatever")


def test_trust_accepts_any_password(parley):
    p = parley(auth_type="trust")
    for user in ACCEPTED["trust"]:
        seen, err, row = login(p, user, "anything at all")
        assert err is None and seen == [AUTH_OK] and row == [user]


@pytest.mark.parametrize("user,method", [("app_md5", "md5"), ("app_scram", "scram-sha-256"),
                                         ("app_plain", "password"), ("app_trust", "trust")])
def test_pooler_logs_into_postgres_with_auth_file_secret(parley, pg, user, method):
    """PostgreSQL's pg_hba.conf demands md5 for app_md5 (auth_file: md5 hash), SCRAM for app_scram (auth_file:
    SCRAM secret copied from pg_authid, usable only with the keys of the client's own SCRAM proof), cleartext
    for app_plain (auth_file: plain password), nothing for app_trust."""
    p = parley(auth_type="md5")
    before = pg.log_size()
    with p.connect(user=user) as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == (user, user)
    log = pg.log_since(before)
    if method == "trust":
        assert f"connection authorized: user={user} database=parlant" in log, log
    else:
        assert f'connection authenticated: identity="{user}" method={method}' in log, log


def test_server_login_failure_reported_to_client(parley, target):
    """app_badsrv authenticates to the pooler, but the auth_file password is not the one PostgreSQL has."""
    p = parley(auth_type="md5")
    seen, err, _ = login(p, "app_badsrv", "badsrv-Wrong-6")
    assert err is not None, "login should fail when the pooler cannot log into PostgreSQL"
    assert "authentication failed" in err.message, err.fields
    with p.connect() as conn:  # other users' pools are unaffected
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _reload(p):
    """SIGHUP, then waits until the pooler has logged it (parley and PgBouncer both name the signal)."""
    before = p.log_text().count("SIGHUP")
    p.reload()
    deadline = time.monotonic() + 5
    while p.log_text().count("SIGHUP") == before:
        assert time.monotonic() < deadline, "SIGHUP not logged within 5s"
        time.sleep(0.05)
    time.sleep(0.2)


def test_scram_secret_passthrough_needs_a_scram_client_and_survives_reload(parley, target):
    """app_scram's auth_file entry is a SCRAM secret and PostgreSQL demands SCRAM for it: the pooler can log in
    only with the ClientKey that a client's SCRAM proof reveals. Under trust no client sends a proof, so the
    login fails with a clear error; once a client has used SCRAM, the key is kept across a reload."""
    settings = {"auth_type": "trust", "query_wait_timeout": 10}  # a server login that keeps failing ends the wait
    if target == "pgbouncer":
        settings["server_login_retry"] = 1  # PgBouncer waits it out even once the key is known; parley retries at once
    p = parley(**settings)
    _, err, _ = login(p, "app_scram", PASSWORDS["app_scram"])
    assert err is not None and err.fields.get("S") == "FATAL", err and err.fields
    if target == "parley":
        assert "until a client has authenticated" in err.message, err.fields

    p.write_config(auth_type="scram-sha-256")
    _reload(p)
    seen, err, row = login(p, "app_scram", PASSWORDS["app_scram"])
    assert err is None and seen[:1] == [AUTH_SASL] and row == ["app_scram"], (seen, err and err.fields)

    # Back to trust: a second concurrent session needs a new server login, made with the key learned above.
    p.write_config(auth_type="trust")
    _reload(p)
    assert login(p, "app_md5", "anything")[0] == [AUTH_OK]
    with p.connect(user="app_scram") as c1, p.connect(user="app_scram") as c2:
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (c1, c2)}
        assert len(pids) == 2
        assert c2.execute("SELECT current_user").fetchone() == ("app_scram",)

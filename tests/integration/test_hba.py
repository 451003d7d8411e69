"""auth_type = hba: the auth_hba_file (PgBouncer's subset of pg_hba.conf) picks trust, md5, password,
scram-sha-256, reject, cert or peer per connection type, database, user and client address; first match wins, no
match is refused with 28000 like PostgreSQL; a broken file stops startup and is ignored (old rules kept) on reload."""

import os
import shutil
import time

import psycopg
import pytest

import harness
from harness import LOCALHOST, PASSWORDS, Wire, WireError
from test_tls import certs, client_tls  # noqa: F401  (certs: module fixture making a CA, server and client certs)

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL = 0, 3, 5, 10

pytestmark = pytest.mark.skipif(os.environ.get("PARLEY_TEST_TARGET", "parley") == "pgbouncer",
                                reason="messages and log lines checked here are parley's")


def hba_parley(parley, hba_text, **settings):
    """A parley with auth_type = hba whose auth_hba_file (in its workdir) holds hba_text."""
    p = parley(start=False, auth_type="hba", **settings)
    p.hba_path = os.path.join(p.workdir, "hba.conf")
    harness.write_file(p.hba_path, hba_text, 0o644)
    p.write_config(auth_hba_file=p.hba_path)
    p.start()
    return p


def login(host, port, user, password=None, dbname="parlant"):
    """Raw-protocol login: (authentication requests seen, WireError or None, current_user or None)."""
    with Wire(host, port, timeout=5) as w:
        try:
            w.login(user, password, dbname)
        except WireError as e:
            return w.auth_requests, e, None
        rows = w.data_rows(w.query("SELECT current_user"))
        return w.auth_requests, None, rows[0][0] if rows else None


def assert_no_entry(err, host, user, db, enc="no encryption"):
    assert err is not None, f"{user}@{db} from {host} was let in"
    assert err.sqlstate == "28000", err.fields
    assert err.fields.get("S") == "FATAL", err.fields
    assert err.message == f'no pg_hba.conf entry for host "{host}", user "{user}", database "{db}", {enc}', err.fields


def wait_log(p, text, timeout=5):
    harness.wait_until(lambda: text in p.log_text(), timeout, what=f"{text!r} in the log")


def test_method_per_database_user_and_address(parley):
    """Each rule's method is what the client is asked for; the first matching line wins (app_md5 from ::1 meets
    the IPv6 line, from 127.0.0.1 the md5 line before it); a login no line matches is refused with 28000."""
    hba = "\n".join([
        "# TYPE DATABASE USER      ADDRESS        METHOD",
        f"host   parlant  app_trust {LOCALHOST}/32 trust",
        f"host   parlant  app_md5   {LOCALHOST}/32 md5",
        f"host   parlant  app_plain {LOCALHOST}/32 password",
        "host   all      app_scram 127.0.0.0/8   scram-sha-256",
        "host   all      app_md5   ::1/128        trust",
        "host   parlant  postgres  10.0.0.0/8     trust",
        "",
    ])
    p = hba_parley(parley, hba, listen_addr=f"{LOCALHOST},::1")
    v4 = (LOCALHOST, p.port)

    seen, err, who = login(*v4, "app_trust", "not the password")
    assert (seen, err, who) == ([AUTH_OK], None, "app_trust")
    seen, err, who = login(*v4, "app_md5")
    assert (seen, err, who) == ([AUTH_MD5, AUTH_OK], None, "app_md5")
    seen, err, _ = login(*v4, "app_md5", "wrong")
    assert seen == [AUTH_MD5] and err is not None and err.sqlstate == "28P01", err and err.fields
    seen, err, who = login(*v4, "app_plain")
    assert (seen, err, who) == ([AUTH_CLEARTEXT, AUTH_OK], None, "app_plain")
    seen, err, who = login(*v4, "app_scram")
    assert seen[0] == AUTH_SASL and err is None and who == "app_scram", err and err.fields
    # postgres is allowed only from 10/8, and app_trust only for database parlant (so not over the console db)
    _, err, _ = login(*v4, "postgres")
    assert_no_entry(err, LOCALHOST, "postgres", "parlant")
    _, err, _ = login(*v4, "app_trust", dbname="pgbouncer")
    assert_no_entry(err, LOCALHOST, "app_trust", "pgbouncer")
    # the same user from ::1 meets the IPv6 line instead: trust
    seen, err, who = login("::1", p.port, "app_md5", "not the password")
    assert (seen, err, who) == ([AUTH_OK], None, "app_md5")
    _, err, _ = login("::1", p.port, "app_plain")
    assert_no_entry(err, "::1", "app_plain", "parlant")
    # libpq sees the same refusal
    with pytest.raises(psycopg.OperationalError, match='no pg_hba.conf entry for host "127.0.0.1", user "postgres"'):
        psycopg.connect(p.dsn(user="postgres"))


def test_reject_line_and_database_field(parley, pg):
    """A reject line refuses with PostgreSQL's wording; the database field (names, comma lists, @file) decides
    which of two [databases] entries a user may reach."""
    p = parley(start=False, auth_type="hba",
               databases_extra=[f"other = host={pg.host} port={pg.port} dbname=parlant",
                                f"third = host={pg.host} port={pg.port} dbname=parlant"])
    p.hba_path = os.path.join(p.workdir, "hba.conf")
    harness.write_file(os.path.join(p.workdir, "dbs.txt"), "# databases app_md5 may use\nparlant\n", 0o644)
    harness.write_file(p.hba_path, "\n".join([
        f'host  other      app_md5          {LOCALHOST}/32 reject',
        f'host  @dbs.txt   app_md5          {LOCALHOST}/32 md5',
        f'host  third,"x"  app_md5,app_plain {LOCALHOST}/32 trust',
        "",
    ]), 0o644)
    p.write_config(auth_hba_file=p.hba_path)
    p.start()
    v4 = (LOCALHOST, p.port)
    _, err, _ = login(*v4, "app_md5", dbname="other")
    assert err is not None and err.sqlstate == "28000", err and err.fields
    assert err.message == (f'pg_hba.conf rejects connection for host "{LOCALHOST}", user "app_md5", '
                           'database "other", no encryption')
    seen, err, who = login(*v4, "app_md5", dbname="parlant")
    assert (seen, err, who) == ([AUTH_MD5, AUTH_OK], None, "app_md5")
    seen, err, who = login(*v4, "app_md5", "anything", dbname="third")
    assert (seen, err, who) == ([AUTH_OK], None, "app_md5")
    seen, err, who = login(*v4, "app_plain", "anything", dbname="third")
    assert (seen, err, who) == ([AUTH_OK], None, "app_plain")
    _, err, _ = login(*v4, "app_plain", dbname="parlant")
    assert_no_entry(err, LOCALHOST, "app_plain", "parlant")
    assert f"{p.hba_path}:1" in p.log_text()   # the log names the rejecting line


def test_local_lines_and_peer(parley):
    """local lines apply to the unix socket only; peer compares the OS user of the client process (this test's
    own) with the requested user name."""
    me = __import__("pwd").getpwuid(os.geteuid()).pw_name
    assert me != "app_md5"
    p = hba_parley(parley, "\n".join([
        "local all app_md5  peer",
        "local all app_plain md5",
        f"host  all all {LOCALHOST}/32 trust",
        "",
    ]))

    def unix_connect(user, password):
        return psycopg.connect(harness.conninfo(host=p.workdir, port=p.port, user=user, dbname="parlant",
                                                password=password, connect_timeout=5), autocommit=True)

    with pytest.raises(psycopg.OperationalError, match='peer authentication failed for user "app_md5"'):
        unix_connect("app_md5", PASSWORDS["app_md5"])
    assert f"provided user name (app_md5) and authenticated user name ({me}) do not match" in p.log_text()
    with unix_connect("app_plain", PASSWORDS["app_plain"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_plain",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        unix_connect("app_plain", "wrong")
    # over TCP the host line applies: trust
    seen, err, who = login(LOCALHOST, p.port, "app_md5", "anything")
    assert (seen, err, who) == ([AUTH_OK], None, "app_md5")


def test_reload_with_broken_file_keeps_old_rules(parley):
    p = hba_parley(parley, f"host all all {LOCALHOST}/32 trust\n")
    seen, err, who = login(LOCALHOST, p.port, "app_md5", "anything")
    assert (seen, err, who) == ([AUTH_OK], None, "app_md5")

    harness.write_file(p.hba_path, f"host all all {LOCALHOST}/32 md5\nhost all all all md6\n", 0o644)
    p.reload()
    wait_log(p, f'{p.hba_path}:2: invalid authentication method "md6"')
    wait_log(p, "reload failed")
    seen, err, who = login(LOCALHOST, p.port, "app_md5", "anything")
    assert (seen, err, who) == ([AUTH_OK], None, "app_md5"), "the broken file's rules were applied"

    harness.write_file(p.hba_path, f"host all all {LOCALHOST}/32 md5\n", 0o644)
    p.reload()
    deadline = time.monotonic() + 5
    while True:
        seen, err, who = login(LOCALHOST, p.port, "app_md5")
        if seen == [AUTH_MD5, AUTH_OK]:
            break
        assert time.monotonic() < deadline, f"the fixed file was not applied: {seen}"
        time.sleep(0.05)
    assert who == "app_md5"
    _, err, _ = login(LOCALHOST, p.port, "app_md5", "wrong")
    assert err is not None and err.sqlstate == "28P01"


@pytest.mark.parametrize("text,expect", [
    ("host all all 127.0.0.1/32 md5\nhost all +admins 127.0.0.1/32 md5\n",
     ':2: group membership "+admins" is not supported'),
    ("local all all trust\nhost all all 127.0.0.1 md5\n", ':2: invalid IP mask "md5" after address "127.0.0.1"'),
    ("host all all all ldap\n", ':1: authentication method "ldap" is not supported'),
])
def test_broken_file_at_startup_exits_nonzero_naming_the_line(parley, target, text, expect):
    p = parley(start=False, auth_type="hba")
    path = os.path.join(p.workdir, "hba.conf")
    harness.write_file(path, text, 0o644)
    p.write_config(auth_hba_file=path)
    r = target.run([p.config_path], cwd=p.workdir, timeout=10)
    assert r.rc != 0, r
    assert path + expect in r.err + harness.read_text(p.log_path), r


def test_hba_without_file_exits_nonzero(parley, target):
    p = parley(start=False, auth_type="hba")
    r = target.run([p.config_path], cwd=p.workdir, timeout=10)
    assert r.rc != 0, r
    assert "auth_type = hba needs auth_hba_file" in r.err + harness.read_text(p.log_path), r


def test_hostssl_and_hostnossl(parley, certs):
    """With TLS optional (prefer), hostssl lines match TLS logins only and hostnossl lines plain-text ones."""
    p = hba_parley(parley, "\n".join([
        f"hostssl   all app_md5   {LOCALHOST}/32 trust",
        f"hostnossl all app_md5   {LOCALHOST}/32 md5",
        f"hostssl   all app_scram {LOCALHOST}/32 scram-sha-256",
        f"hostnossl all app_scram {LOCALHOST}/32 reject",
        "",
    ]), **client_tls(certs, "prefer"))
    with psycopg.connect(p.dsn(user="app_md5", password="not the password", sslmode="require")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_md5",)
    seen, err, who = login(LOCALHOST, p.port, "app_md5")          # plain text: the hostnossl md5 line
    assert (seen, err, who) == ([AUTH_MD5, AUTH_OK], None, "app_md5")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        p.connect(user="app_md5", password="wrong")
    with psycopg.connect(p.dsn(user="app_scram", sslmode="require")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_scram",)
    _, err, _ = login(LOCALHOST, p.port, "app_scram")
    assert err is not None and err.sqlstate == "28000", err and err.fields
    assert err.message == (f'pg_hba.conf rejects connection for host "{LOCALHOST}", user "app_scram", '
                           'database "parlant", no encryption')
    # and over TLS the refusal says so
    p2 = hba_parley(parley, f"hostnossl all all {LOCALHOST}/32 trust\n", **client_tls(certs, "prefer"))
    with pytest.raises(psycopg.OperationalError,
                       match=f'no pg_hba.conf entry for host "{LOCALHOST}", user "app_md5", database "parlant", '
                             'SSL encryption'):
        psycopg.connect(p2.dsn(user="app_md5", sslmode="require"))


def test_cert(parley, certs, tmp_base):
    """cert accepts a verified client certificate whose CN is the user name (client.crt has CN app_md5) without
    asking for a password, and refuses one whose CN is another user's."""
    keydir = harness.make_owned_dir(tmp_base, "hba-client-key-")
    for name in ("client.crt", "client.key"):
        shutil.copy(certs.path(name), os.path.join(keydir, name))
        os.chown(os.path.join(keydir, name), os.geteuid(), os.getegid())   # libpq wants its key owned by us
        os.chmod(os.path.join(keydir, name), 0o600)
    p = hba_parley(parley, "\n".join([
        f"hostssl   all app_md5   {LOCALHOST}/32 cert",
        f"hostssl   all app_plain {LOCALHOST}/32 cert",
        f"hostssl   all app_scram {LOCALHOST}/32 scram-sha-256",
        "",
    ]), **client_tls(certs, "verify-ca"), client_tls_ca_file=certs.path("ca.crt"))

    def tls(user, password):
        return psycopg.connect(p.dsn(user=user, password=password, sslmode="require",
                                     sslcert=os.path.join(keydir, "client.crt"),
                                     sslkey=os.path.join(keydir, "client.key")), autocommit=True)

    with tls("app_md5", "not the password") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app_md5",)
    with pytest.raises(psycopg.OperationalError, match='certificate authentication failed for user "app_plain"'):
        tls("app_plain", PASSWORDS["app_plain"])
    assert "the certificate's common name does not match the user name" in p.log_text()
    with tls("app_scram", PASSWORDS["app_scram"]) as conn:          # other methods still work over hostssl
        assert conn.execute("SELECT current_user").fetchone() == ("app_scram",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        tls("app_scram", "wrong")


def test_cert_needs_a_client_certificate(parley, certs):
    """Below verify-ca parley asks for no client certificate, so a cert line refuses."""
    p = hba_parley(parley, f"hostssl all all {LOCALHOST}/32 cert\n", **client_tls(certs, "prefer"))
    with pytest.raises(psycopg.OperationalError, match='certificate authentication failed for user "app_md5"'):
        psycopg.connect(p.dsn(user="app_md5", sslmode="require"))
    assert "the client sent no certificate" in p.log_text()
    # and a plain-text login matches no line at all
    _, err, _ = login(LOCALHOST, p.port, "app_md5")
    assert_no_entry(err, LOCALHOST, "app_md5", "parlant")


def test_console_set_auth_hba_file(parley):
    """SET auth_hba_file on the admin console switches to the named file at the next login; a file that cannot be
    read leaves the rules in force."""
    console_line = f"host pgbouncer postgres {LOCALHOST}/32 md5\n"
    p = hba_parley(parley, console_line + f"host parlant all {LOCALHOST}/32 trust\n")
    seen, err, _ = login(LOCALHOST, p.port, "app_md5", "anything")
    assert (seen, err) == ([AUTH_OK], None)
    other = os.path.join(p.workdir, "hba2.conf")
    harness.write_file(other, console_line + f"host parlant all {LOCALHOST}/32 md5\n", 0o644)
    harness.console_rows(p, f"SET auth_hba_file = '{other}'")
    seen, err, who = login(LOCALHOST, p.port, "app_md5")
    assert (seen, err, who) == ([AUTH_MD5, AUTH_OK], None, "app_md5")
    missing = os.path.join(p.workdir, "nosuch.conf")
    harness.console_rows(p, f"SET auth_hba_file = '{missing}'")
    seen, err, _ = login(LOCALHOST, p.port, "app_md5")
    assert (seen, err) == ([AUTH_MD5, AUTH_OK], None)
    _, err, _ = login(LOCALHOST, p.port, "app_md5", "wrong")
    assert err is not None and err.sqlstate == "28P01"
    wait_log(p, f"cannot read auth_hba_file {missing}: No such file or directory; the hba rules in force stay")
    assert p.log_text().count(f"cannot read auth_hba_file {missing}") == 1   # not retried at every login

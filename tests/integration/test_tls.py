"""TLS on both legs: clients (psql, psycopg, a raw socket) to parley with client_tls_sslmode, and parley to a
PostgreSQL 15 started here with ssl = on (its pg_hba.conf accepts the app roles over TLS only) with
server_tls_sslmode. Every certificate is made by this module with the openssl command-line tool."""

import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess

import psycopg
import pytest

import harness
from harness import LOCALHOST, PASSWORDS, Pooler, Wire, startup_packet

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SSL_REQUEST = struct.pack("!II", 8, harness.SSL_REQUEST_CODE)


def _openssl(*args, cwd):
    p = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(args)} failed:\n{p.stderr.decode()}"


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3", "-subj", f"/CN=parley test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)


def _make_leaf(d, name, ca, cn, san):
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "3", "-extfile", f"{name}.ext", cwd=d)


class Certs:
    """Paths of the generated files: ca (signs everything below), other_ca (signs nothing here), server (for
    localhost and 127.0.0.1, used by parley and by PostgreSQL), server2 (same names, another key: for reloads),
    client (CN app_md5, signed by ca)."""

    def __init__(self, d):
        self.dir = d

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def certs(tmp_base):
    d = harness.make_owned_dir(tmp_base, "certs-")
    _make_ca(d, "ca")
    _make_ca(d, "other_ca")
    _make_leaf(d, "server", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    _make_leaf(d, "server2", "ca", "localhost", "DNS:localhost,IP:127.0.0.1")
    _make_leaf(d, "client", "ca", "app_md5", "DNS:app_md5")
    for name in os.listdir(d):
        path = os.path.join(d, name)
        harness.chown_pg(path)
        os.chmod(path, 0o600 if name.endswith(".key") else 0o644)
    return Certs(d)


@pytest.fixture(scope="module")
def pg_tls(tmp_base, certs):
    """A PostgreSQL with ssl = on whose pg_hba.conf lets the app roles in over TLS only (postgres, used by the
    harness to set things up, may still connect in plain text)."""
    def prepare(server):
        for name in ("server.crt", "server.key", "ca.crt"):
            dst = os.path.join(server.datadir, name)
            shutil.copy(certs.path(name), dst)
            harness.chown_pg(dst)
            os.chmod(dst, 0o600)
        with open(os.path.join(server.datadir, "postgresql.conf"), "a") as f:
            f.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        harness.write_file(os.path.join(server.datadir, "pg_hba.conf"), "\n".join([
            "local   all all                    trust",
            f"host    all postgres  {LOCALHOST}/32 trust",
            f"hostssl all app_md5   {LOCALHOST}/32 md5",
            f"hostssl all all       {LOCALHOST}/32 scram-sha-256",
            "",
        ]), 0o600)

    with harness.running_pg(tmp_base, "pg-tls-", prepare) as server:
        yield server


@pytest.fixture
def pooler(request, target, pg, tmp_base):
    """Factory: pooler(backend=pg, start=True, **settings) -> a harness.Pooler in front of backend (the shared
    plain-text PostgreSQL by default, or pg_tls). Stopped by pid at teardown; a crash or sanitizer report fails."""
    poolers = []

    def factory(backend=None, start=True, **settings):
        workdir = harness.make_owned_dir(tmp_base, f"{request.node.name[:40]}-".replace("/", "_"))
        p = Pooler(target, backend or pg, workdir, settings)
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
        problems += [f"{what} (pid {p.pid})" for what in p.problems()]
    if problems or any(getattr(request.node, "rep_" + w, None) is not None and getattr(request.node, "rep_" + w).failed
                       for w in ("setup", "call")):
        for p in poolers:
            if p.proc is not None:
                print(f"\n----- pooler pid {p.pid} port {p.port} -----\n{p.log_text()[-20000:]}")
    if problems:
        pytest.fail("pooler crashed or misbehaved: " + "; ".join(problems), pytrace=False)


def client_tls(certs, mode="require"):
    return {"client_tls_sslmode": mode, "client_tls_cert_file": certs.path("server.crt"),
            "client_tls_key_file": certs.path("server.key")}


def server_tls(certs, mode="require", ca="ca.crt"):
    s = {"server_tls_sslmode": mode}
    if mode.startswith("verify"):
        s["server_tls_ca_file"] = certs.path(ca)
    return s


def run_psql(p, sql, user="app_md5", **conn):
    argv = [harness.PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-d", harness.conninfo(host=conn.pop("host", p.host), port=p.port, user=user, dbname="parlant", **conn),
            "-c", sql]
    return harness._run_client(argv, PASSWORDS[user], 60)


def tls_connect(p, certs, user="app_md5", mode="verify-full", **kw):
    dsn = p.dsn(user=user, sslmode=mode, sslrootcert=certs.path("ca.crt"))
    conn = psycopg.connect(dsn, autocommit=True, **kw)
    conn.prepare_threshold = None
    return conn


def peer_certificate(p):
    """The DER certificate parley presents after answering 'S' to an SSLRequest on a raw socket."""
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(s) as t:
            return t.getpeercert(binary_form=True)


def der_of(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---- clients to parley


def test_psql_sslmode_require_gets_tls(pooler, certs):
    p = pooler(**client_tls(certs))
    r = run_psql(p, "SELECT 'over tls'", sslmode="require")
    assert r.rc == 0, r
    assert r.out.strip() == "over tls"
    r = run_psql(p, "\\conninfo", sslmode="require")
    assert r.rc == 0, r
    assert "SSL connection (protocol: TLSv1." in r.out, r


def test_psql_verify_full_accepts_parley_certificate_and_rejects_other_ca(pooler, certs):
    p = pooler(**client_tls(certs))
    r = run_psql(p, "SELECT current_user", sslmode="verify-full", sslrootcert=certs.path("ca.crt"))
    assert r.rc == 0, r
    assert r.out.strip() == "app_md5"
    # The same parley, checked against a CA that did not sign its certificate: libpq must refuse it.
    r = run_psql(p, "SELECT 1", sslmode="verify-full", sslrootcert=certs.path("other_ca.crt"))
    assert r.rc != 0
    assert "certificate verify failed" in r.err, r


def test_client_without_tls_refused_when_required(pooler, certs, target):
    p = pooler(**client_tls(certs))
    with Wire(p.host, p.port) as w:
        w.startup("app_md5", "parlant")
        msgs, closed = w.read_until_closed()
    errs = Wire.errors(msgs)
    assert closed and errs, msgs
    assert errs[0]["S"] == "FATAL"
    if target == "parley":
        assert errs[0]["C"] == "28000" and errs[0]["M"] == "SSL required", errs
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(p.dsn(sslmode="disable")).close()
    # The unix socket is never offered TLS, so it is not refused (as PgBouncer).
    r = run_psql(p, "SELECT 'unix'", host=p.workdir, sslmode="disable")
    assert r.rc == 0, r
    assert r.out.strip() == "unix"


def test_prefer_serves_tls_and_plain_clients(pooler, certs):
    p = pooler(**client_tls(certs, "prefer"))
    with psycopg.connect(p.dsn(sslmode="disable"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use is False
    with tls_connect(p, certs) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
        assert conn.pgconn.ssl_in_use is True


def test_disable_answers_N_to_ssl_request(pooler):
    p = pooler()
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"N"


def test_plaintext_sent_after_ssl_request_is_rejected(pooler, certs, target):
    """CVE-2021-23222 class: bytes that follow the SSLRequest before the handshake were not protected by TLS and
    must not be taken as part of the session."""
    p = pooler(**client_tls(certs))
    with Wire(p.host, p.port) as w:
        w.send(SSL_REQUEST + startup_packet("app_md5", "parlant"))
        first = w.read_bytes(1)
        assert first != b"S", "parley accepted TLS with plaintext queued behind the SSLRequest"
        w.buf = first + w.buf
        msgs, closed = w.read_until_closed()
    errs = Wire.errors(msgs)
    assert closed and errs, msgs
    if target == "parley":
        assert errs[0]["C"] == "08P01" and "unencrypted data after SSL request" in errs[0]["M"], errs


def test_client_certificate_required_with_verify_full(pooler, certs):
    p = pooler(**client_tls(certs, "verify-full"), client_tls_ca_file=certs.path("ca.crt"))
    base = dict(sslmode="verify-full", sslrootcert=certs.path("ca.crt"))
    r = run_psql(p, "SELECT 'with cert'", sslcert=certs.path("client.crt"), sslkey=certs.path("client.key"), **base)
    assert r.rc == 0, r
    assert r.out.strip() == "with cert"
    # Without a certificate the handshake fails (TLS 1.3 reports it on the first read, so psql just fails).
    r = run_psql(p, "SELECT 1", sslcert="/nonexistent.crt", sslkey="/nonexistent.key", **base)
    assert r.rc != 0, r


def test_missing_key_file_is_a_clear_startup_error(pooler, certs, target):
    if target != "parley":
        pytest.skip("parley's own message")
    p = pooler(start=False, client_tls_sslmode="require", client_tls_cert_file=certs.path("server.crt"))
    r = target.run([p.config_path], cwd=p.workdir)
    assert r.rc != 0
    assert "client_tls_sslmode = require needs client_tls_key_file and client_tls_cert_file" in r.text, r


def test_reload_keeps_old_certificate_when_new_files_fail_and_takes_good_ones(pooler, certs, target):
    if target != "parley":
        pytest.skip("parley's own log line")
    p = pooler(**client_tls(certs))
    assert peer_certificate(p) == der_of(certs.path("server.crt"))
    p.write_config(client_tls_cert_file=certs.path("missing.crt"))
    p.reload()
    harness.wait_until(lambda: "TLS settings not applied" in harness.read_text(p.log_path), 10, what="reload log")
    assert "client_tls_cert_file: cannot load" in harness.read_text(p.log_path)
    assert peer_certificate(p) == der_of(certs.path("server.crt"))
    with tls_connect(p, certs) as conn:
        assert conn.execute("SELECT 3").fetchone() == (3,)
    p.write_config(client_tls_cert_file=certs.path("server2.crt"), client_tls_key_file=certs.path("server2.key"))
    p.reload()
    harness.wait_until(lambda: peer_certificate(p) == der_of(certs.path("server2.crt")), 10, what="new certificate")
    with tls_connect(p, certs) as conn:
        assert conn.execute("SELECT 4").fetchone() == (4,)


# ---- parley to PostgreSQL


def backend_ssl(conn):
    return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_server_tls_to_postgres_with_ssl_on(pooler, pg_tls, certs, mode):
    p = pooler(backend=pg_tls, **server_tls(certs, mode))
    for user in ("app_md5", "app_scram"):
        with p.connect(user=user) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
            assert backend_ssl(conn) is True


def test_server_verify_full_rejects_certificate_of_other_ca(pooler, pg_tls, certs, target):
    p = pooler(backend=pg_tls, **server_tls(certs, "verify-full", ca="other_ca.crt"))
    with pytest.raises(psycopg.OperationalError) as e:
        p.connect().close()
    if target == "parley":
        assert "TLS handshake with the server failed" in str(e.value)
        assert "certificate verification failed" in harness.read_text(p.log_path)


def test_server_without_tls_fails_login_when_required(pooler, certs, target):
    p = pooler(**server_tls(certs, "require"))      # the shared PostgreSQL has ssl = off
    with pytest.raises(psycopg.OperationalError) as e:
        p.connect().close()
    if target == "parley":
        assert "does not support TLS (server_tls_sslmode = require)" in str(e.value)


def test_server_prefer_falls_back_to_plain(pooler, pg, pg_tls, certs):
    plain = pooler(server_tls_sslmode="prefer")
    with plain.connect() as conn:
        assert backend_ssl(conn) is False
    secure = pooler(backend=pg_tls, server_tls_sslmode="prefer")
    with secure.connect() as conn:
        assert backend_ssl(conn) is True


def test_psycopg_tls_both_ways_transaction_pooling(pooler, pg_tls, certs):
    p = pooler(backend=pg_tls, pool_mode="transaction", default_pool_size=2, **client_tls(certs),
               **server_tls(certs, "verify-full"))
    conns = [tls_connect(p, certs, user=u) for u in ("app_md5", "app_md5", "app_md5", "app_scram")]
    try:
        for i in range(300):
            conn = conns[i % len(conns)]
            if i % 10 == 0:
                with conn.transaction():
                    conn.execute("SELECT %s::int", (i,))
                    row = conn.execute("SELECT v FROM t WHERE id = %s", (i % 10 + 1,)).fetchone()
                    assert row == (f"row {i % 10 + 1}",)
            else:
                assert conn.execute("SELECT %s::int * 2", (i,)).fetchone() == (2 * i,)
        assert all(backend_ssl(c) is True for c in conns)
    finally:
        for c in conns:
            c.close()


def test_large_results_and_parameters_intact_through_tls_both_ways(pooler, pg_tls, certs):
    p = pooler(backend=pg_tls, pool_mode="transaction", **client_tls(certs), **server_tls(certs, "verify-full"))
    with tls_connect(p, certs) as conn:
        # ~4.8 MB in one value, then ~4 MB over 100k rows, then 3 MB sent by the client.
        big = conn.execute("SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 150000) g").fetchone()[0]
        assert big == "".join(hashlib.md5(str(g).encode()).hexdigest() for g in range(1, 150001))
        rows = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 100000) g ORDER BY g").fetchall()
        assert rows == [(g, hashlib.md5(str(g).encode()).hexdigest()) for g in range(1, 100001)]
        payload = os.urandom(1536 * 1024).hex()
        got = conn.execute("SELECT md5(%s), length(%s)", (payload, payload)).fetchone()
        assert got == (hashlib.md5(payload.encode()).hexdigest(), len(payload))

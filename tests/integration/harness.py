"""harness.py — helpers of the integration tests: a throwaway PostgreSQL 15, the pooler under test (parley, or
Debian's PgBouncer as a stand-in), psql/pgbench runners and a small raw PostgreSQL wire-protocol client.

Nothing here is mocked: every test talks to real processes over loopback TCP. The fixtures that use these
classes live in conftest.py; tests import the helpers they need with `from harness import ...`.

Environment:
  PARLEY_BIN           binary under test (default: <srcdir>/parley)
  PARLEY_SRCDIR        source tree (default: two directories above this file)
  PARLEY_TEST_TARGET   "parley" (default) or "pgbouncer" (runs /usr/sbin/pgbouncer instead, for validating the tests)
  PARLEY_TEST_KEEP=1   keep the temporary directories (PostgreSQL data, pooler configs and logs) after the run
  PARLEY_TEST_TIMEOUT  per-test time limit in seconds (default 120)
"""

import base64
import contextlib
import hashlib
import hmac
import os
import pwd
import random
import signal
import socket
import struct
import subprocess
import tempfile
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("PARLEY_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
PG_BIN = "/usr/lib/postgresql/15/bin"
PSQL = "/usr/bin/psql"
PGBENCH = next((p for p in (os.path.join(PG_BIN, "pgbench"), "/usr/bin/pgbench") if os.access(p, os.X_OK)),
               "/usr/bin/pgbench")
PGBOUNCER = "/usr/sbin/pgbouncer"
LOCALHOST = "127.0.0.1"
IS_ROOT = os.geteuid() == 0

# Passwords of the roles created in PostgreSQL; the pooler's auth_file holds them (or their hashes).
PASSWORDS = {
    "postgres": "pg-Secret-0",
    "app_md5": "md5-Secret-1",
    "app_scram": "scram-Secret-2",
    "app_plain": "plain-Secret-3",
    "app_trust": "trust-Secret-4",
    # Exists in PostgreSQL with this password, but the pooler's auth_file has a different one (server login fails).
    "app_badsrv": "badsrv-Right-5",
}
APP_ROLES = ("app_md5", "app_scram", "app_plain", "app_trust", "app_badsrv")
BADSRV_USERLIST_PASSWORD = "badsrv-Wrong-6"

# Death by these signals (not sent by the harness) means the process crashed.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS,
                 signal.SIGTRAP}
# Text in a pooler's output that means a sanitizer found a bug.
SANITIZER_PATTERNS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "ThreadSanitizer",
                      "MemorySanitizer", "runtime error:")


def md5_secret(user, password):
    """The "md5..." secret PostgreSQL and PgBouncer store: md5(password || user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Ports, users, temporary directories

_given_ports = set()


def free_port():
    """A TCP port above 20000 (and below the ephemeral range) that nothing listens on right now, checked by binding."""
    rnd = random.Random()
    for _ in range(1000):
        port = rnd.randint(20001, 32000)
        if port in _given_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _given_ports.add(port)
        return port
    raise RuntimeError("no free TCP port found in 20001-32000")


def postgres_ids():
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def as_postgres(argv):
    """argv run as the OS user postgres when we are root (PostgreSQL and PgBouncer refuse root), as is otherwise."""
    if IS_ROOT:
        return ["runuser", "-u", "postgres", "--"] + list(argv)
    return list(argv)


def popen_user_kwargs(as_pg):
    """subprocess keyword arguments that make the child (itself, not a wrapper, so its pid is the daemon's) run as
    postgres."""
    if not (as_pg and IS_ROOT):
        return {}
    uid, gid = postgres_ids()
    return {"user": uid, "group": gid, "extra_groups": []}


def make_owned_dir(parent=None, prefix="parley-it-"):
    """A new temporary directory owned by postgres when we are root (so PostgreSQL and PgBouncer can use it)."""
    d = tempfile.mkdtemp(prefix=prefix, dir=parent)
    chown_pg(d)
    return d


def chown_pg(path):
    if IS_ROOT:
        uid, gid = postgres_ids()
        os.chown(path, uid, gid)


def write_file(path, text, mode=0o644):
    """Writes text in place (an existing file keeps its inode, so a running daemon re-reads the same file)."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    chown_pg(path)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned) or timeout seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def conninfo(**kw):
    """libpq key=value conninfo string from keyword arguments (None values omitted)."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        v = str(v).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{k}='{v}'")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Command-line clients


class Result:
    """Outcome of psql/pgbench: .rc, .out (stdout), .err (stderr), .text (both)."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    @property
    def text(self):
        return self.out + self.err

    def __repr__(self):
        return f"Result(rc={self.rc}, argv={self.argv!r})\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


def _run_client(argv, password, timeout):
    env = dict(os.environ)
    env.pop("PGSERVICE", None)
    env.update({"PGCONNECT_TIMEOUT": "10", "PGSSLMODE": "disable", "PGAPPNAME": "parley-it"})
    if password is not None:
        env["PGPASSWORD"] = password
    else:
        env.pop("PGPASSWORD", None)
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd="/")
    return Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def psql(endpoint, sql, user="app_md5", dbname="parlant", password=None, args=(), timeout=60):
    """Runs /usr/bin/psql -X -A -t -v ON_ERROR_STOP=1 -c SQL against endpoint (a PgServer or Pooler), with
    PGPASSWORD set to the user's password unless password is given."""
    if password is None:
        password = PASSWORDS.get(user)
    argv = [PSQL, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-d", conninfo(host=endpoint.host, port=endpoint.port, user=user, dbname=dbname), *args]
    if sql is not None:
        argv += ["-c", sql]
    return _run_client(argv, password, timeout)


def pgbench(endpoint, args, user="app_md5", dbname="parlant", password=None, timeout=120):
    """Runs pgbench -h/-p/-U against endpoint (a PgServer or Pooler) with PGPASSWORD set."""
    if password is None:
        password = PASSWORDS.get(user)
    argv = [PGBENCH, "-h", endpoint.host, "-p", str(endpoint.port), "-U", user, *[str(a) for a in args], dbname]
    return _run_client(argv, password, timeout)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL


class PgServer:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1:<port>, owned by the OS user postgres."""

    host = LOCALHOST

    def __init__(self, basedir):
        self.basedir = basedir
        self.datadir = os.path.join(basedir, "data")
        self.sockdir = basedir
        self.logfile = os.path.join(basedir, "postgresql.log")
        self.port = free_port()
        self.pid = None

    def _run(self, argv, timeout=120):
        p = subprocess.run(as_postgres(argv), cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{argv!r} failed with {p.returncode}:\n{p.stdout.decode()}\n{p.stderr.decode()}\n"
                               f"{read_text(self.logfile)[-4000:]}")
        return p

    def init(self):
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(f"""
# parley integration tests
listen_addresses = '{LOCALHOST}'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
password_encryption = 'scram-sha-256'
logging_collector = off
log_connections = on
""")
        hba = "\n".join([
            "# TYPE  DATABASE USER        ADDRESS        METHOD",
            "local   all      all                        trust",
            f"host    all      postgres    {LOCALHOST}/32   trust",
            f"host    all      app_md5     {LOCALHOST}/32   md5",
            f"host    all      app_scram   {LOCALHOST}/32   scram-sha-256",
            f"host    all      app_plain   {LOCALHOST}/32   password",
            f"host    all      app_trust   {LOCALHOST}/32   trust",
            f"host    all      all         {LOCALHOST}/32   scram-sha-256",
            "",
        ])
        write_file(os.path.join(self.datadir, "pg_hba.conf"), hba, 0o600)

    def start(self):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60",
                   "start"])
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self):
        """Immediate stop through pg_ctl (it signals the postmaster by the pid in postmaster.pid); SIGKILL by pid
        if that fails."""
        if self.pid is None:
            return
        try:
            self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-m", "immediate", "-w", "-t", "30",
                       "stop"])
        except Exception:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid = None

    def dsn(self, user="postgres", dbname="parlant", password=None, **extra):
        if password is None:
            password = PASSWORDS.get(user)
        return conninfo(host=self.host, port=self.port, user=user, dbname=dbname, password=password,
                        connect_timeout=10, sslmode="disable", **extra)

    def connect(self, user="postgres", dbname="parlant", password=None, autocommit=True, **kw):
        return psycopg.connect(self.dsn(user, dbname, password), autocommit=autocommit, **kw)

    def query(self, sql, params=None, dbname="parlant"):
        """Rows of sql, run directly (not through the pooler) as the superuser."""
        with self.connect(dbname=dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, sql, params=None, dbname="parlant"):
        return self.query(sql, params, dbname)[0][0]

    def log_size(self):
        try:
            return os.path.getsize(self.logfile)
        except OSError:
            return 0

    def log_since(self, offset):
        """PostgreSQL's log from byte offset on (see log_size())."""
        with open(self.logfile, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def scram_secret(self, user):
        return self.scalar("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,), dbname="postgres")

    def backends(self, user, dbname="parlant"):
        """(pid, state, xact_start) of the client backends of user in dbname."""
        return self.query("SELECT pid, state, xact_start FROM pg_stat_activity "
                          "WHERE usename = %s AND datname = %s AND backend_type = 'client backend'",
                          (user, dbname))

    def backend_count(self, user, dbname="parlant"):
        return len(self.backends(user, dbname))

    def wait_backends(self, user, pred, timeout=10, dbname="parlant", what=None):
        """Waits until pred(number of backends of user) is true; returns that number."""
        last = []

        def check():
            n = self.backend_count(user, dbname)
            last[:] = [n]
            return pred(n)

        try:
            wait_until(check, timeout, interval=0.1, what=what or f"backends of {user}")
        except AssertionError as e:
            raise AssertionError(f"{e} (last count: {last[0] if last else '?'})") from None
        return last[0]

    def setup_roles_and_db(self, srcdir):
        with self.connect(dbname="postgres") as conn:
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORDS['postgres']}'")
            conn.execute(f"CREATE ROLE app_md5 LOGIN PASSWORD '{PASSWORDS['app_md5']}'")
            conn.execute("SET password_encryption = 'scram-sha-256'")
            for role in ("app_scram", "app_plain", "app_trust", "app_badsrv"):
                conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORDS[role]}'")
            conn.execute("CREATE DATABASE parlant OWNER postgres")
        schema = os.path.join(srcdir, "contrib", "parlant", "schema.sql")
        if os.path.exists(schema):
            r = psql(self, None, user="postgres", args=["-q", "-f", schema])
            if r.rc != 0:
                raise RuntimeError(f"loading {schema} failed: {r}")
        roles = ", ".join(APP_ROLES)
        with self.connect() as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g")
            conn.execute(f"GRANT ALL ON SCHEMA public TO {roles}")
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {roles}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {roles}")
            conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO {roles}")
            conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public "
                         f"GRANT ALL ON SEQUENCES TO {roles}")


# ---------------------------------------------------------------------------------------------------------------
# The pooler under test


@contextlib.contextmanager
def running_pg(tmp_base, prefix, prepare=None):
    """A PostgreSQL of its own in a new directory under tmp_base: initialized, prepare(server) applied (to change
    its files before it starts), started and given the Parlant roles and database; stopped by pid on exit. If it
    fails to come up, the tail of its log is printed."""
    server = PgServer(make_owned_dir(tmp_base, prefix))
    try:
        server.init()
        if prepare:
            prepare(server)
        server.start()
        server.setup_roles_and_db(SRCDIR)
    except BaseException:
        print(read_text(server.logfile)[-8000:])
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


class Target:
    """Which pooler binary the tests run: parley (name "parley") or PgBouncer (name "pgbouncer").
    Compares equal to its name, so tests can write `if target == "parley":`."""

    def __init__(self):
        self.name = os.environ.get("PARLEY_TEST_TARGET", "parley").strip().lower() or "parley"
        if self.name not in ("parley", "pgbouncer"):
            raise RuntimeError(f"PARLEY_TEST_TARGET must be parley or pgbouncer, not {self.name!r}")
        if self.name == "pgbouncer":
            self.binary = PGBOUNCER
            self.as_pg = True
        else:
            self.binary = os.path.abspath(os.environ.get("PARLEY_BIN") or os.path.join(SRCDIR, "parley"))
            # Run as postgres when root (like PgBouncer must), unless postgres cannot execute the binary.
            self.as_pg = IS_ROOT and subprocess.run(as_postgres(["test", "-x", self.binary]), cwd="/").returncode == 0

    @property
    def is_parley(self):
        return self.name == "parley"

    @property
    def is_pgbouncer(self):
        return self.name == "pgbouncer"

    def __eq__(self, other):
        if isinstance(other, Target):
            return self.name == other.name
        return self.name == other

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"Target({self.name}, {self.binary})"

    def check_binary(self):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.name} binary {self.binary} is missing or not executable "
                               f"(set PARLEY_BIN, or PARLEY_TEST_TARGET=pgbouncer)")

    def run(self, args, cwd, timeout=30):
        """Runs the binary once (e.g. -V, or a config that must fail) and returns a Result."""
        p = subprocess.run([self.binary, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, **popen_user_kwargs(self.as_pg))
        return Result([self.binary, *args], p.returncode, p.stdout.decode("utf-8", "replace"),
                      p.stderr.decode("utf-8", "replace"))


class Pooler:
    """One pooler process (parley or PgBouncer) with its own directory, config, auth_file, logs and port."""

    host = LOCALHOST

    def __init__(self, target, pg, workdir, settings=None, parlant_params="", databases_extra=(), users_extra=(),
                 userlist_extra=None):
        self.target = target
        self.pg = pg
        self.workdir = workdir
        self.port = free_port()
        self.config_path = os.path.join(workdir, "parley.ini")
        self.log_path = os.path.join(workdir, "parley.log")
        self.out_path = os.path.join(workdir, "parley.out")
        self.pid_path = os.path.join(workdir, "parley.pid")
        self.auth_file = os.path.join(workdir, "userlist.txt")
        self.proc = None
        self.expected_exit = False   # set when the test itself stops or signals the process to exit
        self.killed = False          # set when the harness had to SIGKILL it
        self.settings = {
            "listen_addr": LOCALHOST,
            "listen_port": self.port,
            "unix_socket_dir": workdir,
            "logfile": self.log_path,
            "pidfile": self.pid_path,
            "auth_type": "md5",
            "auth_file": self.auth_file,
            "admin_users": "postgres",
            "stats_users": "postgres",
            "pool_mode": "session",
        }
        self.parlant_params = parlant_params
        self.databases_extra = list(databases_extra)
        self.users_extra = list(users_extra)
        self.userlist_extra = dict(userlist_extra or {})  # user -> secret (None: leave the user out)
        self.extra_config = ""  # raw text appended to the config (e.g. a [cache] section)
        if settings:
            self._merge(settings)
        self.write_userlist()
        self.write_config()

    # -- files

    def _merge(self, settings):
        for k, v in settings.items():
            if k == "parlant_params":
                self.parlant_params = v
            elif k == "databases_extra":
                self.databases_extra = list(v)
            elif k == "users_extra":
                self.users_extra = list(v)
            elif k == "extra_config":
                self.extra_config = v
            elif v is None:
                self.settings.pop(k, None)
            else:
                self.settings[k] = v

    def userlist_entries(self):
        entries = {
            "app_md5": md5_secret("app_md5", PASSWORDS["app_md5"]),
            "app_scram": self.pg.scram_secret("app_scram"),
            "app_plain": PASSWORDS["app_plain"],
            "app_trust": PASSWORDS["app_trust"],
            "postgres": PASSWORDS["postgres"],
            "app_badsrv": BADSRV_USERLIST_PASSWORD,
        }
        entries.update(self.userlist_extra)
        return {u: s for u, s in entries.items() if s is not None}

    def write_userlist(self):
        lines = ['"%s" "%s"' % (u.replace('"', '""'), s.replace('"', '""'))
                 for u, s in self.userlist_entries().items()]
        write_file(self.auth_file, "\n".join(lines) + "\n", 0o600)

    def config_text(self):
        lines = ["; written by tests/integration/harness.py", "[pgbouncer]"]
        for k, v in self.settings.items():
            lines.append(f"{k} = {v}")
        lines += ["", "[databases]",
                  f"parlant = host={self.pg.host} port={self.pg.port} dbname=parlant {self.parlant_params}".rstrip()]
        lines += self.databases_extra
        if self.users_extra:
            lines += ["", "[users]"] + self.users_extra
        if self.extra_config:
            lines += ["", self.extra_config.strip()]
        return "\n".join(lines) + "\n"

    def write_config(self, **settings):
        """Merges settings into the current ones (None removes a key; parlant_params, databases_extra and
        users_extra replace those parts) and rewrites the config file in place. Does not signal the process."""
        self._merge(settings)
        write_file(self.config_path, self.config_text(), 0o644)

    def write_raw_config(self, text):
        write_file(self.config_path, text, 0o644)

    # -- process

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10, preexec_fn=None):
        """Starts the pooler and waits until it accepts connections. preexec_fn runs in the child before exec (after
        the switch to postgres), e.g. to lower a resource limit."""
        self.target.check_binary()
        self.expected_exit = False
        out = open(self.out_path, "ab")
        env = dict(os.environ)
        env["HOME"] = self.workdir
        try:
            self.proc = subprocess.Popen([self.target.binary, self.config_path], cwd=self.workdir,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=preexec_fn,
                                         **popen_user_kwargs(self.target.as_pg))
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.target.name} exited with {self.proc.returncode} before listening on "
                                     f"port {self.port}:\n{self.log_text()}")
            if port_accepts(self.host, self.port):
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.target.name} did not accept connections on port {self.port} "
                                     f"within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        """Sends sig to the pooler by pid. SIGINT, SIGTERM and SIGQUIT mark the exit as expected."""
        if sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGKILL):
            self.expected_exit = True
        os.kill(self.proc.pid, sig)

    def reload(self):
        self.signal(signal.SIGHUP)

    def wait_exit(self, timeout):
        """The exit status once the process has exited, or None after timeout seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5):
        """SIGTERM by pid, then SIGKILL after timeout seconds. Returns the exit status."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self.killed = True
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    # -- output

    def log_text(self):
        """The logfile followed by what the process wrote to stdout/stderr."""
        return (f"===== {self.log_path} =====\n{read_text(self.log_path)}"
                f"===== stdout/stderr ({self.out_path}) =====\n{read_text(self.out_path)}")

    def problems(self):
        """Reasons this pooler counts as having crashed (empty list when it did not)."""
        found = []
        rc = self.proc.returncode if self.proc else None
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            found.append(f"{self.target.name} died by signal {signal.Signals(-rc).name}")
        if rc is not None and not self.expected_exit:
            found.append(f"{self.target.name} exited on its own with status {rc}")
        text = read_text(self.log_path) + read_text(self.out_path)
        for pat in SANITIZER_PATTERNS:
            if pat in text:
                found.append(f"{pat!r} in its output")
        return found

    # -- clients

    def dsn(self, user="app_md5", dbname="parlant", password=None, **extra):
        """libpq conninfo for a client of the pooler; password defaults to the user's real password."""
        if password is None:
            password = PASSWORDS.get(user)
        extra.setdefault("connect_timeout", 10)
        extra.setdefault("sslmode", "disable")
        return conninfo(host=self.host, port=self.port, user=user, dbname=dbname, password=password, **extra)

    def connect(self, user="app_md5", dbname="parlant", password=None, autocommit=True, prepare_threshold=None,
                **kw):
        """A psycopg 3 connection through the pooler. Automatic server-side prepared statements are off unless
        prepare_threshold is given (named statements do not survive transaction pooling)."""
        conn = psycopg.connect(self.dsn(user, dbname, password), autocommit=autocommit, **kw)
        conn.prepare_threshold = prepare_threshold
        return conn

    def wire(self, timeout=10):
        return Wire(self.host, self.port, timeout)


# ---------------------------------------------------------------------------------------------------------------
# Raw wire protocol


PROTOCOL_3 = 196608
SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102


def startup_packet(user, database, protocol=PROTOCOL_3, **params):
    body = struct.pack("!I", protocol)
    for k, v in (("user", user), ("database", database), *params.items()):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(mtype, payload=b""):
    return mtype + struct.pack("!I", len(payload) + 4) + payload


def bind_message(stmt, params=(), portal=""):
    """A Bind of statement stmt to portal with text parameters (None for NULL) and text results."""
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!HH", 0, len(params))
    for v in params:
        if v is None:
            body += struct.pack("!i", -1)
        else:
            b = str(v).encode()
            body += struct.pack("!i", len(b)) + b
    return message(b"B", body + struct.pack("!H", 0))


def parse_error_fields(payload):
    """ErrorResponse/NoticeResponse payload -> {field char: text}, e.g. {'S': 'FATAL', 'C': '08P01', 'M': ...}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class WireError(Exception):
    """An ErrorResponse from the other end (fields: dict of its fields)."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('S')} {fields.get('C')}: {fields.get('M')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


class Wire:
    """A minimal blocking PostgreSQL protocol client on a raw socket, for what libpq will not send."""

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.closed_by_peer = False
        self.auth_requests = []  # authentication request codes seen by login(): 0 ok, 3 cleartext, 5 md5, 10 SASL
        self.negotiate = None  # login(): payload of a NegotiateProtocolVersion ('v'), if one came

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        """Sends data; returns False when the peer already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed_by_peer = True
            return False
        self.buf += data
        return True

    def read_bytes(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed by peer")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_message(self):
        """(type byte, payload) of the next message; EOFError when the peer closed the connection."""
        header = self.read_bytes(5)
        mtype, length = header[:1], struct.unpack("!I", header[1:])[0]
        return mtype, self.read_bytes(length - 4)

    def read_until_closed(self, timeout=5):
        """Reads messages until the peer closes the connection. Returns (messages, closed): closed is False when
        the connection was still open after timeout seconds."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return msgs, False
            self.sock.settimeout(remaining)
            try:
                msgs.append(self.read_message())
            except EOFError:
                return msgs, True
            except (socket.timeout, TimeoutError):
                return msgs, False
            except OSError:
                return msgs, True

    @staticmethod
    def errors(msgs):
        """Fields of the ErrorResponses among msgs."""
        return [parse_error_fields(p) for t, p in msgs if t == b"E"]

    def startup(self, user, database, **params):
        self.send(startup_packet(user, database, **params))

    def login(self, user, password=None, database="parlant", **params):
        """Startup and authentication (cleartext, md5 or SCRAM-SHA-256) up to ReadyForQuery. Returns the messages
        after AuthenticationOk (ParameterStatus, BackendKeyData, ReadyForQuery). Raises WireError."""
        if password is None:
            password = PASSWORDS.get(user, "")
        self.startup(user, database, **params)
        scram = None
        while True:
            mtype, payload = self.read_message()
            if mtype == b"E":
                raise WireError(parse_error_fields(payload))
            if mtype == b"v" and self.negotiate is None and not self.auth_requests:
                self.negotiate = payload
                continue
            if mtype != b"R":
                raise AssertionError(f"unexpected message {mtype!r} during authentication")
            code = struct.unpack("!I", payload[:4])[0]
            self.auth_requests.append(code)
            if code == 0:
                break
            elif code == 3:
                self.send(message(b"p", password.encode() + b"\0"))
            elif code == 5:
                salt = payload[4:8]
                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                self.send(message(b"p", b"md5" + hashlib.md5(inner + salt).hexdigest().encode() + b"\0"))
            elif code == 10:
                mechs = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechs:
                    raise AssertionError(f"no supported SASL mechanism in {mechs!r}")
                scram = ScramClient(password)
                first = scram.client_first().encode()
                self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
            elif code == 11:
                self.send(message(b"p", scram.client_final(payload[4:].decode()).encode()))
            elif code == 12:
                scram.verify_server_final(payload[4:].decode())
            else:
                raise AssertionError(f"unsupported authentication request {code}")
        msgs = []
        while True:
            mtype, payload = self.read_message()
            if mtype == b"E":
                raise WireError(parse_error_fields(payload))
            msgs.append((mtype, payload))
            if mtype == b"Z":
                return msgs

    def query(self, sql):
        """Simple-protocol query; returns the messages up to and including ReadyForQuery."""
        self.send(message(b"Q", sql.encode() + b"\0"))
        msgs = []
        while True:
            mtype, payload = self.read_message()
            msgs.append((mtype, payload))
            if mtype == b"Z":
                return msgs

    @staticmethod
    def row_dicts(msgs):
        """The DataRows among msgs as dicts keyed by the column names of their RowDescription."""
        cols = []
        for mtype, payload in msgs:
            if mtype == b"T":
                off = 2
                for _ in range(struct.unpack("!H", payload[:2])[0]):
                    end = payload.index(b"\0", off)
                    cols.append(payload[off:end].decode())
                    off = end + 1 + 18  # table oid, attnum, type oid, typlen, typmod, format
        return [dict(zip(cols, r)) for r in Wire.data_rows(msgs)]

    @staticmethod
    def data_rows(msgs):
        """Text values of the DataRow messages among msgs, as lists of str/None."""
        rows = []
        for mtype, p in msgs:
            if mtype != b"D":
                continue
            n = struct.unpack("!H", p[:2])[0]
            off, row = 2, []
            for _ in range(n):
                ln = struct.unpack("!i", p[off:off + 4])[0]
                off += 4
                if ln < 0:
                    row.append(None)
                else:
                    row.append(p[off:off + ln].decode())
                    off += ln
            rows.append(row)
        return rows


def console_rows(pooler, sql, user="postgres"):
    """Rows of an admin console command as dicts (column name -> text); fails the test on an ErrorResponse."""
    with Wire(pooler.host, pooler.port) as w:
        w.login(user, database="pgbouncer")
        msgs = w.query(sql)
        errs = Wire.errors(msgs)
        assert not errs, errs
        return Wire.row_dicts(msgs)


class ScramClient:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) as libpq does it: no channel binding, empty user name."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_signature = None

    def client_first(self):
        return "n,," + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise AssertionError("server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        client_sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode()
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify_server_final(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        if attrs.get("v") != self.server_signature:
            raise AssertionError(f"bad SCRAM server signature in {server_final!r}")


def wire_login_error(endpoint, user, password=None, database="parlant", timeout=10):
    """Logs in over a raw socket and returns the WireError it fails with (AssertionError if the login succeeds)."""
    with Wire(endpoint.host, endpoint.port, timeout) as w:
        try:
            w.login(user, password, database)
        except WireError as e:
            return e
        except EOFError:
            raise AssertionError(f"login as {user} was closed without an ErrorResponse")
    raise AssertionError(f"login as {user} with password {password!r} unexpectedly succeeded")

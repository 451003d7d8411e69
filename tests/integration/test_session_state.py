"""Session state in transaction mode: a client's SET search_path / TimeZone / application_name follow it to whichever
server it gets (track_extra_parameters), with transaction semantics (rolled back SETs are not restored), RESET /
RESET ALL / DISCARD ALL; session-level features that break in transaction mode answer 0A000 (transaction_unsafe)
and the connection stays usable; session mode is unaffected."""

import psycopg
import pytest

from harness import WireError, message, read_text

DEFAULT_PATH = '"$user", public'

# simple: psycopg's ClientCursor sends Query messages (psql, psycopg2 style); extended: Parse/Bind/Execute.
PROTOCOLS = ["simple", "extended"]


class Client:
    """A psycopg connection that sends every statement in one protocol: simple (Query messages, through psycopg's
    ClientCursor, as psql or psycopg2) or extended (Parse/Bind/Execute: binary results force it)."""

    def __init__(self, conn, protocol):
        self.conn, self.binary = conn, protocol == "extended"

    def execute(self, sql):
        return self.conn.execute(sql, binary=self.binary)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.close()


def connect(p, protocol="simple", **kw):
    if protocol == "simple":
        kw["cursor_factory"] = psycopg.ClientCursor
    return Client(p.connect(**kw), protocol)


def one(conn, sql):
    return conn.execute(sql).fetchone()[0]


def settings(conn):
    return (one(conn, "SHOW search_path"), one(conn, "SHOW TimeZone"), one(conn, "SHOW application_name"),
            one(conn, "SHOW statement_timeout"))


def backend(conn):
    return one(conn, "SELECT pg_backend_pid()")


@pytest.fixture
def txpool(parley, target):
    if target != "parley":
        pytest.skip("SET tracking of unreported parameters and transaction_unsafe are parley features")
    return parley(pool_mode="transaction", default_pool_size=1,
                  track_extra_parameters="IntervalStyle, search_path, statement_timeout")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_client_sees_its_own_settings_on_a_shared_server(txpool, protocol):
    with connect(txpool, protocol) as a, connect(txpool, protocol) as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        a.execute("SET search_path TO pg_catalog, public")
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        a.execute("SET application_name TO 'client_a'")
        a.execute("SET SESSION statement_timeout = '7s'")
        b.execute("SET search_path = public")
        b.execute("SET TIME ZONE 'America/New_York'")
        b.execute("SET application_name = 'client_b'")
        for _ in range(3):
            assert settings(a) == ("pg_catalog, public", "Asia/Tokyo", "client_a", "7s")
            assert settings(b) == ("public", "America/New_York", "client_b", "0")
        # a client that never SET anything gets the defaults, whoever used the server before
        with connect(txpool, protocol) as c:
            assert one(c, "SHOW search_path") == DEFAULT_PATH
            assert one(c, "SHOW statement_timeout") == "0"
            assert settings(a)[0] == "pg_catalog, public"
            assert one(c, "SHOW search_path") == DEFAULT_PATH


def test_multi_statement_and_quoted_values(txpool):
    with connect(txpool) as a, connect(txpool) as b:
        a.execute("SET search_path TO 'x;y', \"Odd\"\"Name\", public; SELECT 1")
        b.execute("SET search_path TO public")
        assert one(a, "SHOW search_path") == '"x;y", "Odd""Name", public'
        a.execute("SET search_path = E'a\\'b', $q$c;d$q$ /* c1 */, public -- trailing comment")
        b.execute("SET search_path TO public")
        assert one(a, "SHOW search_path") == '"a\'b", "c;d", public'
        a.execute("/* comment */ SET SCHEMA 'pg_catalog'")
        assert one(b, "SHOW search_path") == "public"
        assert one(a, "SHOW search_path") == "pg_catalog"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rolled_back_set_is_not_restored(txpool, protocol):
    with connect(txpool, protocol) as a, connect(txpool, protocol) as b:
        a.execute("SET search_path TO public")
        a.execute("BEGIN")
        a.execute("SET search_path TO pg_catalog")
        assert one(a, "SHOW search_path") == "pg_catalog"
        a.execute("ROLLBACK")
        b.execute("SET search_path TO pg_catalog, public")
        assert one(a, "SHOW search_path") == "public"

        # a transaction that failed is rolled back too, even when the client says COMMIT
        a.execute("BEGIN")
        a.execute("SET search_path TO pg_catalog")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        a.execute("COMMIT")
        b.execute("SET search_path TO pg_catalog, public")
        assert one(a, "SHOW search_path") == "public"

        # SET LOCAL ends with its transaction
        a.execute("BEGIN")
        a.execute("SET LOCAL search_path TO pg_catalog")
        a.execute("COMMIT")
        b.execute("SET search_path TO pg_catalog, public")
        assert one(a, "SHOW search_path") == "public"

        # a committed transaction block keeps its SET
        a.execute("BEGIN")
        a.execute("SET search_path TO pg_catalog")
        a.execute("COMMIT")
        b.execute("SET search_path TO public")
        assert one(a, "SHOW search_path") == "pg_catalog"


def test_rollback_inside_one_query(txpool):
    with connect(txpool) as a, connect(txpool) as b:
        a.execute("BEGIN; SET search_path TO pg_catalog; ROLLBACK; SET statement_timeout = '3s'")
        b.execute("SET search_path TO public; SET statement_timeout = '9s'")
        assert one(a, "SHOW search_path") == DEFAULT_PATH
        assert one(a, "SHOW statement_timeout") == "3s"
        # an error anywhere in an implicit transaction undoes it all
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SET statement_timeout = '4s'; SELECT 1/0")
        assert one(b, "SHOW statement_timeout") == "9s"
        assert one(a, "SHOW statement_timeout") == "3s"


def test_pipelined_rollback_undoes_an_earlier_request(txpool):
    """BEGIN, SET and ROLLBACK sent as three Query messages in one write: the ROLLBACK is read before the SET's reply
    comes back, and must still undo it."""
    with txpool.wire() as w, connect(txpool) as b:
        w.login("app_md5")
        w.send(b"".join(message(b"Q", q.encode() + b"\0") for q in
                        ("SET search_path TO public", "BEGIN", "SET search_path TO pg_catalog", "ROLLBACK")))
        statuses = []
        while len(statuses) < 4:
            mtype, payload = w.read_message()
            assert mtype != b"E", payload
            if mtype == b"Z":
                statuses.append(payload)
        assert statuses == [b"I", b"T", b"T", b"I"]
        b.execute("SET search_path TO pg_catalog, public")
        assert w.data_rows(w.query("SHOW search_path")) == [["public"]]


@pytest.fixture
def reader_role(pg):
    """A role app_md5 may SET ROLE to."""
    pg.query("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parley_it_reader') THEN "
             "CREATE ROLE parley_it_reader NOLOGIN; END IF; END$$")
    pg.query("GRANT parley_it_reader TO app_md5")
    return "parley_it_reader"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_role_follows_the_client_and_does_not_leak_to_the_next(txpool, pg, reader_role, protocol):
    """SET ROLE in transaction mode: the role goes with the client to whichever server it gets, and a client that
    did not set it runs as the login user even on the server where another client did (it used to inherit the
    role). RESET ALL keeps the role and RESET ROLE / SET ROLE NONE / DISCARD ALL drop it, as in PostgreSQL."""
    with connect(txpool, protocol) as a, connect(txpool, protocol) as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        a.execute(f"SET ROLE {reader_role}")
        for _ in range(2):
            assert one(b, "SELECT current_user") == "app_md5"
            assert one(a, "SELECT current_user") == reader_role
        a.execute("SET search_path TO pg_catalog; RESET ALL" if protocol == "simple" else "RESET ALL")
        assert one(b, "SELECT current_user") == "app_md5"
        assert one(a, "SELECT current_user") == reader_role
        for reset in ("RESET ROLE", "SET ROLE NONE", "DISCARD ALL"):
            a.execute(f"SET role TO '{reader_role}'")
            assert one(b, "SELECT current_user") == "app_md5"
            assert one(a, "SELECT current_user") == reader_role
            a.execute(reset)
            assert one(a, "SELECT current_user") == "app_md5", reset
            assert one(b, "SELECT current_user") == "app_md5", reset
        # a SET ROLE that is rolled back is not restored; one that fails is not either
        a.execute("BEGIN")
        a.execute(f"SET ROLE {reader_role}")
        a.execute("ROLLBACK")
        assert one(b, "SELECT current_user") == "app_md5"
        assert one(a, "SELECT current_user") == "app_md5"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("SET ROLE postgres")
        assert one(b, "SELECT current_user") == "app_md5"
        assert one(a, "SELECT current_user") == "app_md5"
    # the same statements straight to PostgreSQL give the same answers (RESET ALL keeps the role there too)
    with psycopg.connect(pg.dsn("app_md5"), autocommit=True) as d:
        d.execute(f"SET ROLE {reader_role}")
        d.execute("RESET ALL")
        assert d.execute("SELECT current_user").fetchone()[0] == reader_role
        d.execute("SET ROLE NONE")
        assert d.execute("SELECT current_user").fetchone()[0] == "app_md5"


SA_USER, SA_OTHER, SA_MIXED = "parley_it_sa", "parley_it_sa_other", 'Parley "SA" Mixed'
SUPER = ("postgres", "postgres")


def who(conn):
    return tuple(conn.execute("SELECT session_user, current_user").fetchone())


def ident(name):
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture
def sa_users(pg, reader_role):
    """Users a superuser client may SET SESSION AUTHORIZATION to: two that may SET ROLE to reader_role, and one whose
    name needs quoting."""
    for name in (SA_USER, SA_OTHER, SA_MIXED):
        pg.query(f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                 f"CREATE ROLE {ident(name)} NOLOGIN; END IF; END$$")
    pg.query(f"GRANT {reader_role} TO {SA_USER}, {SA_OTHER}")
    return reader_role


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_session_authorization_follows_the_client_and_does_not_leak_to_the_next(txpool, sa_users, protocol):
    """SET SESSION AUTHORIZATION in transaction mode, in each of its spellings: the client keeps its session user on
    whichever server it gets, and a client that did not set it runs as the login user even on the server where
    another client did (it used to inherit it). Each reset form brings the login user back; RESET ALL does not, as in
    PostgreSQL (GUC_NO_RESET_ALL)."""
    forms = [f"SET SESSION AUTHORIZATION {SA_USER}", f"SET SESSION AUTHORIZATION '{SA_USER}'",
             f"SET session_authorization = '{SA_USER}'", f"SET session_authorization TO {SA_USER}",
             f"SET SESSION SESSION AUTHORIZATION {SA_USER}"]
    resets = ["RESET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION DEFAULT", "SET session_authorization TO DEFAULT",
              "RESET session_authorization", "DISCARD ALL"]
    with connect(txpool, protocol, user="postgres") as a, connect(txpool, protocol, user="postgres") as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        for form, reset in zip(forms, resets):
            a.execute(form)
            for _ in range(2):
                assert who(b) == SUPER, form
                assert who(a) == (SA_USER, SA_USER), form
            a.execute(reset)
            assert who(a) == SUPER, reset
            assert who(b) == SUPER, reset
        # RESET ALL keeps it
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        a.execute("SET search_path TO pg_catalog; RESET ALL" if protocol == "simple" else "RESET ALL")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, SA_USER)
        # a name that needs quoting, written as an identifier and as a string
        for form in (f"SET SESSION AUTHORIZATION {ident(SA_MIXED)}", f"SET session_authorization TO {ident(SA_MIXED)}",
                     "SET SESSION AUTHORIZATION '" + SA_MIXED + "'"):
            a.execute(form)
            assert who(b) == SUPER, form
            assert who(a) == (SA_MIXED, SA_MIXED), form
        a.execute("RESET SESSION AUTHORIZATION")
        assert who(b) == SUPER
        assert who(a) == SUPER


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_session_authorization_and_set_role(txpool, pg, sa_users, protocol):
    """Setting or resetting the session authorization drops the role; a SET ROLE after it is restored after it (it
    is checked against the new session user); DISCARD ALL drops both. Compared with PostgreSQL at the end."""
    reader = sa_users
    with connect(txpool, protocol, user="postgres") as a, connect(txpool, protocol, user="postgres") as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        # after SET ROLE: the role is gone
        a.execute(f"SET ROLE {reader}")
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        for _ in range(2):
            assert who(b) == SUPER
            assert who(a) == (SA_USER, SA_USER)
            assert one(a, "SHOW role") == "none"
        # followed by SET ROLE: both follow the client, the role on top of its session user
        a.execute(f"SET ROLE {reader}")
        for _ in range(2):
            assert who(b) == SUPER
            assert who(a) == (SA_USER, reader)
        # another client with another session user and the same role
        b.execute(f"SET SESSION AUTHORIZATION {SA_OTHER}")
        b.execute(f"SET ROLE {reader}")
        for _ in range(2):
            assert who(a) == (SA_USER, reader)
            assert who(b) == (SA_OTHER, reader)
        b.execute("RESET SESSION AUTHORIZATION")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, reader)
        # RESET ALL keeps both
        a.execute("RESET ALL")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, reader)
        # a SET ROLE the session user may not do fails and changes nothing
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("SET ROLE postgres")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, reader)
        # RESET SESSION AUTHORIZATION drops the role too
        a.execute("RESET SESSION AUTHORIZATION")
        assert who(a) == SUPER
        assert one(a, "SHOW role") == "none"
        assert who(b) == SUPER
        # DISCARD ALL drops both
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        a.execute(f"SET ROLE {reader}")
        assert who(b) == SUPER
        a.execute("DISCARD ALL")
        assert who(a) == SUPER
        assert who(b) == SUPER
    # the same statements straight to PostgreSQL give the same answers
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as d:
        d.execute(f"SET ROLE {reader}")
        d.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        assert who(d) == (SA_USER, SA_USER)
        d.execute(f"SET ROLE {reader}")
        d.execute("RESET ALL")
        assert who(d) == (SA_USER, reader)
        d.execute("RESET SESSION AUTHORIZATION")
        assert who(d) == SUPER
        assert d.execute("SHOW role").fetchone()[0] == "none"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_session_authorization_is_transactional(txpool, sa_users, protocol):
    """A SET SESSION AUTHORIZATION counts when its transaction commits: rolled back, failed or SET LOCAL, the client
    is back to its earlier session user (and role) on its next transaction, on whichever server."""
    reader = sa_users

    def back_to_the_role(a, b):
        """b runs as the login user; a is back to its session user with its role, whatever the undone SET did"""
        assert who(b) == SUPER
        assert who(a) == ("postgres", reader)

    with connect(txpool, protocol, user="postgres") as a, connect(txpool, protocol, user="postgres") as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        # committed in a transaction block: it stays with the client, not with the server
        a.execute("BEGIN")
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        a.execute("COMMIT")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, SA_USER)
        a.execute("RESET SESSION AUTHORIZATION")
        a.execute(f"SET ROLE {reader}")
        # rolled back: the client keeps its role
        a.execute("BEGIN")
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        assert who(a) == (SA_USER, SA_USER)
        a.execute("ROLLBACK")
        back_to_the_role(a, b)
        # a failed transaction, even with COMMIT
        a.execute("BEGIN")
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        a.execute("COMMIT")
        back_to_the_role(a, b)
        # SET LOCAL ends with its transaction
        a.execute("BEGIN")
        a.execute(f"SET LOCAL SESSION AUTHORIZATION {SA_USER}")
        assert who(a) == (SA_USER, SA_USER)
        a.execute("COMMIT")
        back_to_the_role(a, b)
        # a SET SESSION AUTHORIZATION that fails is not restored
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            a.execute("SET SESSION AUTHORIZATION parley_it_no_such_user")
        back_to_the_role(a, b)
        # the same, set outside a block: it leaves b alone
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        assert who(b) == SUPER
        assert who(a) == (SA_USER, SA_USER)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_superuser_parameter_is_restored_as_the_login_user(parley, target, sa_users, protocol):
    """A superuser-only parameter (log_statement) a superuser client SET before SET SESSION AUTHORIZATION or SET ROLE
    is restored before them, as the login user, even on a server that has another client's session user or role
    (restored under those, the SET would be refused and the client disconnected)."""
    if target != "parley":
        pytest.skip("SET tracking of unreported parameters is a parley feature")
    p = parley(pool_mode="transaction", default_pool_size=1, track_extra_parameters="search_path, log_statement")
    reader = sa_users
    with connect(p, protocol, user="postgres") as a, connect(p, protocol, user="postgres") as b:
        assert backend(a) == backend(b), "pool of one: both clients must run on the same server connection"
        a.execute("SET log_statement = 'all'")
        a.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        b.execute(f"SET SESSION AUTHORIZATION {SA_OTHER}")
        for _ in range(2):
            assert who(a) == (SA_USER, SA_USER)
            assert one(a, "SHOW log_statement") == "all"
            assert who(b) == (SA_OTHER, SA_OTHER)
            assert one(b, "SHOW log_statement") == "none"
        a.execute("RESET SESSION AUTHORIZATION")
        a.execute(f"SET ROLE {reader}")
        b.execute("RESET SESSION AUTHORIZATION")
        b.execute(f"SET ROLE {reader}")
        for _ in range(2):
            assert who(a) == ("postgres", reader)
            assert one(a, "SHOW log_statement") == "all"
            assert who(b) == ("postgres", reader)
            assert one(b, "SHOW log_statement") == "none"


def test_startup_role_with_another_clients_session_authorization(txpool, sa_users):
    """A role sent in the startup packet is restored after the session authorization another client left on the
    server is reset, and a third client that set neither still runs as the login user afterwards (a startup role
    restored with set_config after that reset was invisible to parley's record of the server)."""
    reader = sa_users
    with txpool.wire() as w, connect(txpool, user="postgres") as b, connect(txpool, user="postgres") as c:
        w.login("postgres", role=reader)
        assert w.data_rows(w.query("SELECT session_user, current_user")) == [["postgres", reader]]
        b.execute(f"SET SESSION AUTHORIZATION {SA_USER}")
        for _ in range(2):
            assert w.data_rows(w.query("SELECT session_user, current_user")) == [["postgres", reader]]
            assert who(c) == SUPER
            assert who(b) == (SA_USER, SA_USER)
    # a session_authorization in the startup packet is still refused (PostgreSQL would ignore it)
    with txpool.wire() as w:
        with pytest.raises(WireError) as ei:
            w.login("postgres", session_authorization=SA_USER)
        assert "unsupported startup parameter: session_authorization" in ei.value.message


def test_startup_parameter_of_a_tracked_setting(txpool):
    """pgjdbc's currentSchema sends search_path in the startup packet (PgBouncer accepts it when tracked)."""
    with txpool.wire() as w, connect(txpool) as b:
        w.login("app_md5", search_path="pg_catalog,public")
        assert w.data_rows(w.query("SHOW search_path")) == [["pg_catalog,public"]]
        b.execute("SET search_path TO public")
        assert w.data_rows(w.query("SHOW search_path")) == [["pg_catalog,public"]]
        assert one(b, "SHOW search_path") == "public"
    # a setting that is not tracked is still refused at login, as before
    with txpool.wire() as w:
        with pytest.raises(WireError) as ei:
            w.login("app_md5", work_mem="8MB")
        assert "unsupported startup parameter: work_mem" in ei.value.message


def test_startup_search_path_is_part_of_the_cache_key(parley, pg, target):
    """Two clients whose startup search_path differ must not share cached results of the same text."""
    if target != "parley":
        pytest.skip("parley's cache")
    pg.query("CREATE SCHEMA IF NOT EXISTS sess_shadow")
    for schema, value in (("public", "from public"), ("sess_shadow", "from shadow")):
        pg.query(f"CREATE TABLE IF NOT EXISTS {schema}.sess_cache_t (id int PRIMARY KEY, v text)")
        pg.query(f"INSERT INTO {schema}.sess_cache_t VALUES (1, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                 (value,))
        pg.query(f"GRANT USAGE ON SCHEMA {schema} TO app_md5")
        pg.query(f"GRANT SELECT ON {schema}.sess_cache_t TO app_md5")
    p = parley(pool_mode="transaction", default_pool_size=2, extra_config="\n[cache]\nsess_cache_t = 300\n")
    sql = "SELECT v FROM sess_cache_t WHERE id = 1"
    with p.wire() as plain, p.wire() as shadow:
        plain.login("app_md5")
        shadow.login("app_md5", search_path="sess_shadow,public")
        assert plain.data_rows(plain.query(sql)) == [["from public"]]
        pg.query("UPDATE public.sess_cache_t SET v = 'changed behind parley' WHERE id = 1")
        assert plain.data_rows(plain.query(sql)) == [["from public"]], "the second read should be a cache hit"
        assert shadow.data_rows(shadow.query(sql)) == [["from shadow"]]
        shadow.query("RESET search_path")
        assert shadow.data_rows(shadow.query(sql)) == [["from public"]]


@pytest.mark.parametrize("reset", ["RESET search_path", "SET search_path TO DEFAULT", "RESET ALL", "DISCARD ALL"])
def test_reset_forms(txpool, reset):
    with connect(txpool) as a, connect(txpool) as b:
        a.execute("SET search_path TO pg_catalog")
        a.execute("SET statement_timeout = '5s'")
        b.execute("SET search_path TO public")
        b.execute("SET statement_timeout = '6s'")
        assert one(a, "SHOW search_path") == "pg_catalog"
        a.execute(reset)
        assert one(b, "SHOW search_path") == "public"
        assert one(a, "SHOW search_path") == DEFAULT_PATH
        everything = reset in ("RESET ALL", "DISCARD ALL")
        assert one(a, "SHOW statement_timeout") == ("0" if everything else "5s")
        assert one(b, "SHOW statement_timeout") == "6s"


def test_untracked_parameter_is_not_restored(parley, target):
    """Parameters outside track_extra_parameters behave as in PgBouncer: whatever the server has."""
    if target != "parley":
        pytest.skip("parley's track_extra_parameters")
    p = parley(pool_mode="transaction", default_pool_size=1, track_extra_parameters="IntervalStyle")
    with connect(p) as a, connect(p) as b:
        a.execute("SET search_path TO pg_catalog")
        b.execute("SET search_path TO public")
        assert one(a, "SHOW search_path") == "public"


UNSAFE = [
    ("LISTEN parley_chan", "LISTEN"),
    ("SELECT pg_advisory_lock(4242)", "advisory lock"),
    ("select pg_try_advisory_lock_shared(1, 2)", "advisory lock"),
    ("PREPARE parley_p AS SELECT 1", "PREPARE"),
    ("DECLARE parley_c CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD"),
    ("SELECT 1; LISTEN parley_chan", "LISTEN"),
]


@pytest.mark.parametrize("sql,feature", UNSAFE)
def test_unsafe_feature_is_refused_and_connection_stays_usable(txpool, pg, sql, feature):
    with connect(txpool) as a:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
            a.execute(sql)
        diag = ei.value.diag
        assert feature in diag.message_primary
        assert "pool_mode=transaction" in diag.message_primary
        assert "pool_mode=session" in diag.message_hint
        assert one(a, "SELECT 41 + 1") == 42
        # inside a transaction block the error aborts it like any failing statement
        a.execute("BEGIN")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            a.execute(sql)
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            a.execute("SELECT 1")
        a.execute("ROLLBACK")
        assert one(a, "SELECT 2") == 2
    # nothing of it reached the server's session
    with pg.connect(dbname="postgres") as direct:
        assert direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0


def test_transaction_scoped_variants_are_allowed(txpool):
    with connect(txpool) as a:
        a.execute("BEGIN")
        assert one(a, "SELECT pg_try_advisory_xact_lock(4242)") is True
        a.execute("DECLARE c CURSOR FOR SELECT 7")
        assert one(a, "FETCH c") == 7
        a.execute("COMMIT")
        a.execute("UNLISTEN *")
        assert one(a, "SELECT 'prepare listen hold' || 'advisory_lock'") == "prepare listen holdadvisory_lock"


@pytest.mark.parametrize("mode", ["warn", "allow"])
def test_warn_and_allow_modes_run_it(parley, target, mode):
    if target != "parley":
        pytest.skip("transaction_unsafe is parley's")
    p = parley(pool_mode="transaction", default_pool_size=1, transaction_unsafe=mode)
    with connect(p) as a:
        assert one(a, "SELECT pg_try_advisory_lock(777)") is True
        assert one(a, "SELECT pg_advisory_unlock(777)") is True
        a.execute("LISTEN parley_chan")
        a.execute("UNLISTEN parley_chan")
    log = read_text(p.log_path)
    warned = "LISTEN in pool_mode=transaction" in log and "advisory lock" in log
    assert warned == (mode == "warn"), log[-2000:]


@pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "named"])
def test_extended_protocol_is_refused_with_its_parameters(txpool, pg, prepare):
    # a driver preparing the call: Parse (unnamed, or named with prepare=True), then Bind with the parameter
    with txpool.connect() as a:
        for attempt in range(2):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
                a.execute("SELECT pg_try_advisory_lock(%s)", (778 + attempt,), prepare=prepare)
            assert "advisory lock" in ei.value.diag.message_primary
            assert "pool_mode=transaction" in ei.value.diag.message_primary
            assert a.execute("SELECT %s::int + 1", (41,), prepare=prepare).fetchone()[0] == 42
    log = read_text(txpool.log_path)
    assert "advisory lock (pg_advisory_lock) (prepared) in pool_mode=transaction (transaction_unsafe = error)" in log
    with pg.connect(dbname="postgres") as direct:
        assert direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0


def test_extended_protocol_warn_mode_runs_it(parley, target):
    if target != "parley":
        pytest.skip("transaction_unsafe is parley's")
    p = parley(pool_mode="transaction", default_pool_size=1, transaction_unsafe="warn")
    with p.connect() as a:
        assert a.execute("SELECT pg_try_advisory_lock(%s)", (779,), prepare=True).fetchone()[0] is True
        assert a.execute("SELECT pg_advisory_unlock(%s)", (779,), prepare=True).fetchone()[0] is True
    assert "advisory lock (pg_advisory_lock) (prepared) in pool_mode=transaction" in read_text(p.log_path)


def test_session_mode_is_unaffected(parley, target):
    p = parley(pool_mode="session", default_pool_size=1)
    with connect(p) as a:
        a.execute("SET search_path TO pg_catalog")
        a.execute("LISTEN parley_chan")
        assert one(a, "SELECT pg_try_advisory_lock(4243)") is True
        a.execute("PREPARE parley_p AS SELECT 5")
        assert one(a, "EXECUTE parley_p") == 5
        assert one(a, "SHOW search_path") == "pg_catalog"
    with connect(p) as b:
        # the session reset (DISCARD ALL) gave the next client a clean session
        assert one(b, "SHOW search_path") == DEFAULT_PATH
        assert one(b, "SELECT count(*) FROM pg_prepared_statements") == 0

"""test_cache.py — the query cache through parley against a real PostgreSQL: byte-identical hits in the simple and
extended protocols, read-your-writes (autocommit, COMMIT, ROLLBACK), key-level invalidation, isolation between users
and session settings, the cases that must never be served from cache, and a concurrent stress test.

How a hit is proven without looking inside parley: a row is changed directly in PostgreSQL (bypassing parley, which
therefore cannot know); a read through parley that still returns the old bytes was answered from the cache. Writes
through parley must then make the new bytes visible at once.
"""

import struct
import threading
import time

import pytest

import harness
from harness import Wire, bind_message, console_rows, message

CACHE_POLICY = """
[cache]
parlant_agent = 300
parlant_tool = 600
parlant_agent_tool = 600
parlant_event = 60
"""

pytestmark = pytest.mark.usefixtures("cache_rows")

_next_id = [900000]


def new_id():
    _next_id[0] += 1
    return _next_id[0]


@pytest.fixture(scope="module")
def cache_rows(pg):
    """A workspace for the agents these tests create (directly in PostgreSQL)."""
    pg.query("INSERT INTO parlant_workspace (id, name) OVERRIDING SYSTEM VALUE VALUES (900000, 'cache-tests') "
             "ON CONFLICT DO NOTHING")
    return pg


def make_agent(pg, name):
    """An agent named name (agent names are unique per workspace, so set_name_directly/updates use fresh ones)."""
    aid = new_id()
    pg.query("INSERT INTO parlant_workspace (id, name) OVERRIDING SYSTEM VALUE VALUES (%s, %s)", (aid, f"ws{aid}"))
    pg.query("INSERT INTO parlant_agent (id, workspace_id, name, status) OVERRIDING SYSTEM VALUE "
             "VALUES (%s, %s, %s, 'active')", (aid, aid, name))
    return aid


def set_name_directly(pg, aid, name):
    """Changes a row behind parley's back."""
    pg.query("UPDATE parlant_agent SET name = %s WHERE id = %s", (name, aid))


@pytest.fixture
def cached(parley):
    """A parley in transaction mode with the Parlant cache policy."""
    def start(**settings):
        settings.setdefault("pool_mode", "transaction")
        settings.setdefault("default_pool_size", 4)
        settings.setdefault("extra_config", CACHE_POLICY)
        return parley(**settings)
    return start


def wire_login(endpoint, user="app_md5"):
    w = Wire(endpoint.host, endpoint.port)
    w.login(user)
    return w


def raw(msgs):
    """The exact bytes of a list of (type, payload) messages."""
    return b"".join(t + struct.pack("!I", len(p) + 4) + p for t, p in msgs)


def read_until_ready(w):
    msgs = []
    while True:
        t, p = w.read_message()
        msgs.append((t, p))
        if t == b"Z":
            return msgs


def extended(w, sql, params=(), stmt="", describe=True, parse=True):
    """Parse/Bind/Describe/Execute/Sync in one write, the way pgbench -M extended and psycopg send them."""
    out = b""
    if parse:
        out += message(b"P", stmt.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", 0))
    out += bind_message(stmt, params)
    if describe:
        out += message(b"D", b"P\0")
    out += message(b"E", b"\0" + struct.pack("!I", 0)) + message(b"S")
    w.send(out)
    return read_until_ready(w)


def names(msgs):
    return [row[0] for row in Wire.data_rows(msgs)]


def first_read(p, pg, name):
    """A new agent called name, the query for its name, and a client of p that has read it once through p (which
    fills the cache). Returns (agent id, query, client)."""
    aid = make_agent(pg, name)
    sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
    w = wire_login(p)
    assert names(w.query(sql)) == [name]
    return aid, sql, w


AGENT_SQL = "SELECT name, id, status, config, created_at FROM parlant_agent WHERE id = {}"
AGENT_SQL_P = "SELECT name, id, status, config, created_at FROM parlant_agent WHERE id = $1"


# ---------------------------------------------------------------------------------------------------------------
# Hits are byte-identical to PostgreSQL's replies


def test_simple_protocol_hit_is_byte_identical_to_postgres(cached, pg):
    p = cached()
    aid = make_agent(pg, "alpha")
    sql = AGENT_SQL.format(aid)
    direct = wire_login(pg, "app_md5")
    expected = direct.query(sql)
    w = wire_login(p)
    first = w.query(sql)
    set_name_directly(pg, aid, "changed-behind-parleys-back")
    second = w.query(sql)
    assert raw(first) == raw(expected)
    assert raw(second) == raw(expected), "second read was not the cached reply (or not byte-identical)"
    # a fresh connection of the same user shares the entry
    w2 = wire_login(p)
    assert raw(w2.query(sql)) == raw(expected)
    for c in (direct, w, w2):
        c.close()


@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
def test_extended_protocol_hit_is_byte_identical_to_postgres(cached, pg, named):
    p = cached()
    aid = make_agent(pg, "beta")
    stmt = "s_agent" if named else ""
    direct = wire_login(pg)
    expected = extended(direct, AGENT_SQL_P, (aid,), stmt=stmt)
    w = wire_login(p)
    first = extended(w, AGENT_SQL_P, (aid,), stmt=stmt)
    expected_bind_only = None
    if named:
        # Bind/Describe/Execute/Sync without Parse is another request (no ParseComplete): it fills its own entry
        expected_bind_only = extended(direct, AGENT_SQL_P, (aid,), stmt=stmt, parse=False)
        extended(w, AGENT_SQL_P, (aid,), stmt=stmt, parse=False)
    set_name_directly(pg, aid, "changed")
    # named: the statement exists now, bind it again without Parse (as pgbench -M prepared does)
    second = extended(w, AGENT_SQL_P, (aid,), stmt=stmt, parse=not named)
    direct_second = extended(direct, AGENT_SQL_P, (aid,), stmt=stmt, parse=not named)
    assert raw(first) == raw(expected)
    assert names(second) == ["beta"], "not served from cache"
    if named:
        # the hit is PostgreSQL's own reply to the same Bind-only request, from before the change
        assert [t for t, _ in second] == [t for t, _ in direct_second] == [b"2", b"T", b"D", b"C", b"Z"]
        assert raw(second) == raw(expected_bind_only)
        assert names(direct_second) == ["changed"]
    else:
        assert raw(second) == raw(expected)
    direct.close()
    w.close()


def test_named_statement_prepared_by_a_cache_hit_works_on_any_server(cached, pg):
    """A client whose Parse was answered from the cache never prepared it on a server: parley must do so when the
    statement is first sent to one (here after its row changed through parley, so the read is a miss)."""
    p = cached()
    aid = make_agent(pg, "gamma")
    w1 = wire_login(p)
    extended(w1, AGENT_SQL_P, (aid,), stmt="s1")           # fills the cache (Parse+Bind+Describe+Execute+Sync)
    w2 = wire_login(p)
    r = extended(w2, AGENT_SQL_P, (aid,), stmt="s1")       # hit: s1 exists only in parley's view of w2
    assert names(r) == ["gamma"]
    w1.query(f"UPDATE parlant_agent SET name = 'gamma2' WHERE id = {aid}")
    r = extended(w2, AGENT_SQL_P, (aid,), stmt="s1", parse=False)
    assert not Wire.errors(r), Wire.errors(r)
    assert names(r) == ["gamma2"]
    w1.close()
    w2.close()


# ---------------------------------------------------------------------------------------------------------------
# Read your writes


def test_write_through_parley_is_visible_at_once_in_autocommit(cached, pg):
    p = cached()
    aid = make_agent(pg, "v1")
    with p.connect() as reader, p.connect() as writer:
        sql = "SELECT name FROM parlant_agent WHERE id = %s"
        assert reader.execute(sql, (aid,)).fetchone()[0] == "v1"
        assert reader.execute(sql, (aid,)).fetchone()[0] == "v1"
        writer.execute("UPDATE parlant_agent SET name = 'v2' WHERE id = %s", (aid,))
        assert reader.execute(sql, (aid,)).fetchone()[0] == "v2"
        w = wire_login(p)
        w.query(f"UPDATE parlant_agent SET name = 'v3' WHERE id = {aid}")
        assert names(w.query(f"SELECT name FROM parlant_agent WHERE id = {aid}")) == ["v3"]
        w.close()


def test_write_in_transaction_visible_after_commit_not_after_rollback(cached, pg):
    p = cached()
    aid, sql, r = first_read(p, pg, "before")
    w = wire_login(p)
    w.query("BEGIN")
    w.query(f"UPDATE parlant_agent SET name = 'rolled-back' WHERE id = {aid}")
    assert names(w.query(sql)) == ["rolled-back"], "inside the transaction the writer sees its own write"
    assert names(r.query(sql)) == ["before"]
    w.query("ROLLBACK")
    assert names(r.query(sql)) == ["before"]
    w.query("BEGIN")
    w.query(f"UPDATE parlant_agent SET name = 'committed' WHERE id = {aid}")
    assert names(r.query(sql)) == ["before"], "an uncommitted write is not visible to others"
    w.query("COMMIT")
    assert names(r.query(sql)) == ["committed"]
    r.close()
    w.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_write_to_a_table_the_cache_has_not_named_yet_still_invalidates_at_commit(cached, pg, protocol):
    """A write to a table no fill has named is recorded without its row values (nothing cached could be narrowed by
    them). If another client caches a read of that table while the write's transaction is open, the commit must
    still remove it: here the table is cacheable only through a [cache_shapes] override, so the first fill is what
    names it, after the write was sent."""
    p = cached(extra_config='[cache_shapes]\n"select name from parlant_agent where id = ?" = 60\n'
                            '"select name from parlant_agent where id = $1" = 60\n')
    aid = make_agent(pg, "before")
    sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
    w = wire_login(p)
    r = wire_login(p)
    w.query("BEGIN")
    if protocol == "simple":
        w.query(f"UPDATE parlant_agent SET name = 'committed' WHERE id = {aid}")
    else:
        assert not Wire.errors(extended(w, "UPDATE parlant_agent SET name = $2 WHERE id = $1", (aid, "committed"),
                                        describe=False))
    assert names(r.query(sql)) == ["before"]
    assert names(r.query(sql)) == ["before"]
    hot = {x["query"]: x for x in console_rows(p, "SHOW SHAPES")}["select name from parlant_agent where id = ?"]
    assert int(hot["hits"]) >= 1, ("the read was not cached while the write was open", hot)
    w.query("COMMIT")
    assert names(r.query(sql)) == ["committed"]
    # and the entry filled after the commit is a cached one (the override works, so the check above was not vacuous)
    set_name_directly(pg, aid, "behind-parley")
    assert names(r.query(sql)) == ["committed"]
    r.close()
    w.close()


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("call", ["SELECT {fn}({aid}, '{v}')", "SELECT * FROM {fn}({aid}, '{v}')"],
                         ids=["select-fn", "select-from-fn"])
def test_a_read_that_calls_a_function_which_writes_invalidates(cached, pg, protocol, call):
    """SELECT of a function parley does not know may write anything (here an UPDATE inside a SQL function): like
    CALL and DO, it counts as a write to every table, or the next read is answered with the old row."""
    pg.query("CREATE OR REPLACE FUNCTION parley_test_rename(i bigint, n text) RETURNS int LANGUAGE sql AS "
             "$$ UPDATE parlant_agent SET name = n WHERE id = i; SELECT 1 $$")
    p = cached()
    aid, sql, w = first_read(p, pg, "before")
    set_name_directly(pg, aid, "behind-parley")
    assert names(w.query(sql)) == ["before"], "the read is not cached: this test would prove nothing"
    text = call.format(fn="parley_test_rename", aid=aid, v="by-function")
    if protocol == "simple":
        assert not Wire.errors(w.query(text))
    else:
        assert not Wire.errors(extended(w, text))
    assert names(w.query(sql)) == ["by-function"]
    w.close()


def test_extended_protocol_write_invalidates(cached, pg):
    p = cached()
    aid = make_agent(pg, "e1")
    r = wire_login(p)
    assert names(extended(r, AGENT_SQL_P, (aid,))) == ["e1"]
    w = wire_login(p)
    res = extended(w, "UPDATE parlant_agent SET name = $2 WHERE id = $1", (aid, "e2"), describe=False)
    assert not Wire.errors(res)
    assert names(extended(r, AGENT_SQL_P, (aid,))) == ["e2"]
    r.close()
    w.close()


def test_key_level_invalidation_keeps_other_keys(cached, pg):
    p = cached()
    a, b = make_agent(pg, "a-old"), make_agent(pg, "b-old")
    r = wire_login(p)
    sql = "SELECT name FROM parlant_agent WHERE id = {}"
    assert names(r.query(sql.format(a))) == ["a-old"]
    assert names(r.query(sql.format(b))) == ["b-old"]
    set_name_directly(pg, a, "a-behind")
    w = wire_login(p)
    res = w.query(f"UPDATE parlant_agent SET status = 'inactive' WHERE id = {b}")
    assert not Wire.errors(res), res
    assert names(r.query(sql.format(a))) == ["a-old"], "a write to agent b dropped agent a's entry"
    assert names(r.query(sql.format(b))) == ["b-old"]  # re-read from PostgreSQL: name unchanged, entry refilled
    w.query(f"UPDATE parlant_agent SET status = 'inactive' WHERE id = {a}")
    assert names(r.query(sql.format(a))) == ["a-behind"]
    # an unpinned write drops every entry of the table
    set_name_directly(pg, b, "b-behind")
    res = w.query(f"UPDATE parlant_agent SET status = 'active' WHERE id IN ({a}, {b})")
    assert not Wire.errors(res), res
    assert names(r.query(sql.format(b))) == ["b-behind"]
    r.close()
    w.close()


def test_insert_invalidates_joined_reads(cached, pg):
    p = cached()
    aid = make_agent(pg, "tools")
    tid = new_id()
    pg.query("INSERT INTO parlant_tool (id, workspace_id, name, display_name, tool_type) OVERRIDING SYSTEM VALUE "
             "VALUES (%s, 900000, %s, 'T', 'sdk')", (tid, f"tool{tid}"))
    sql = ("SELECT t.name, at.priority FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id "
           f"WHERE at.agent_id = {aid} AND at.enabled ORDER BY at.priority")
    r = wire_login(p)
    assert Wire.data_rows(r.query(sql)) == []
    w = wire_login(p)
    res = w.query(f"INSERT INTO parlant_agent_tool (agent_id, tool_id, enabled, priority) VALUES ({aid}, {tid}, true, 1)")
    assert not Wire.errors(res), Wire.errors(res)
    assert Wire.data_rows(r.query(sql)) == [[f"tool{tid}", "1"]]
    w.query(f"UPDATE parlant_tool SET name = 'renamed{tid}' WHERE id = {tid}")
    assert Wire.data_rows(r.query(sql)) == [[f"renamed{tid}", "1"]]
    r.close()
    w.close()


# ---------------------------------------------------------------------------------------------------------------
# Isolation: users and session settings


def test_two_users_never_share_an_entry(cached, pg):
    p = cached()
    aid = make_agent(pg, "private")
    pg.query("REVOKE SELECT ON parlant_agent FROM app_plain")
    try:
        sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
        a = wire_login(p, "app_md5")
        assert names(a.query(sql)) == ["private"]
        assert names(a.query(sql)) == ["private"]
        b = wire_login(p, "app_plain")
        res = b.query(sql)
        errs = Wire.errors(res)
        assert errs and errs[0]["C"] == "42501", res
        a.close()
        b.close()
    finally:
        pg.query("GRANT ALL ON parlant_agent TO app_plain")


def test_search_path_and_timezone_change_the_key(cached, pg):
    aid = make_agent(pg, "public-one")
    pg.query("CREATE SCHEMA IF NOT EXISTS shadow")
    pg.query("CREATE TABLE IF NOT EXISTS shadow.parlant_agent (id bigint, name text, created_at timestamptz)")
    pg.query("GRANT USAGE ON SCHEMA shadow TO app_md5")
    pg.query("GRANT SELECT ON shadow.parlant_agent TO app_md5")
    pg.query("INSERT INTO shadow.parlant_agent VALUES (%s, 'shadow-one', now())", (aid,))
    sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
    p2 = cached(pool_mode="session")
    w = wire_login(p2)
    assert names(w.query(sql)) == ["public-one"]
    w.query("SET search_path = shadow, public")
    assert names(w.query(sql)) == ["shadow-one"]
    w.query("RESET search_path")
    tsql = f"SELECT created_at FROM parlant_agent WHERE id = {aid}"
    w.query("SET TimeZone = 'UTC'")
    utc = Wire.data_rows(w.query(tsql))[0][0]
    w.query("SET TimeZone = 'Asia/Kolkata'")
    ist = Wire.data_rows(w.query(tsql))[0][0]
    assert utc.endswith("+00") and ist.endswith("+05:30"), (utc, ist)
    w.close()


# ---------------------------------------------------------------------------------------------------------------
# Never served from cache


@pytest.mark.parametrize("sql", [
    "SELECT name FROM parlant_agent WHERE id = {} FOR UPDATE",
    "SELECT name, random() < 2 FROM parlant_agent WHERE id = {}",
    "SELECT name, now() IS NOT NULL FROM parlant_agent WHERE id = {}",
    "SELECT name FROM parlant_agent WHERE id = {} AND created_at < clock_timestamp()",
], ids=["for-update", "random", "now", "clock_timestamp"])
def test_not_cacheable_statements_always_reach_postgres(cached, pg, sql):
    p = cached()
    aid = make_agent(pg, "first")
    w = wire_login(p)
    q = sql.format(aid)
    assert names(w.query(q)) == ["first"]
    set_name_directly(pg, aid, "second")
    assert names(w.query(q)) == ["second"]
    w.close()


def test_not_served_inside_explicit_transaction_or_after_set_role(cached, pg):
    p = cached()
    aid, sql, w = first_read(p, pg, "one")
    set_name_directly(pg, aid, "two")
    w.query("BEGIN")
    assert names(w.query(sql)) == ["two"], "served from cache inside a transaction"
    w.query("COMMIT")
    assert names(w.query(sql)) == ["one"], "expected the (stale) cached entry outside the transaction"
    p2 = cached(pool_mode="session")
    s = wire_login(p2, "postgres")
    assert names(s.query(sql)) == ["two"]
    set_name_directly(pg, aid, "three")
    s.query("SET ROLE app_md5")
    assert names(s.query(sql)) == ["three"], "served from cache after SET ROLE"
    s.close()
    w.close()


def test_partial_execute_and_errors_are_not_cached(cached, pg):
    p = cached()
    aid = make_agent(pg, "pe")
    w = wire_login(p)
    # Execute with a row limit: portal suspended, never stored
    bind = b"\0\0" + struct.pack("!HH", 0, 0) + struct.pack("!H", 0)
    w.send(message(b"P", b"\0" + f"SELECT name FROM parlant_agent WHERE id = {aid}".encode() + b"\0\0\0")
           + message(b"B", bind) + message(b"E", b"\0" + struct.pack("!I", 1)) + message(b"S"))
    r = read_until_ready(w)
    assert [t for t, _ in r] == [b"1", b"2", b"D", b"s", b"Z"]
    set_name_directly(pg, aid, "pe2")
    assert names(w.query(f"SELECT name FROM parlant_agent WHERE id = {aid}")) == ["pe2"]
    # an error is passed through and not cached
    bad = "SELECT nosuchcolumn FROM parlant_agent WHERE id = 1"
    for _ in range(2):
        errs = Wire.errors(w.query(bad))
        assert errs and errs[0]["C"] == "42703"
    w.close()


def test_cache_disabled_serves_nothing(cached, pg):
    p = cached(cache_enabled=0)
    aid = make_agent(pg, "off1")
    w = wire_login(p)
    sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
    assert names(w.query(sql)) == ["off1"]
    set_name_directly(pg, aid, "off2")
    assert names(w.query(sql)) == ["off2"]
    w.close()


# ---------------------------------------------------------------------------------------------------------------
# Concurrency


def test_concurrent_readers_never_see_a_value_older_than_a_committed_write(cached, pg):
    """Writers bump a version through parley; a read that starts after a write returned must see at least that
    version. Several reader and writer threads, thousands of operations, simple and extended protocol."""
    p = cached(default_pool_size=6)
    agents = [make_agent(pg, "0") for _ in range(4)]
    committed = {a: 0 for a in agents}
    lock = threading.Lock()
    errors = []
    stop = time.monotonic() + 8

    def writer(idx):
        try:
            with p.connect() as conn:
                v = 0
                while time.monotonic() < stop:
                    v += 1
                    a = agents[(v + idx) % len(agents)]
                    with lock:
                        nv = committed[a] + 1
                        conn.execute("UPDATE parlant_agent SET name = %s WHERE id = %s", (str(nv), a))
                        committed[a] = nv
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"writer: {e!r}")

    reads = [0]

    def reader(idx, extended_protocol):
        try:
            with p.connect() as conn:
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    a = agents[(i * 7 + idx) % len(agents)]
                    with lock:
                        floor = committed[a]
                    if extended_protocol:
                        got = int(conn.execute("SELECT name FROM parlant_agent WHERE id = %s", (a,)).fetchone()[0])
                    else:
                        got = int(conn.execute(f"SELECT name FROM parlant_agent WHERE id = {a}").fetchone()[0])
                    reads[0] += 1
                    if got < floor:
                        errors.append(f"agent {a}: read {got} after version {floor} was committed")
                        return
        except Exception as e:  # noqa: BLE001
            errors.append(f"reader: {e!r}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    threads += [threading.Thread(target=reader, args=(i, i % 2 == 0)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert reads[0] > 500 and sum(committed.values()) > 100, (reads[0], committed)


def test_pgbench_prepared_mode_in_transaction_pooling_runs_without_errors(cached, pgbench_tables):
    p = cached(default_pool_size=3)
    r = harness.pgbench(p, ["-M", "prepared", "-c", "8", "-j", "2", "-t", "200", "-n"])
    assert r.rc == 0, r
    assert "number of failed transactions: 0" in r.out or "failed" not in r.out, r.out
    r = harness.pgbench(p, ["-M", "prepared", "-S", "-c", "8", "-j", "2", "-t", "300", "-n"])
    assert r.rc == 0, r


# ---------------------------------------------------------------------------------------------------------------
# Memory bound and the console's view




def cache_figures(p):
    return {r["key"] if "key" in r else list(r.values())[0]: list(r.values())[1] for r in console_rows(p, "SHOW CACHE")}


def test_memory_stays_under_cache_max_memory(cached, pg):
    limit = 48 * 1024
    p = cached(cache_max_memory="48kB")
    aid = make_agent(pg, "m")
    w = wire_login(p)
    for i in range(400):
        # distinct texts, each a separate entry of a few hundred bytes
        w.query(f"SELECT name, id, {i} AS n, repeat('x', 200) AS pad FROM parlant_agent WHERE id = {aid}")
        if i % 50 == 0:
            f = cache_figures(p)
            assert int(f["bytes"]) <= limit, f
    f = cache_figures(p)
    assert int(f["bytes"]) <= limit, f
    assert int(f["evictions"]) > 0, f
    assert int(f["entries"]) > 10, f
    w.close()


def test_show_shapes_gives_the_reason_a_shape_is_not_cached(cached, pg):
    p = cached()
    aid = make_agent(pg, "why")
    w = wire_login(p)
    w.query(f"SELECT name FROM parlant_agent WHERE id = {aid} FOR UPDATE")
    w.query(f"SELECT count(*) FROM parlant_session WHERE agent_id = {aid}")
    w.query(f"SELECT name FROM parlant_agent WHERE id = {aid}")
    w.query(f"SELECT name FROM parlant_agent WHERE id = {aid}")
    w.close()
    shapes = {r["query"]: r for r in console_rows(p, "SHOW SHAPES")}
    locking = shapes["select name from parlant_agent where id = ? for update"]
    assert "for update" in (locking["last_refusal"] or "").lower(), locking
    unlisted = shapes["select count(*) from parlant_session where agent_id = ?"]
    assert "not listed" in (unlisted["last_refusal"] or ""), unlisted
    hot = shapes["select name from parlant_agent where id = ?"]
    assert int(hot["hits"]) >= 1 and int(hot["misses"]) >= 1 and int(hot["calls"]) >= 2, hot
    # no literal value ever appears in the console's shape text
    assert all(str(aid) not in q for q in shapes), list(shapes)


def test_named_statements_beyond_max_prepared_statements_keep_working(cached, pg):
    """Each server keeps at most max_prepared_statements; parley closes the oldest and prepares it again on use."""
    p = cached(max_prepared_statements=2, default_pool_size=2, cache_enabled=0)
    aid = make_agent(pg, "mps")
    queries = [f"SELECT name, {i} AS n FROM parlant_agent WHERE id = %s" for i in range(6)]
    with p.connect(prepare_threshold=0) as a, p.connect(prepare_threshold=0) as b:
        for rnd in range(5):
            for i, q in enumerate(queries):
                conn = a if (i + rnd) % 2 else b
                assert conn.execute(q, (aid,)).fetchone() == ("mps", i)
        # whichever server answers holds at most 2 of parley's statements, though 6 were used on each
        with p.connect() as c:
            for _ in range(4):
                n = c.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'parley_%'").fetchone()[0]
                assert 1 <= n <= 2, n


def test_differently_spelled_pinned_values_still_invalidate(cached, pg):
    """'0900123' and 900123 are the same bigint: a write pinned to one must drop an entry pinned to the other."""
    p = cached()
    aid = make_agent(pg, "spelled")
    r = wire_login(p)
    sql = f"SELECT name FROM parlant_agent WHERE id = '0{aid}'"
    assert names(r.query(sql)) == ["spelled"]
    assert names(r.query(sql)) == ["spelled"]
    w = wire_login(p)
    res = w.query(f"UPDATE parlant_agent SET name = 'respelled' WHERE id = {aid}.0")
    assert not Wire.errors(res), res
    assert names(r.query(sql)) == ["respelled"]
    r.close()
    w.close()


def test_repeating_a_setting_or_reset_all_keeps_hits(cached, pg):
    """The key holds each unreported setting's last statement, not the history: setting the same value again, or
    RESET ALL back to the defaults, finds the entries filled before."""
    p = cached(pool_mode="session")
    aid = make_agent(pg, "fp")
    w = wire_login(p)
    sql = f"SELECT name FROM parlant_agent WHERE id = {aid}"
    w.query(sql)                                   # miss (defaults)
    w.query("SET search_path = public")
    w.query(sql)                                   # miss (search_path set)
    w.query("SET search_path = public")
    w.query(sql)                                   # hit
    w.query("RESET ALL")
    w.query(sql)                                   # hit on the defaults' entry
    w.query("SET search_path = public; SET extra_float_digits = 1")
    w.query(sql)                                   # miss: another setting
    w.close()
    f = cache_figures(p)
    assert (int(f["misses"]), int(f["hits"])) == (3, 2), f


def test_extra_float_digits_from_the_startup_packet_is_applied_and_keyed(cached, pg):
    p = cached()
    sql = "SELECT (0.1::float8 + 0.2::float8) AS x FROM parlant_agent LIMIT 1"
    make_agent(pg, "efd")
    results = {}
    for efd in ("0", "3"):
        w = Wire(p.host, p.port)
        w.login("app_md5", extra_float_digits=efd)
        results[efd] = [Wire.data_rows(w.query(sql))[0][0] for _ in range(2)]
        w.close()
    assert results["0"] == ["0.3", "0.3"], results
    assert results["3"] == ["0.30000000000000004", "0.30000000000000004"], results

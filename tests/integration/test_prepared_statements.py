"""Named prepared statements in transaction mode, checked against PostgreSQL itself: parley renames a client's
statements and prepares them on whichever server runs them, and the client must not be able to tell. Each test sends
the same raw protocol messages (in one write, as a pipelining driver would) directly to PostgreSQL and through
parley, and compares the replies: message types, SQLSTATEs and messages of errors, ReadyForQuery statuses.

The cases: a Parse of a name the client already has (42P05, the rest of the batch skipped, an open transaction
failed), a statement whose Parse failed or was skipped after an earlier error does not exist afterwards (26000), a
Close skipped after an error leaves its statement in place, errors that name a statement name the client's one,
DEALLOCATE ALL / DISCARD ALL that fail leave the statements in place, batches pipelined behind unanswered ones, the
usual flows (Parse/Bind/Execute, Close then Parse again, psycopg's prepare=True) keep working, and random message
sequences give PostgreSQL's replies. The pool has one server, so the clients here share it."""

import random
import struct
import time

import psycopg
import pytest

from harness import Wire, bind_message, message

USER = "app_md5"


# ---------------------------------------------------------------------------------------------------------------
# Frontend messages


def parse(name, sql, types=()):
    return message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", len(types)) +
                   b"".join(struct.pack("!I", t) for t in types))


bind = bind_message


def describe_s(name):
    return message(b"D", b"S" + name.encode() + b"\0")


def describe_p(portal=""):
    return message(b"D", b"P" + portal.encode() + b"\0")


def execute(portal="", max_rows=0):
    return message(b"E", portal.encode() + b"\0" + struct.pack("!I", max_rows))


def close_s(name):
    return message(b"C", b"S" + name.encode() + b"\0")


def query(sql):
    return message(b"Q", sql.encode() + b"\0")


SYNC = message(b"S")


# ---------------------------------------------------------------------------------------------------------------
# Comparing replies


def summary(mtype, payload):
    """What must be equal between PostgreSQL and parley: errors by SQLSTATE and message, ReadyForQuery by status,
    rows and command tags by content, the rest by type."""
    if mtype in (b"E", b"N"):
        fields = {chr(p[0]): p[1:].decode("utf-8", "replace") for p in payload.split(b"\0") if p}
        return (mtype.decode(), fields.get("C"), fields.get("M"))
    if mtype == b"Z":
        return ("Z", payload.decode())
    if mtype == b"C":
        return ("C", payload.rstrip(b"\0").decode())
    if mtype == b"D":
        return ("D", tuple(tuple(r) for r in Wire.data_rows([(mtype, payload)])))
    return (mtype.decode(),)


def exchange(w, data):
    """Sends data in one write and reads the replies up to the ReadyForQuery of its last Sync or Query."""
    expect, off = 0, 0
    while off < len(data):
        if data[off:off + 1] in (b"S", b"Q"):
            expect += 1
        off += 1 + struct.unpack("!I", data[off + 1:off + 5])[0]
    w.send(data)
    out = []
    while expect:
        mtype, payload = w.read_message()
        if mtype in (b"S", b"K"):
            continue  # ParameterStatus / BackendKeyData: not compared (parley may report a setting it restored)
        out.append(summary(mtype, payload))
        if mtype == b"Z":
            expect -= 1
    return out


class Pair:
    """The same client twice: directly connected to PostgreSQL and through parley. send() gives both the same
    bytes and asserts the same replies."""

    def __init__(self, pg, pooler):
        self.direct = Wire(pg.host, pg.port)
        self.direct.login(USER)
        self.pooled = pooler.wire()
        self.pooled.login(USER)

    def send(self, *msgs):
        data = b"".join(msgs)
        want = exchange(self.direct, data)
        got = exchange(self.pooled, data)
        assert got == want, f"\nthrough parley: {got}\nPostgreSQL:     {want}"
        return want

    def close(self):
        self.direct.close()
        self.pooled.close()


@pytest.fixture
def txpool(parley, target):
    if target != "parley":
        pytest.skip("PgBouncer 1.18 does not support named prepared statements in transaction mode")
    return parley(pool_mode="transaction", default_pool_size=1, max_prepared_statements=100)


@pytest.fixture
def pair(pg, txpool):
    """A compared client, and another client of the same pool (sharing its one server) that prepares the same
    names between the steps of a test, so statement names of different clients must not mix."""
    pairs = []
    others = []

    def make():
        p = Pair(pg, txpool)
        pairs.append(p)
        return p

    def other(names=("s1", "s2")):
        w = txpool.wire()
        w.login(USER)
        others.append(w)
        for i, n in enumerate(names):
            r = exchange(w, parse(n, f"SELECT 'other {i}'") + bind(n) + execute() + SYNC)
            assert ("E",) not in [m[:1] for m in r], r
        return w

    make.other = other
    yield make
    for p in pairs:
        p.close()
    for w in others:
        w.close()


def types(replies):
    return [m[0] for m in replies]


# ---------------------------------------------------------------------------------------------------------------
# A Parse of a name that exists


def test_duplicate_parse_is_an_error_and_skips_the_rest_of_the_batch(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    pair.other()
    r = p.send(parse("s1", "SELECT 2"), bind("s1"), execute(), SYNC)
    assert r == [("E", "42P05", 'prepared statement "s1" already exists'), ("Z", "I")]
    # the old definition is still the one that runs
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]


def test_duplicate_parse_in_the_same_batch(pair):
    p = pair()
    r = p.send(parse("s1", "SELECT 1"), parse("s1", "SELECT 1"), bind("s1"), execute(), SYNC,
               bind("s1"), execute(), SYNC)
    assert r[1] == ("E", "42P05", 'prepared statement "s1" already exists')
    assert r[-2:] == [("C", "SELECT 1"), ("Z", "I")]


def test_duplicate_parse_of_a_statement_prepared_in_an_earlier_pipelined_batch(pair):
    p = pair()
    r = p.send(parse("s1", "SELECT 1"), SYNC, parse("s1", "SELECT 2"), SYNC, bind("s1"), execute(), SYNC)
    assert ("E", "42P05", 'prepared statement "s1" already exists') in r


def test_duplicate_parse_with_a_bad_text_reports_the_text_error_first(pair):
    """PostgreSQL parses and analyses the text before it looks at the name."""
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    r = p.send(parse("s1", "SELEC 2"), SYNC)
    assert types(r) == ["E", "Z"] and r[0][1] == "42601"
    r = p.send(parse("s1", "SELECT * FROM no_such_table"), SYNC)
    assert r[0][1] == "42P01"


def test_duplicate_parse_inside_a_transaction_fails_it(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    pair.other()
    assert p.send(query("BEGIN"))[-1] == ("Z", "T")
    r = p.send(parse("s1", "SELECT 2"), SYNC)
    assert r == [("E", "42P05", 'prepared statement "s1" already exists'), ("Z", "E")]
    r = p.send(query("SELECT 1"))
    assert r[0][1] == "25P02" and r[-1] == ("Z", "E")
    r = p.send(bind("s1"), execute(), SYNC)
    assert r[0][1] == "25P02" and r[-1] == ("Z", "E")
    assert p.send(query("ROLLBACK"))[-1] == ("Z", "I")
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]


def test_duplicate_parse_in_a_failed_transaction_is_25P02(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    p.send(query("BEGIN"))
    assert p.send(query("SELECT 1/0"))[-1] == ("Z", "E")
    r = p.send(parse("s1", "SELECT 2"), SYNC)
    assert r[0][1] == "25P02" and r[-1] == ("Z", "E")
    p.send(query("ROLLBACK"))


def test_names_longer_than_63_bytes_are_told_apart_by_their_start(pair):
    """PostgreSQL keys prepared statements on the first 63 bytes of their names."""
    p = pair()
    a = "a" * 63
    p.send(parse(a + "XX", "SELECT 1"), SYNC)
    r = p.send(parse(a + "YY", "SELECT 2"), SYNC)
    assert r[0] == ("E", "42P05", f'prepared statement "{a}YY" already exists')
    r = p.send(bind(a + "ZZ"), execute(), SYNC)
    assert r[1] == ("D", (("1",),))
    assert p.send(close_s(a + "QQ"), SYNC) == [("3",), ("Z", "I")]
    assert p.send(bind(a), execute(), SYNC)[0][1] == "26000"


# ---------------------------------------------------------------------------------------------------------------
# A statement whose Parse failed, or was skipped, does not exist


@pytest.mark.parametrize("bad", ["SELEC 1", "SELECT * FROM no_such_table", "SELECT 1; SELECT 2", "SELECT $2::int"],
                         ids=["syntax", "undefined_table", "two_commands", "parameter_type"])
def test_bind_after_a_failed_parse_says_it_does_not_exist(pair, bad):
    p = pair()
    r = p.send(parse("s1", bad), bind("s1"), execute(), SYNC)
    assert types(r) == ["E", "Z"]
    pair.other()
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("E", "26000", 'prepared statement "s1" does not exist'), ("Z", "I")]
    r = p.send(describe_s("s1"), SYNC)
    assert r[0][1] == "26000"
    # the name is free: a good Parse of it works
    r = p.send(parse("s1", "SELECT 3"), bind("s1"), execute(), SYNC)
    assert r == [("1",), ("2",), ("D", (("3",),)), ("C", "SELECT 1"), ("Z", "I")]


def test_bind_error_names_the_clients_statement(pair):
    """PostgreSQL's Bind errors name the statement: the client's name, not the one parley gave it on the server."""
    p = pair()
    p.send(parse("s1", "SELECT $1::int + $2"), SYNC)
    pair.other()
    r = p.send(bind("s1", (1,)), execute(), SYNC)
    assert r == [("E", "08P01", 'bind message supplies 1 parameters, but prepared statement "s1" requires 2'),
                 ("Z", "I")]
    r = p.send(parse("s2", "SELECT $1::int"), bind("s2"), execute(), SYNC)
    assert r[1] == ("E", "08P01", 'bind message supplies 0 parameters, but prepared statement "s2" requires 1')
    r = p.send(bind("s1", (1, 2)), execute(), SYNC)
    assert r[1] == ("D", (("3",),))


@pytest.mark.parametrize("bad", ["SELEC 1", "SELECT * FROM no_such_table"], ids=["syntax", "undefined_table"])
def test_failed_parse_alone_then_bind(pair, bad):
    """Parse + Sync alone, as libpq's PQprepare sends it."""
    p = pair()
    r = p.send(parse("s1", bad), SYNC)
    assert types(r) == ["E", "Z"]
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("E", "26000", 'prepared statement "s1" does not exist'), ("Z", "I")]


def test_parse_after_an_error_in_the_same_batch_is_skipped(pair):
    p = pair()
    r = p.send(parse("s1", "SELEC 1"), parse("s2", "SELECT 2"), SYNC)
    assert types(r) == ["E", "Z"]
    pair.other()
    r = p.send(bind("s2"), execute(), SYNC)
    assert r == [("E", "26000", 'prepared statement "s2" does not exist'), ("Z", "I")]
    r = p.send(parse("s2", "SELECT 22"), bind("s2"), execute(), SYNC)
    assert r[-2:] == [("C", "SELECT 1"), ("Z", "I")]


def test_parse_skipped_after_a_failed_bind(pair):
    """The skipped Parse is of a text the server already has prepared (for another client): parley would answer it
    itself, but PostgreSQL skipped it."""
    p = pair()
    pair.other(names=("x",))
    r = p.send(bind("nope"), parse("s2", "SELECT 'other 0'"), SYNC)
    assert types(r) == ["E", "Z"]
    r = p.send(bind("s2"), execute(), SYNC)
    assert r[0][1] == "26000"


def test_failed_parse_then_parse_again_in_a_later_pipelined_batch(pair):
    """The second Parse is sent before the first one's error is back: it must succeed."""
    p = pair()
    r = p.send(parse("s1", "SELEC 1"), SYNC, parse("s1", "SELECT 1"), SYNC, bind("s1"), execute(), SYNC,
               describe_s("s1"), SYNC)
    assert types(r) == ["E", "Z", "1", "Z", "2", "D", "C", "Z", "t", "T", "Z"]


def test_bind_in_a_later_pipelined_batch_after_a_failed_parse(pair):
    p = pair()
    r = p.send(parse("s1", "SELECT * FROM no_such_table"), SYNC, bind("s1"), execute(), SYNC)
    assert r[2:] == [("E", "26000", 'prepared statement "s1" does not exist'), ("Z", "I")]


def test_parse_in_a_failed_transaction_is_25P02_and_not_prepared(pair):
    """The text is already prepared on the server (by another client): PostgreSQL still refuses the Parse in a failed
    transaction."""
    p = pair()
    pair.other(names=("x",))
    p.send(query("BEGIN"))
    p.send(query("SELECT 1/0"))
    r = p.send(parse("s2", "SELECT 'other 0'"), SYNC)
    assert r[0][1] == "25P02" and r[-1] == ("Z", "E")
    assert p.send(query("ROLLBACK"))[-1] == ("Z", "I")
    r = p.send(bind("s2"), execute(), SYNC)
    assert r[0][1] == "26000"


def test_rollback_prepared_in_a_failed_transaction(pair):
    """A transaction-ending statement may be prepared in a failed transaction."""
    p = pair()
    p.send(query("BEGIN"))
    p.send(query("SELECT 1/0"))
    r = p.send(parse("rb", "ROLLBACK"), bind("rb"), execute(), SYNC)
    assert r[-1] == ("Z", "I")
    r = p.send(bind("rb"), execute(), SYNC)
    assert r[-1] == ("Z", "I")


def test_messages_sent_after_an_error_came_back_are_skipped_to_the_sync(pair):
    """Parse/Close sent after the batch's error is already back (Flush): PostgreSQL skips them too."""
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    pair.other(names=("x",))
    for w in (p.direct, p.pooled):
        w.send(bind("nope") + message(b"H"))
        assert summary(*w.read_message())[:2] == ("E", "26000")
    r = p.send(close_s("s1"), parse("s2", "SELECT 'other 0'"), SYNC)
    assert r == [("Z", "I")]
    r = p.send(bind("s1"), execute(), SYNC, bind("s2"), execute(), SYNC)
    assert r[:4] == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")] and r[4][1] == "26000"


def test_same_text_under_another_name_after_a_failed_pipelined_batch(pair):
    """The first batch fails before its Parse, so the statement never reached the server: the next batch, sent before
    that was known, must not count on it."""
    p = pair()
    r = p.send(bind("nope"), parse("a", "SELECT 5"), SYNC, parse("b", "SELECT 5"), bind("b"), execute(), SYNC,
               describe_s("b"), SYNC)
    assert r[2:] == [("1",), ("2",), ("D", (("5",),)), ("C", "SELECT 1"), ("Z", "I"), ("t",), ("T",), ("Z", "I")]


def test_statements_closed_to_stay_under_max_prepared_statements_in_a_failed_batch(parley, target, pg):
    if target != "parley":
        pytest.skip("max_prepared_statements is parley's")
    pooler = parley(pool_mode="transaction", default_pool_size=1, max_prepared_statements=1)
    p = Pair(pg, pooler)
    try:
        p.send(bind("nope"), parse("a", "SELECT 1"), parse("b", "SELECT 2"), SYNC)
        r = p.send(parse("c", "SELECT 1"), bind("c"), execute(), SYNC, parse("d", "SELECT 2"), bind("d"), execute(),
                   SYNC, bind("c"), execute(), SYNC)
        assert [m for m in r if m[0] == "D"] == [("D", (("1",),)), ("D", (("2",),)), ("D", (("1",),))]
    finally:
        p.close()


# ---------------------------------------------------------------------------------------------------------------
# Close


def test_close_skipped_after_an_error_keeps_the_statement(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    r = p.send(bind("nope"), close_s("s1"), SYNC)
    assert types(r) == ["E", "Z"]
    pair.other()
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]
    r = p.send(parse("s1", "SELECT 2"), SYNC)
    assert r[0][1] == "42P05"


def test_close_skipped_then_parse_in_a_later_pipelined_batch(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    r = p.send(bind("nope"), close_s("s1"), SYNC, parse("s1", "SELECT 2"), SYNC, bind("s1"), execute(), SYNC)
    assert types(r) == ["E", "Z", "E", "Z", "2", "D", "C", "Z"]
    assert r[2][1] == "42P05" and r[4:6] == [("2",), ("D", (("1",),))]


def test_close_then_parse_again_in_the_same_batch_skipped_together(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    r = p.send(bind("nope"), close_s("s1"), parse("s1", "SELECT 2"), SYNC, bind("s1"), execute(), SYNC)
    assert r[2:4] == [("2",), ("D", (("1",),))]


# ---------------------------------------------------------------------------------------------------------------
# DEALLOCATE ALL / DISCARD ALL


def test_deallocate_all_forgets_every_statement(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), parse("s2", "SELECT 2"), SYNC)
    assert p.send(query("DEALLOCATE ALL"))[0] == ("C", "DEALLOCATE ALL")
    pair.other()
    r = p.send(bind("s1"), execute(), SYNC)
    assert r[0][1] == "26000"
    r = p.send(parse("s1", "SELECT 11"), bind("s1"), execute(), SYNC, bind("s2"), execute(), SYNC)
    assert r[2:4] == [("D", (("11",),)), ("C", "SELECT 1")] and r[-2][1] == "26000"


def test_deallocate_all_in_a_failed_transaction_keeps_the_statements(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), SYNC)
    p.send(query("BEGIN"))
    p.send(query("SELECT 1/0"))
    r = p.send(query("DEALLOCATE ALL"), bind("s1"), execute(), SYNC)
    assert r[0][1] == "25P02" and r[-1] == ("Z", "E")
    p.send(query("ROLLBACK"))
    r = p.send(bind("s1"), execute(), SYNC)
    assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]
    r = p.send(parse("s1", "SELECT 1"), SYNC)
    assert r[0][1] == "42P05"


def test_discard_all_in_a_transaction_block_keeps_the_statements(pair):
    """DISCARD ALL fails inside a transaction block: the statements stay, this client's and those parley prepared
    on the server for another client."""
    a, b = pair(), pair()
    b.send(parse("s1", "SELECT 1"), bind("s1"), execute(), SYNC)
    a.send(parse("s1", "SELECT 1"), parse("s2", "SELECT 2"), SYNC)
    a.send(query("BEGIN"))
    r = a.send(query("DISCARD ALL"))
    assert r[0][1] == "25001"
    a.send(query("ROLLBACK"))
    for p in (a, b):
        r = p.send(bind("s1"), execute(), SYNC)
        assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]
    a.send(bind("s2"), execute(), SYNC)


@pytest.mark.parametrize("how", ["unnamed", "named_portal"])
def test_discard_all_through_the_extended_protocol_in_a_transaction_block(pair, how):
    a, b = pair(), pair()
    b.send(parse("s1", "SELECT 1"), bind("s1"), execute(), SYNC)
    a.send(parse("s1", "SELECT 1"), SYNC)
    a.send(query("BEGIN"))
    portal = "" if how == "unnamed" else "p1"
    r = a.send(parse("", "DISCARD ALL"), bind("", portal=portal), execute(portal), SYNC)
    assert r[-2:] == [("E", "25001", "DISCARD ALL cannot run inside a transaction block"), ("Z", "E")]
    a.send(query("ROLLBACK"))
    for p in (a, b):
        r = p.send(bind("s1"), execute(), SYNC)
        assert r == [("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]
    r = a.send(parse("", "DISCARD ALL"), bind(""), execute(), SYNC, bind("s1"), execute(), SYNC)
    assert r[2:] == [("C", "DISCARD ALL"), ("Z", "I"), ("E", "26000", 'prepared statement "s1" does not exist'),
                     ("Z", "I")]
    r = b.send(bind("s1"), execute(), SYNC)
    assert r[1] == ("D", (("1",),))


def test_psycopg_discard_all(txpool):
    """One client's DISCARD ALL, failed (in a transaction) or done, leaves another client's statements working."""
    with txpool.connect(prepare_threshold=0) as a, txpool.connect(prepare_threshold=0) as b:
        for conn in (a, b):
            assert conn.execute("SELECT %s::int + 1", (1,), prepare=True).fetchone() == (2,)
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            with a.transaction():
                a.execute("DISCARD ALL")
        for conn in (a, b):
            assert conn.execute("SELECT %s::int + 1", (2,), prepare=True).fetchone() == (3,)
        a.execute("DISCARD ALL")  # psycopg keeps its names after it (as against PostgreSQL): a is not used again
        assert b.execute("SELECT %s::int + 1", (3,), prepare=True).fetchone() == (4,)


def test_deallocate_all_of_a_prepared_statement(pair):
    """DEALLOCATE ALL through the extended protocol, itself a named statement."""
    p = pair()
    p.send(parse("s1", "SELECT 1"), parse("d", "DEALLOCATE ALL"), SYNC)
    r = p.send(bind("d"), execute(), SYNC)
    assert r[-2:] == [("C", "DEALLOCATE ALL"), ("Z", "I")]
    for n in ("s1", "d"):
        assert p.send(bind(n), execute(), SYNC)[0][1] == "26000"
    p.send(parse("d", "DEALLOCATE ALL"), SYNC, bind("d"), execute(), SYNC, parse("d", "SELECT 4"), bind("d"),
           execute(), SYNC)


def test_deallocate_all_pipelined_behind_unanswered_messages(pair):
    p = pair()
    p.send(parse("s0", "SELECT 0"), SYNC)
    r = p.send(parse("s1", "SELEC 1"), close_s("s0"), SYNC, parse("s2", "SELECT 2"), bind("s2", (1,)), SYNC,
               query("DEALLOCATE ALL"), bind("s0"), execute(), SYNC, bind("s2"), execute(), SYNC)
    assert types(r) == ["E", "Z", "1", "E", "Z", "C", "Z", "E", "Z", "E", "Z"]
    r = p.send(parse("s0", "SELECT 0"), bind("s0"), execute(), SYNC)
    assert r[-2:] == [("C", "SELECT 1"), ("Z", "I")]


# ---------------------------------------------------------------------------------------------------------------
# The usual flows


def test_parse_flush_then_bind(pair):
    """Parse + Flush, the ParseComplete read, then Bind/Execute/Sync: one batch in two writes."""
    p = pair()
    pair.other()
    for w in (p.direct, p.pooled):
        w.send(parse("s1", "SELECT 1") + message(b"H"))
        assert w.read_message()[0] == b"1"
        w.send(parse("s1", "SELECT 2") + message(b"H"))
        assert summary(*w.read_message()) == ("E", "42P05", 'prepared statement "s1" already exists')
        assert exchange(w, SYNC) == [("Z", "I")]
    r = p.send(bind("s1"), execute(), SYNC)
    assert r[1] == ("D", (("1",),))


def test_pipelined_batches_with_new_statements(pair):
    """Several batches in one write, each preparing statements and running earlier ones: Parse of a text the server
    has (for another client), of a new one, Close and Parse again, a failing batch in the middle."""
    p = pair()
    pair.other(names=("x",))
    r = p.send(parse("a", "SELECT 'other 0'"), bind("a"), execute(), SYNC,
               parse("b", "SELECT 'b'"), bind("a"), execute(), bind("b"), execute(), SYNC,
               parse("c", "SELECT 'other 0'"), bind("c"), execute(), SYNC,
               close_s("a"), parse("a", "SELECT 'a2'"), bind("a"), execute(), SYNC,
               parse("d", "SELECT 'd'"), bind("nope"), parse("e", "SELECT 'e'"), SYNC,
               bind("a"), execute(), bind("b"), execute(), bind("c"), execute(), SYNC,
               bind("d"), execute(), SYNC, bind("e"), execute(), SYNC)
    assert r.count(("Z", "I")) == 8
    assert r[-6:] == [("2",), ("D", (("d",),)), ("C", "SELECT 1"), ("Z", "I"),
                      ("E", "26000", 'prepared statement "e" does not exist'), ("Z", "I")]




def test_parse_bind_execute_and_reuse(pair):
    p = pair()
    r = p.send(parse("s1", "SELECT $1::int * 2"), bind("s1", (21,)), describe_p(), execute(), SYNC)
    assert r[-3:] == [("D", (("42",),)), ("C", "SELECT 1"), ("Z", "I")]
    pair.other()
    for i in range(3):
        r = p.send(bind("s1", (i,)), execute(), SYNC)
        assert r == [("2",), ("D", ((str(2 * i),),)), ("C", "SELECT 1"), ("Z", "I")]
    p.send(describe_s("s1"), SYNC)
    p.send(parse("s2", "SELECT $1::text"), SYNC, bind("s2", ("x",)), execute(), SYNC)


def test_close_then_parse_the_same_name_again(pair):
    p = pair()
    p.send(parse("s1", "SELECT 1"), bind("s1"), execute(), SYNC)
    r = p.send(close_s("s1"), SYNC)
    assert r == [("3",), ("Z", "I")]
    r = p.send(bind("s1"), execute(), SYNC)
    assert r[0][1] == "26000"
    pair.other()
    r = p.send(parse("s1", "SELECT 2"), bind("s1"), execute(), SYNC)
    assert r[-3:] == [("D", (("2",),)), ("C", "SELECT 1"), ("Z", "I")]
    # Close and Parse of the same name in one batch, then back to the first text
    r = p.send(close_s("s1"), parse("s1", "SELECT 1"), bind("s1"), execute(), SYNC)
    assert r == [("3",), ("1",), ("2",), ("D", (("1",),)), ("C", "SELECT 1"), ("Z", "I")]
    # Close of a statement that does not exist is not an error
    assert p.send(close_s("never"), SYNC) == [("3",), ("Z", "I")]


def test_prepared_statements_inside_a_transaction(pair):
    p = pair()
    p.send(query("BEGIN"))
    p.send(parse("s1", "SELECT 1"), SYNC)
    p.send(parse("s2", "SELECT 2"), bind("s2"), execute(), SYNC)
    r = p.send(parse("s1", "SELECT 3"), SYNC)
    assert r[0][1] == "42P05" and r[-1] == ("Z", "E")
    p.send(query("ROLLBACK"))
    # prepared statements are not transactional: both survive the rollback
    r = p.send(bind("s1"), execute(), SYNC, bind("s2"), execute(), SYNC)
    assert types(r) == ["2", "D", "C", "Z", "2", "D", "C", "Z"]


def test_prepare_only_then_execute_from_several_clients(pair):
    """Parse + Sync alone (PQprepare, pgbench -M prepared), from clients sharing one server."""
    a, b = pair(), pair()
    for p in (a, b):
        assert p.send(parse("q", "SELECT $1::int + 1"), SYNC) == [("1",), ("Z", "I")]
    for i in range(3):
        for p in (a, b):
            r = p.send(bind("q", (i,)), execute(), SYNC)
            assert r == [("2",), ("D", ((str(i + 1),),)), ("C", "SELECT 1"), ("Z", "I")]


def test_psycopg_prepared_statements(txpool, pg):
    with txpool.connect(prepare_threshold=0) as a, txpool.connect(prepare_threshold=0) as b, \
            pg.connect(user=USER, password=None) as d:
        for i in range(5):
            for conn in (a, b, d):
                assert conn.execute("SELECT %s::int * 3", (i,), prepare=True).fetchone() == (3 * i,)
                assert conn.execute("SELECT %s::text || 'x'", (str(i),), prepare=True).fetchone() == (f"{i}x",)
        with a.transaction():
            assert a.execute("SELECT %s::int * 3", (7,), prepare=True).fetchone() == (21,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1 / %s::int", (0,), prepare=True)
        assert a.execute("SELECT 1 / %s::int", (1,), prepare=True).fetchone() == (1,)
        # an error inside a transaction, then the prepared statements still work
        with pytest.raises(psycopg.errors.UndefinedTable):
            with b.transaction():
                b.execute("SELECT %s::int * 3", (1,), prepare=True)
                b.execute("SELECT * FROM no_such_table WHERE %s::int = 1", (1,), prepare=True)
        assert b.execute("SELECT %s::int * 3", (5,), prepare=True).fetchone() == (15,)


# ---------------------------------------------------------------------------------------------------------------
# Random message sequences


RANDOM_NAMES = ["s1", "s2", "s3"]
RANDOM_TEXTS = ["SELECT 1", "SELECT 2", "SELEC 1", "SELECT * FROM no_such_table", "SELECT $1::int", "ROLLBACK"]


def random_batches(rng):
    """A few batches of Parse / Bind / Execute / Describe / Close / Flush over three names, a failing Bind, unnamed
    statements and portals, a named portal, transaction control and DEALLOCATE ALL / DISCARD ALL, ending in a Sync.
    (A Query goes after a Sync: after an error PostgreSQL skips a Query in the batch, and answers nothing for it.)"""
    out = []
    for _ in range(rng.randint(1, 10)):
        k, n = rng.random(), rng.choice(RANDOM_NAMES)
        if k < 0.25:
            out.append(parse(n, rng.choice(RANDOM_TEXTS)))
        elif k < 0.45:
            out.append(bind(n, () if rng.random() < 0.6 else (7,)) + execute())
        elif k < 0.52:
            out.append(describe_s(n))
        elif k < 0.62:
            out.append(close_s(n))
        elif k < 0.72:
            out.append(SYNC)
        elif k < 0.78:
            out.append(SYNC + query(rng.choice(["BEGIN", "ROLLBACK", "SELECT 1/0", "COMMIT", "DEALLOCATE ALL",
                                                "DISCARD ALL"])))
        elif k < 0.82:
            out.append(bind("nope") + execute())
        elif k < 0.86:
            out.append(message(b"H"))
        elif k < 0.89:
            out.append(bind(n, portal="p1") + execute("p1", rng.choice([0, 1])))
        else:
            out.append(parse("", rng.choice(RANDOM_TEXTS + ["DEALLOCATE ALL"])) + bind("") + execute())
    return b"".join(out) + SYNC


def send_in_pieces(w, data, rng):
    """exchange(), the bytes written a few at a time (parley sees a batch in several reads)."""
    expect, off = 0, 0
    while off < len(data):
        expect += data[off:off + 1] in (b"S", b"Q")
        off += 1 + struct.unpack("!I", data[off + 1:off + 5])[0]
    for pos in range(0, len(data), 40):
        w.send(data[pos:pos + 40])
        if rng.random() < 0.2:
            time.sleep(0.002)
    out = []
    while expect:
        mtype, payload = w.read_message()
        if mtype not in (b"S", b"K"):
            out.append(summary(mtype, payload))
            expect -= mtype == b"Z"
    return out


def known_differences(replies):
    """A Bind with the wrong number of parameters, in a failed transaction, of a statement parley has not prepared on
    that server yet: PostgreSQL says 08P01 (the count is checked first), parley 25P02 (its own Parse of the statement
    is refused first). Either way an error and the same ReadyForQuery."""
    return [("E", "25P02 or 08P01") if m[0] == "E" and (m[1] == "25P02" or (m[1] == "08P01" and "bind message" in m[2]))
            else m for m in replies]


@pytest.mark.parametrize("seed", range(12))
def test_random_message_sequences_match_postgres(pair, seed):
    rng = random.Random(seed)
    p = pair()
    for step in range(25):
        data = random_batches(rng)
        want = known_differences(exchange(p.direct, data))
        got = known_differences(send_in_pieces(p.pooled, data, rng) if rng.random() < 0.5 else exchange(p.pooled, data))
        assert got == want, f"step {step}: {data!r}\nthrough parley: {got}\nPostgreSQL:     {want}"
        if want[-1] == ("Z", "I") and rng.random() < 0.3:
            pair.other(names=(rng.choice(RANDOM_NAMES),))

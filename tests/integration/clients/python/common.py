"""common.py — what the Python driver programs share: the Parlant hot lookups' SQL, the write, and the JSON output.

Each program prints one JSON line per lookup: {"round": ..., "lookup": ..., "rows": [[column values in SELECT
order], ...]}; test_drivers.py compares the lines of a run through parley with those of a run straight against
PostgreSQL, and checks the values the write must have changed. Values are printed the way the driver returned
them (datetime -> isoformat, Decimal -> str), so a difference in what the driver decoded shows up as a difference.
"""

import datetime
import decimal
import json
import sys

AGENT = 710001
DELETED_AGENT = 710002
SESSION = 710001
PAGE = 50

# The lookups, with PostgreSQL's $n placeholders (asyncpg); to_pyformat() gives psycopg's %s form.
LOOKUPS = [
    # (name, sql, params)
    ("agent", "SELECT id, workspace_id, name, description, status, config, total_sessions, last_active_at, "
              "created_at, updated_at FROM parlant_agent WHERE id = $1 AND deleted_at IS NULL", (AGENT,)),
    ("deleted agent", "SELECT id, workspace_id, name, description, status, config, total_sessions, last_active_at, "
                      "created_at, updated_at FROM parlant_agent WHERE id = $1 AND deleted_at IS NULL",
     (DELETED_AGENT,)),
    ("agent tools", "SELECT t.id, t.name, t.display_name, t.tool_type, t.parameters, at.priority, at.configuration "
                    "FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id "
                    "WHERE at.agent_id = $1 AND at.enabled AND t.enabled ORDER BY at.priority, t.id", (AGENT,)),
    ("events page 0", "SELECT session_id, \"offset\", event_type, content, created_at FROM parlant_event "
                      "WHERE session_id = $1 AND \"offset\" >= $2 ORDER BY \"offset\" LIMIT $3", (SESSION, 0, PAGE)),
    ("events page 1", "SELECT session_id, \"offset\", event_type, content, created_at FROM parlant_event "
                      "WHERE session_id = $1 AND \"offset\" >= $2 ORDER BY \"offset\" LIMIT $3", (SESSION, 50, PAGE)),
    ("journey states", "SELECT s.id, s.name, s.state_type, s.chat_prompt, s.tool_id, s.is_initial "
                       "FROM parlant_journey_state s JOIN parlant_journey j ON j.id = s.journey_id "
                       "WHERE j.agent_id = $1 AND j.enabled ORDER BY s.journey_id, s.id", (AGENT,)),
]

# The write, as (sql, params); the first three run in one explicit transaction, the last two each on their own.
WRITE_TX = [
    ("UPDATE parlant_agent SET description = $1, status = $2, total_sessions = total_sessions + 1 WHERE id = $3",
     ("Updated by driver", "inactive", AGENT)),
    ("INSERT INTO parlant_agent_tool (agent_id, tool_id, enabled, priority, configuration) "
     "VALUES ($1, $2, true, $3, '{\"slots_visible\": 3}')", (AGENT, 710006, 5)),
    ("UPDATE parlant_agent_tool SET enabled = false WHERE agent_id = $1 AND tool_id = $2", (AGENT, 710002)),
]
WRITE_AUTOCOMMIT = [
    ("INSERT INTO parlant_event (session_id, \"offset\", event_type, content, created_at) "
     "VALUES ($1, $2, 'message', '{\"n\": 80, \"source\": \"customer\", \"text\": \"a new message\"}', "
     "'2024-06-01 12:40:00.000080+00')", (SESSION, 80)),
    ("UPDATE parlant_journey_state SET chat_prompt = $1 WHERE id = $2", ("Welcome back! How can I help?", 710001)),
]


def to_pyformat(sql):
    """$1, $2, ... -> %s (psycopg's placeholders); the lookups use each parameter once, in order."""
    out, i = sql, 1
    while f"${i}" in out:
        out = out.replace(f"${i}", "%s")
        i += 1
    return out


def plain(v):
    """A JSON-able form of a value as the driver decoded it, keeping its type visible."""
    if isinstance(v, datetime.datetime):
        return "datetime:" + v.isoformat()
    if isinstance(v, decimal.Decimal):
        return "decimal:" + str(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def emit(round_name, lookup, rows):
    print(json.dumps({"round": round_name, "lookup": lookup, "rows": [[plain(v) for v in r] for r in rows]},
                     sort_keys=True, ensure_ascii=False), flush=True)


def connection_args(argv):
    """host port user password dbname from the command line."""
    if len(argv) != 6:
        sys.exit(f"usage: {argv[0]} HOST PORT USER PASSWORD DBNAME")
    host, port, user, password, dbname = argv[1:]
    return host, int(port), user, password, dbname

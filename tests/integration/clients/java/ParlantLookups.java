// ParlantLookups.java — the Parlant hot lookups, a write and the lookups again with pgjdbc, prepareThreshold=1 so
// every PreparedStatement is a named server-side statement from its first execution (with binary results).
//
// Usage: java -cp CLASSES:/usr/share/java/postgresql.jar ParlantLookups HOST PORT USER PASSWORD DBNAME
// Prints one JSON line per lookup in the format of ../python/common.py. Two connections take turns, the way a
// pooled application's threads do; a write runs in an explicit transaction (autocommit off, commit).

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public final class ParlantLookups {
    private static final long AGENT = 710001;
    private static final long DELETED_AGENT = 710002;
    private static final long SESSION = 710001;

    private static final String AGENT_SQL = "SELECT id, workspace_id, name, description, status, config, "
            + "total_sessions, last_active_at, created_at, updated_at FROM parlant_agent "
            + "WHERE id = ? AND deleted_at IS NULL";
    private static final String TOOLS_SQL = "SELECT t.id, t.name, t.display_name, t.tool_type, t.parameters, "
            + "at.priority, at.configuration FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id "
            + "WHERE at.agent_id = ? AND at.enabled AND t.enabled ORDER BY at.priority, t.id";
    private static final String EVENTS_SQL = "SELECT session_id, \"offset\", event_type, content, created_at "
            + "FROM parlant_event WHERE session_id = ? AND \"offset\" >= ? ORDER BY \"offset\" LIMIT ?";
    private static final String STATES_SQL = "SELECT s.id, s.name, s.state_type, s.chat_prompt, s.tool_id, "
            + "s.is_initial FROM parlant_journey_state s JOIN parlant_journey j ON j.id = s.journey_id "
            + "WHERE j.agent_id = ? AND j.enabled ORDER BY s.journey_id, s.id";

    private ParlantLookups() {
    }

    /** One lookup: its name, SQL and parameters (in the order of ../python/common.py's LOOKUPS). */
    private record Lookup(String name, String sql, Object... params) {
    }

    private static final Lookup[] LOOKUPS = {
        new Lookup("agent", AGENT_SQL, AGENT),
        new Lookup("deleted agent", AGENT_SQL, DELETED_AGENT),
        new Lookup("agent tools", TOOLS_SQL, AGENT),
        new Lookup("events page 0", EVENTS_SQL, SESSION, 0, 50),
        new Lookup("events page 1", EVENTS_SQL, SESSION, 50, 50),
        new Lookup("journey states", STATES_SQL, AGENT),
    };

    /** A JSON string literal. */
    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    /** A value as the driver decoded it: numbers and booleans as JSON, anything else as "Class:text". */
    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Boolean || v instanceof Long || v instanceof Integer || v instanceof Short) {
            return v.toString();
        }
        if (v instanceof String s) {
            return quote(s);
        }
        return quote(v.getClass().getSimpleName() + ":" + v);
    }

    private static void run(Connection conn, String round, Lookup lookup, PreparedStatement ps) throws SQLException {
        for (int i = 0; i < lookup.params().length; i++) {
            ps.setObject(i + 1, lookup.params()[i]);
        }
        List<String> rows = new ArrayList<>();
        try (ResultSet rs = ps.executeQuery()) {
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> cols = new ArrayList<>();
                for (int i = 1; i <= n; i++) {
                    cols.add(json(rs.getObject(i)));
                }
                rows.add("[" + String.join(", ", cols) + "]");
            }
        }
        System.out.println("{\"lookup\": " + quote(lookup.name()) + ", \"round\": " + quote(round)
                + ", \"rows\": [" + String.join(", ", rows) + "]}");
    }

    /** Every lookup on a fresh PreparedStatement (pgjdbc reuses its server-side statement for the same SQL). */
    private static void round(Connection conn, String round) throws SQLException {
        for (Lookup lookup : LOOKUPS) {
            try (PreparedStatement ps = conn.prepareStatement(lookup.sql())) {
                run(conn, round, lookup, ps);
            }
        }
    }

    private static void update(Connection conn, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < params.length; i++) {
                ps.setObject(i + 1, params[i]);
            }
            ps.executeUpdate();
        }
    }

    private static void write(Connection conn) throws SQLException {
        conn.setAutoCommit(false);
        update(conn, "UPDATE parlant_agent SET description = ?, status = ?, total_sessions = total_sessions + 1 "
                + "WHERE id = ?", "Updated by driver", "inactive", AGENT);
        update(conn, "INSERT INTO parlant_agent_tool (agent_id, tool_id, enabled, priority, configuration) "
                + "VALUES (?, ?, true, ?, '{\"slots_visible\": 3}')", AGENT, 710006L, 5);
        update(conn, "UPDATE parlant_agent_tool SET enabled = false WHERE agent_id = ? AND tool_id = ?",
                AGENT, 710002L);
        conn.commit();
        conn.setAutoCommit(true);
        update(conn, "INSERT INTO parlant_event (session_id, \"offset\", event_type, content, created_at) "
                + "VALUES (?, ?, 'message', '{\"n\": 80, \"source\": \"customer\", \"text\": \"a new message\"}', "
                + "'2024-06-01 12:40:00.000080+00')", SESSION, 80);
        update(conn, "UPDATE parlant_journey_state SET chat_prompt = ? WHERE id = ?",
                "Welcome back! How can I help?", 710001L);
    }

    public static void main(String[] args) throws SQLException {
        if (args.length != 5) {
            System.err.println("usage: ParlantLookups HOST PORT USER PASSWORD DBNAME");
            System.exit(2);
        }
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4];
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        props.setProperty("prepareThreshold", "1");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");
        props.setProperty("ApplicationName", "parley-driver-test");
        try (Connection a = DriverManager.getConnection(url, props);
             Connection b = DriverManager.getConnection(url, props)) {
            round(a, "before");
            round(b, "before (second connection)");
            // the same PreparedStatement objects executed twice: Bind/Execute on the named statement only
            List<PreparedStatement> kept = new ArrayList<>();
            for (Lookup lookup : LOOKUPS) {
                kept.add(a.prepareStatement(lookup.sql()));
            }
            for (int i = 0; i < LOOKUPS.length; i++) {
                run(a, "before (kept statements)", LOOKUPS[i], kept.get(i));
            }
            write(b);
            round(a, "after");
            for (int i = 0; i < LOOKUPS.length; i++) {
                run(a, "after (kept statements)", LOOKUPS[i], kept.get(i));
            }
            b.setAutoCommit(false);
            round(b, "after (in a transaction)");
            b.commit();
            b.setAutoCommit(true);
            round(b, "after again");
            for (PreparedStatement ps : kept) {
                ps.close();
            }
        }
    }
}

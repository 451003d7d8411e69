// postgresjs.mjs — the Parlant hot lookups, a write and the lookups again with postgres.js ("postgres" on npm), which
// prepares every query as a named statement by default (prepare: true) and describes it first to learn its
// parameter types: tagged-template queries, concurrent lookups over its pool, the insert/update helpers and
// sql.begin() transactions. Usage: node postgresjs.mjs HOST PORT USER PASSWORD DBNAME (JSON lines on stdout, in the
// format of ../python/common.py).
import postgres from "postgres";

const AGENT = 710001;
const DELETED_AGENT = 710002;
const SESSION = 710001;
const PAGE = 50;

// [name, () => query returning rows as arrays] in the order of ../python/common.py's LOOKUPS.
const lookups = (sql) => {
  const agent = (id) => sql`
    SELECT id, workspace_id, name, description, status, config, total_sessions, last_active_at, created_at, updated_at
    FROM parlant_agent WHERE id = ${id} AND deleted_at IS NULL`.values();
  const page = (offset) => sql`
    SELECT session_id, "offset", event_type, content, created_at FROM parlant_event
    WHERE session_id = ${SESSION} AND "offset" >= ${offset} ORDER BY "offset" LIMIT ${PAGE}`.values();
  return [
    ["agent", () => agent(AGENT)],
    ["deleted agent", () => agent(DELETED_AGENT)],
    ["agent tools", () => sql`
      SELECT t.id, t.name, t.display_name, t.tool_type, t.parameters, at.priority, at.configuration
      FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id
      WHERE at.agent_id = ${AGENT} AND at.enabled AND t.enabled ORDER BY at.priority, t.id`.values()],
    ["events page 0", () => page(0)],
    ["events page 1", () => page(50)],
    ["journey states", () => sql`
      SELECT s.id, s.name, s.state_type, s.chat_prompt, s.tool_id, s.is_initial
      FROM parlant_journey_state s JOIN parlant_journey j ON j.id = s.journey_id
      WHERE j.agent_id = ${AGENT} AND j.enabled ORDER BY s.journey_id, s.id`.values()],
  ];
};

function plain(v) {
  if (v instanceof Date) return "date:" + v.toISOString();
  if (typeof v === "bigint") return "bigint:" + v.toString();
  return v;
}

function emit(round, lookup, rows) {
  process.stdout.write(JSON.stringify({ lookup, round, rows: rows.map((r) => [...r].map(plain)) }) + "\n");
}

async function sequentialRound(sql, round) {
  for (const [lookup, run] of lookups(sql)) emit(round, lookup, await run());
}

// Every lookup eight times at once; the copies must agree.
async function concurrentRound(sql, round) {
  const list = lookups(sql);
  const copies = 8;
  const results = await Promise.all(Array.from({ length: copies }, () => list.map(([, run]) => run())).flat());
  list.forEach(([lookup], i) => {
    const first = JSON.stringify(results[i]);
    for (let k = 1; k < copies; k++) {
      const other = JSON.stringify(results[k * list.length + i]);
      if (other !== first) throw new Error(`concurrent copies of ${lookup} disagree: ${first} vs ${other}`);
    }
    emit(round, lookup, results[i]);
  });
}

async function write(sql) {
  await sql.begin(async (tx) => {
    await tx`UPDATE parlant_agent SET description = ${"Updated by driver"}, status = ${"inactive"},
             total_sessions = total_sessions + 1 WHERE id = ${AGENT}`;
    await tx`INSERT INTO parlant_agent_tool ${tx({
      agent_id: AGENT, tool_id: 710006, enabled: true, priority: 5, configuration: tx.json({ slots_visible: 3 }),
    })}`;
    await tx`UPDATE parlant_agent_tool SET ${tx({ enabled: false })} WHERE agent_id = ${AGENT} AND tool_id = ${710002}`;
  });
  await sql`INSERT INTO parlant_event (session_id, "offset", event_type, content, created_at)
            VALUES (${SESSION}, ${80}, 'message', ${sql.json({ n: 80, source: "customer", text: "a new message" })},
                    '2024-06-01 12:40:00.000080+00')`;
  await sql`UPDATE parlant_journey_state SET chat_prompt = ${"Welcome back! How can I help?"} WHERE id = ${710001}`;
}

async function main() {
  const [host, port, user, password, database] = process.argv.slice(2);
  if (!database) throw new Error("usage: node postgresjs.mjs HOST PORT USER PASSWORD DBNAME");
  const sql = postgres({
    host, port: Number(port), user, password, database,
    max: 10, idle_timeout: 30, connect_timeout: 5, prepare: true, onnotice: () => {},
  });
  try {
    await sequentialRound(sql, "before");
    await concurrentRound(sql, "before (concurrent)");
    await sequentialRound(sql, "before again");
    await write(sql);
    await sequentialRound(sql, "after");
    await concurrentRound(sql, "after (concurrent)");
    await sequentialRound(sql, "after again");
  } finally {
    await sql.end({ timeout: 5 });
  }
}

main().catch((err) => { console.error(err); process.exit(1); });

// drizzle_pg.mjs — the Parlant hot lookups, a write and the lookups again with drizzle-orm over a node-postgres Pool
// configured as a Parlant service would (min 5, max 25, idle 30 s, connect timeout 5 s): drizzle selects and joins,
// drizzle prepared statements (node-postgres named queries), concurrent lookups over the pool, inserts and updates
// in a drizzle transaction. Usage: node drizzle_pg.mjs HOST PORT USER PASSWORD DBNAME (JSON lines on stdout, in the
// format of ../python/common.py: one line per lookup, rows as arrays in SELECT order).
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { and, asc, eq, gte, isNull, sql } from "drizzle-orm";
import { bigint, boolean, integer, jsonb, pgTable, text, timestamp } from "drizzle-orm/pg-core";

const AGENT = 710001;
const DELETED_AGENT = 710002;
const SESSION = 710001;
const PAGE = 50;

// The Parlant tables these lookups touch (contrib/parlant/schema.sql), as drizzle table objects.
const agent = pgTable("parlant_agent", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  workspaceId: bigint("workspace_id", { mode: "number" }).notNull(),
  name: text("name").notNull(),
  description: text("description"),
  status: text("status").notNull(),
  config: jsonb("config").notNull(),
  totalSessions: bigint("total_sessions", { mode: "number" }).notNull(),
  lastActiveAt: timestamp("last_active_at", { withTimezone: true, mode: "string" }),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "date" }).notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "string" }).notNull(),
  deletedAt: timestamp("deleted_at", { withTimezone: true, mode: "string" }),
});

const tool = pgTable("parlant_tool", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  workspaceId: bigint("workspace_id", { mode: "number" }).notNull(),
  name: text("name").notNull(),
  displayName: text("display_name").notNull(),
  toolType: text("tool_type").notNull(),
  parameters: jsonb("parameters").notNull(),
  enabled: boolean("enabled").notNull(),
});

const agentTool = pgTable("parlant_agent_tool", {
  agentId: bigint("agent_id", { mode: "number" }).notNull(),
  toolId: bigint("tool_id", { mode: "number" }).notNull(),
  enabled: boolean("enabled").notNull(),
  priority: integer("priority").notNull(),
  configuration: jsonb("configuration").notNull(),
});

const event = pgTable("parlant_event", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  sessionId: bigint("session_id", { mode: "number" }).notNull(),
  offset: integer("offset").notNull(),
  eventType: text("event_type").notNull(),
  content: jsonb("content").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull(),
});

const journey = pgTable("parlant_journey", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  agentId: bigint("agent_id", { mode: "number" }).notNull(),
  name: text("name").notNull(),
  enabled: boolean("enabled").notNull(),
});

const journeyState = pgTable("parlant_journey_state", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  journeyId: bigint("journey_id", { mode: "number" }).notNull(),
  name: text("name").notNull(),
  stateType: text("state_type").notNull(),
  chatPrompt: text("chat_prompt"),
  toolId: bigint("tool_id", { mode: "number" }),
  isInitial: boolean("is_initial").notNull(),
});

// The lookups as drizzle queries; each returns rows as objects whose key order is the SELECT order.
const agentColumns = {
  id: agent.id, workspaceId: agent.workspaceId, name: agent.name, description: agent.description,
  status: agent.status, config: agent.config, totalSessions: agent.totalSessions, lastActiveAt: agent.lastActiveAt,
  createdAt: agent.createdAt, updatedAt: agent.updatedAt,
};
const agentById = (db, id) =>
  db.select(agentColumns).from(agent).where(and(eq(agent.id, id), isNull(agent.deletedAt)));
const agentTools = (db, id) =>
  db.select({
    id: tool.id, name: tool.name, displayName: tool.displayName, toolType: tool.toolType,
    parameters: tool.parameters, priority: agentTool.priority, configuration: agentTool.configuration,
  })
    .from(agentTool)
    .innerJoin(tool, eq(tool.id, agentTool.toolId))
    .where(and(eq(agentTool.agentId, id), eq(agentTool.enabled, true), eq(tool.enabled, true)))
    .orderBy(asc(agentTool.priority), asc(tool.id));
const eventsPage = (db, session, offset) =>
  db.select({
    sessionId: event.sessionId, offset: event.offset, eventType: event.eventType, content: event.content,
    createdAt: event.createdAt,
  })
    .from(event)
    .where(and(eq(event.sessionId, session), gte(event.offset, offset)))
    .orderBy(asc(event.offset))
    .limit(PAGE);
const journeyStates = (db, id) =>
  db.select({
    id: journeyState.id, name: journeyState.name, stateType: journeyState.stateType,
    chatPrompt: journeyState.chatPrompt, toolId: journeyState.toolId, isInitial: journeyState.isInitial,
  })
    .from(journeyState)
    .innerJoin(journey, eq(journey.id, journeyState.journeyId))
    .where(and(eq(journey.agentId, id), eq(journey.enabled, true)))
    .orderBy(asc(journeyState.journeyId), asc(journeyState.id));

// [name, () => query] in the order of ../python/common.py's LOOKUPS.
const lookups = (db) => [
  ["agent", () => agentById(db, AGENT)],
  ["deleted agent", () => agentById(db, DELETED_AGENT)],
  ["agent tools", () => agentTools(db, AGENT)],
  ["events page 0", () => eventsPage(db, SESSION, 0)],
  ["events page 1", () => eventsPage(db, SESSION, 50)],
  ["journey states", () => journeyStates(db, AGENT)],
];

// The same lookups as named prepared statements (node-postgres sends a named Parse once per connection).
const preparedLookups = (db) => {
  const p = (q, name) => q.prepare(name);
  const byId = p(agentById(db, sql.placeholder("id")), "parlant_agent_by_id");
  const tools = p(agentTools(db, sql.placeholder("id")), "parlant_agent_tools");
  const page = p(eventsPage(db, sql.placeholder("session"), sql.placeholder("offset")), "parlant_events_page");
  const states = p(journeyStates(db, sql.placeholder("id")), "parlant_journey_states");
  return [
    ["agent", () => byId.execute({ id: AGENT })],
    ["deleted agent", () => byId.execute({ id: DELETED_AGENT })],
    ["agent tools", () => tools.execute({ id: AGENT })],
    ["events page 0", () => page.execute({ session: SESSION, offset: 0 })],
    ["events page 1", () => page.execute({ session: SESSION, offset: 50 })],
    ["journey states", () => states.execute({ id: AGENT })],
  ];
};

function plain(v) {
  if (v instanceof Date) return "date:" + v.toISOString();
  if (typeof v === "bigint") return "bigint:" + v.toString();
  return v;
}

function emit(round, lookup, rows) {
  const line = { lookup, round, rows: rows.map((r) => Object.values(r).map(plain)) };
  process.stdout.write(JSON.stringify(line) + "\n");
}

async function sequentialRound(list, round) {
  for (const [lookup, run] of list) emit(round, lookup, await run());
}

// Every lookup eight times at once over the pool; the copies must agree.
async function concurrentRound(list, round) {
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

async function write(db) {
  await db.transaction(async (tx) => {
    await tx.update(agent)
      .set({ description: "Updated by driver", status: "inactive", totalSessions: sql`${agent.totalSessions} + 1` })
      .where(eq(agent.id, AGENT));
    await tx.insert(agentTool)
      .values({ agentId: AGENT, toolId: 710006, enabled: true, priority: 5, configuration: { slots_visible: 3 } });
    await tx.update(agentTool).set({ enabled: false })
      .where(and(eq(agentTool.agentId, AGENT), eq(agentTool.toolId, 710002)));
  });
  await db.insert(event).values({
    sessionId: SESSION, offset: 80, eventType: "message",
    content: { n: 80, source: "customer", text: "a new message" }, createdAt: "2024-06-01 12:40:00.000080+00",
  });
  await db.update(journeyState).set({ chatPrompt: "Welcome back! How can I help?" }).where(eq(journeyState.id, 710001));
}

async function main() {
  const [host, port, user, password, database] = process.argv.slice(2);
  if (!database) throw new Error("usage: node drizzle_pg.mjs HOST PORT USER PASSWORD DBNAME");
  const pool = new pg.Pool({
    host, port: Number(port), user, password, database,
    min: 5, max: 25, idleTimeoutMillis: 30000, connectionTimeoutMillis: 5000,
  });
  pool.on("error", (err) => { console.error("idle client error:", err); process.exitCode = 1; });
  const db = drizzle(pool);
  try {
    await sequentialRound(lookups(db), "before");
    await sequentialRound(preparedLookups(db), "before (prepared)");
    await concurrentRound(preparedLookups(db), "before (concurrent, prepared)");
    await concurrentRound(lookups(db), "before (concurrent)");
    await write(db);
    await sequentialRound(lookups(db), "after");
    await concurrentRound(preparedLookups(db), "after (concurrent, prepared)");
    await sequentialRound(preparedLookups(db), "after (prepared)");
    await concurrentRound(lookups(db), "after (concurrent)");
  } finally {
    await pool.end();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });

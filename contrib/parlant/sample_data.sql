-- sample_data.sql — deterministic sample data for contrib/parlant/schema.sql.
--
-- Load into a database that has just been given the schema:
--   psql -v ON_ERROR_STOP=1 -d parlant -f contrib/parlant/sample_data.sql
--
-- Every run produces the same rows (fixed seed, fixed timestamps, ids given explicitly or assigned in a
-- fixed order): 10 workspaces, 1000 agents (27 soft-deleted), 2000 tools, 8000 agent-tool links,
-- 50000 sessions, exactly 200000 events (2..6 per session, offsets 0..n-1), 200 journeys with 900 states
-- and 850 transitions. Session traffic is skewed towards low agent ids, so a few agents are "hot".
-- Ids are contiguous from 1 (journey states excepted: journey j owns ids 10*j .. 10*j+5).
-- pgbench scripts may rely on: agents 1..1000, sessions 1..50000, session s has 2 + (3*s % 5) events.

\set ON_ERROR_STOP on

BEGIN;

-- random() below is only ever called from generate_series rows (never from table scans), in a fixed
-- order, so the seed makes the whole load reproducible.
DO $$ BEGIN PERFORM setseed(0.4242); END $$;

-- Workspaces ----------------------------------------------------------------------------------------
INSERT INTO parlant_workspace (id, name, created_at) OVERRIDING SYSTEM VALUE
SELECT w, 'workspace-' || lpad(w::text, 2, '0'),
       timestamptz '2024-06-01 00:00:00+00' + (w - 1) * interval '3 days'
FROM generate_series(1, 10) AS w;

-- Agents: agent i lives in workspace (i - 1) % 10 + 1 ----------------------------------------------------
INSERT INTO parlant_agent (id, workspace_id, name, description, status, config, total_sessions,
                           last_active_at, created_at, updated_at, deleted_at) OVERRIDING SYSTEM VALUE
SELECT i,
       (i - 1) % 10 + 1,
       'agent-' || lpad(i::text, 4, '0'),
       (ARRAY['Answers billing questions', 'Handles order tracking and returns',
              'Books and reschedules appointments', 'First-line technical support',
              'Qualifies sales leads', 'Internal IT helpdesk'])[1 + i % 6] || ' (agent ' || i || ')',
       CASE WHEN i % 50 = 0 THEN 'archived' WHEN i % 20 = 0 THEN 'inactive' ELSE 'active' END,
       jsonb_build_object(
           'model', (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'gemini-1.5-pro'])[1 + i % 4],
           'temperature', round((0.1 + r1 * 0.8)::numeric, 2),
           'max_engine_iterations', 1 + i % 3,
           'composition_mode', (ARRAY['fluid', 'strict_canned', 'composited_canned'])[1 + i % 3],
           'guidelines', 5 + floor(r2 * 40)::int,
           'language', (ARRAY['en', 'en', 'en', 'de', 'fr', 'es'])[1 + i % 6]),
       0,
       NULL,
       timestamptz '2024-07-01 00:00:00+00' + i * interval '2 hours',
       timestamptz '2024-07-01 00:00:00+00' + i * interval '2 hours' + floor(r3 * 90) * interval '1 day',
       CASE WHEN i % 37 = 0
            THEN timestamptz '2024-07-01 00:00:00+00' + i * interval '2 hours' + interval '120 days' END
FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3 FROM generate_series(1, 1000) AS i) AS a;

-- Tools: tool t lives in workspace (t - 1) % 10 + 1 and is that workspace's tool number (t - 1) / 10 ------
INSERT INTO parlant_tool (id, workspace_id, name, display_name, tool_type, parameters, enabled)
OVERRIDING SYSTEM VALUE
SELECT t,
       (t - 1) % 10 + 1,
       verb || '_' || noun || '_' || ((t - 1) / 10),
       initcap(verb || ' ' || replace(noun, '_', ' ')) || ' #' || ((t - 1) / 10),
       (ARRAY['sdk', 'sdk', 'openapi', 'mcp', 'sdk', 'builtin'])[1 + t % 6],
       jsonb_build_object(
           'type', 'object',
           'properties', jsonb_build_object(
               noun || '_id', jsonb_build_object('type', 'string', 'description', 'Identifier of the ' || noun),
               'limit', jsonb_build_object('type', 'integer', 'minimum', 1, 'maximum', 100)),
           'required', jsonb_build_array(noun || '_id')),
       t % 25 <> 0
FROM (SELECT t,
             (ARRAY['get', 'list', 'create', 'update', 'cancel', 'search', 'lookup'])[1 + t % 7] AS verb,
             (ARRAY['order', 'invoice', 'customer', 'ticket', 'appointment', 'shipment', 'refund', 'account',
                    'product', 'subscription', 'payment_method'])[1 + (t / 7) % 11] AS noun
      FROM generate_series(1, 2000) AS t) AS x;

-- Agent-tool links: 8 distinct tools of its own workspace per agent ------------------------------------
-- Agent i gets the workspace's tools number (b + 23 * j) % 200 for j = 0..7, b random per agent: 23 is
-- coprime to 200 and 23 * 7 < 200, so the 8 tools are distinct.
INSERT INTO parlant_agent_tool (agent_id, tool_id, enabled, priority, configuration)
SELECT a.i,
       a.w + 10 * ((a.b + 23 * j) % 200),
       (a.i * 8 + j) % 10 <> 0,
       j * 10,
       CASE WHEN j % 3 = 0 THEN jsonb_build_object('timeout_ms', 2000 + 1000 * j, 'retries', j % 3)
            ELSE '{}'::jsonb END
FROM (WITH base AS MATERIALIZED (   -- one random b per agent, however the join below is planned
          SELECT i, (i - 1) % 10 + 1 AS w, floor(random() * 200)::int AS b FROM generate_series(1, 1000) AS i)
      SELECT * FROM base) AS a
CROSS JOIN generate_series(0, 7) AS j
ORDER BY a.i, j;

-- Sessions ----------------------------------------------------------------------------------------------
-- Session s has n = 2 + (3 * s % 5) events (exactly 4 on average), over a 90-day window ending
-- 2025-03-31; agents are picked with a skew (agent id ~ 1000 * random()^2) so low ids are hot.
INSERT INTO parlant_session (id, agent_id, workspace_id, session_type, status, started_at, ended_at,
                             last_activity_at, message_count, tokens_used, cost, satisfaction_score)
OVERRIDING SYSTEM VALUE
SELECT s,
       agent,
       (agent - 1) % 10 + 1,
       CASE WHEN r_type < 0.80 THEN 'chat' WHEN r_type < 0.93 THEN 'api'
            WHEN r_type < 0.99 THEN 'voice' ELSE 'test' END,
       status,
       started,
       CASE WHEN status IN ('closed', 'expired') THEN last_act + interval '5 minutes' END,
       last_act,
       msgs,
       tokens,
       round(tokens * 0.000003, 6),
       CASE WHEN status = 'closed' AND r_score < 0.4 THEN 1 + floor(r_score * 12.5)::int END
FROM (SELECT s, agent, r_type, r_score, started, last_act, n - n / 4 AS msgs,
             (n - n / 4) * (150 + floor(r_tok * 650)::int) AS tokens,
             CASE WHEN started >= timestamptz '2025-03-30 12:00:00+00'
                  THEN (CASE WHEN r_status < 0.7 THEN 'active' ELSE 'idle' END)
                  WHEN r_status < 0.9 THEN 'closed' ELSE 'expired' END AS status
      FROM (SELECT s, n, agent, r_type, r_score, r_tok, r_status, started,
                   started + (n - 1) * interval '20 seconds' + floor(r_jit * 15) * interval '1 second' AS last_act
            FROM (SELECT s,
                         2 + (3 * s) % 5 AS n,
                         1 + floor(1000 * power(random(), 2))::int AS agent,
                         random() AS r_type,
                         random() AS r_score,
                         random() AS r_tok,
                         random() AS r_status,
                         random() AS r_jit,
                         date_trunc('second', timestamptz '2025-01-01 00:00:00+00'
                                              + random() * interval '90 days') AS started
                  FROM generate_series(1, 50000) AS s) AS g) AS h) AS k;

-- Events: offsets 0..n-1; even offsets are customer messages, odd ones the agent's replies, and offset
-- 3 mod 4 is a tool call (so message_count = n - n / 4). Ids follow (session_id, offset). ---------------
INSERT INTO parlant_event (session_id, "offset", event_type, content, created_at)
SELECT s.id,
       o,
       CASE WHEN o % 4 = 3 THEN 'tool' ELSE 'message' END,
       CASE WHEN o % 4 = 3 THEN
                jsonb_build_object(
                    'source', 'ai_agent',
                    'tool_calls', jsonb_build_array(jsonb_build_object(
                        'tool_id', 'tool-' || ((s.id * 7 + o) % 2000 + 1),
                        'arguments', jsonb_build_object('order_id', 'ORD-' || (100000 + s.id)),
                        'result', jsonb_build_object('data', jsonb_build_object(
                            'status', (ARRAY['shipped', 'processing', 'delivered', 'cancelled'])[1 + (s.id + o) % 4],
                            'eta_days', (s.id + o) % 9)))))
            WHEN o % 2 = 0 THEN
                jsonb_build_object(
                    'source', 'customer',
                    'participant', jsonb_build_object('display_name', 'customer-' || (s.id % 9973)),
                    'message', (ARRAY['Hi, where is my order?', 'I would like a refund please.',
                                      'Can I change my delivery address?', 'My invoice looks wrong.',
                                      'How do I reset my password?', 'Can I book an appointment for Tuesday?',
                                      'Thanks, that helps.', 'That did not answer my question.'])[1 + (s.id * 3 + o) % 8])
            ELSE
                jsonb_build_object(
                    'source', 'ai_agent',
                    'participant', jsonb_build_object('display_name', 'agent-' || lpad(s.agent_id::text, 4, '0')),
                    'message', (ARRAY['Let me look that up for you.', 'Your order is on its way.',
                                      'I have started the refund; it takes 3-5 business days.',
                                      'Sure, which address should we use?', 'I have sent you a reset link.',
                                      'Tuesday at 10:00 is available. Shall I book it?',
                                      'Is there anything else I can help with?'])[1 + (s.id + o) % 7],
                    'guideline_matches', (s.id + o) % 4)
       END,
       s.started_at + o * interval '20 seconds'
FROM parlant_session AS s
CROSS JOIN LATERAL generate_series(0, 1 + (3 * s.id) % 5) AS o
ORDER BY s.id, o;

-- Agent activity summary, as the Parlant server would maintain it --------------------------------------
UPDATE parlant_agent AS a
SET total_sessions = x.cnt, last_active_at = x.last_act
FROM (SELECT agent_id, count(*) AS cnt, max(last_activity_at) AS last_act
      FROM parlant_session GROUP BY agent_id) AS x
WHERE a.id = x.agent_id;

-- Journeys: journey j belongs to agent 5 * j - 2 and has m = 3 + j % 4 states -------------------------
INSERT INTO parlant_journey (id, agent_id, name, description, enabled, created_at) OVERRIDING SYSTEM VALUE
SELECT j,
       5 * j - 2,
       (ARRAY['Onboarding', 'Refund request', 'Order status', 'Password reset', 'Book appointment',
              'Cancel subscription', 'Update payment method', 'Report a bug'])[1 + j % 8] || ' #' || j,
       'Guides the customer through: '
           || lower((ARRAY['Onboarding', 'Refund request', 'Order status', 'Password reset', 'Book appointment',
                            'Cancel subscription', 'Update payment method', 'Report a bug'])[1 + j % 8]),
       j % 10 <> 0,
       timestamptz '2024-09-01 00:00:00+00' + j * interval '6 hours'
FROM generate_series(1, 200) AS j;

-- State p of journey j has id 10 * j + p: p = 0 is the initial chat state, p = m - 1 the end state,
-- p = 1 a fork when m >= 5, other even p call a tool of the agent's workspace, other odd p chat.
INSERT INTO parlant_journey_state (id, journey_id, name, state_type, chat_prompt, tool_id, is_initial)
OVERRIDING SYSTEM VALUE
SELECT 10 * j + p,
       j,
       'step_' || p,
       kind,
       CASE kind WHEN 'chat' THEN
           (ARRAY['Greet the customer and ask what they need.', 'Ask for the order number.',
                  'Confirm the details with the customer.', 'Explain the next steps.'])[1 + (j + p) % 4] END,
       CASE kind WHEN 'tool' THEN w + 10 * ((7 * j + p) % 200) END,
       p = 0
FROM (SELECT j, p, ((5 * j - 2) - 1) % 10 + 1 AS w,
             CASE WHEN p = 0 THEN 'chat'
                  WHEN p = m - 1 THEN 'end'
                  WHEN p = 1 AND m >= 5 THEN 'fork'
                  WHEN p % 2 = 0 THEN 'tool'
                  ELSE 'chat' END AS kind
      FROM generate_series(1, 200) AS j
      CROSS JOIN LATERAL (SELECT 3 + j % 4 AS m) AS mm
      CROSS JOIN LATERAL generate_series(0, m - 1) AS p) AS x
ORDER BY j, p;

-- Transitions: the chain p -> p + 1, plus a shortcut from step 1 to the end when m >= 4.
INSERT INTO parlant_journey_transition (journey_id, from_state_id, to_state_id, priority, condition)
SELECT j, 10 * j + src, 10 * j + dst, prio, cond
FROM (SELECT j, p AS src, p + 1 AS dst, 0 AS prio,
             CASE WHEN p = 0 THEN NULL ELSE 'the customer confirmed step ' || p END AS cond
      FROM generate_series(1, 200) AS j
      CROSS JOIN LATERAL generate_series(0, 3 + j % 4 - 2) AS p
      UNION ALL
      SELECT j, 1, 3 + j % 4 - 1, 1, 'the customer wants to stop'
      FROM generate_series(1, 200) AS j
      WHERE 3 + j % 4 >= 4) AS t
ORDER BY j, src, prio, dst;

-- Identity sequences continue after the explicit ids.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['parlant_workspace', 'parlant_agent', 'parlant_tool', 'parlant_session',
                             'parlant_journey', 'parlant_journey_state'] LOOP
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, ''id''), (SELECT max(id) FROM %I))', t, t);
    END LOOP;
END $$;

COMMIT;

-- Named tables only, so that the database owner (not only a superuser) can run this file quietly.
ANALYZE parlant_workspace, parlant_agent, parlant_tool, parlant_agent_tool, parlant_session, parlant_event,
        parlant_journey, parlant_journey_state, parlant_journey_transition;

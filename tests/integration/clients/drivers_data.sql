-- drivers_data.sql — the small deterministic Parlant data set the driver tests (test_drivers.py) read and change.
--
-- Run directly against PostgreSQL as a superuser before every driver run, so each run starts from the same
-- rows. Everything lives under workspace 710001 (ids 710001 and up), which no other test uses; deleting the
-- workspace cascades to every row below it, including the rows a driver inserted in its previous run.
--
-- What the drivers see (the numbers their programs check):
--   agent 710001 (live), agent 710002 (soft-deleted: the agent lookup must not find it)
--   tools 710001..710006; agent 710001 links tools 710001..710005, enabled except 710005, priorities
--   30, 10, 20, 40 (so the order is 710002, 710003, 710001, 710004); tool 710006 is not linked yet
--   session 710001 with 80 events, offsets 0..79 (a page of 50 from offset 50 has 30 rows)
--   journey 710001 (enabled) with states 710001..710004; journey 710002 (disabled) with state 710005

\set ON_ERROR_STOP on

BEGIN;

DELETE FROM parlant_workspace WHERE id = 710001;

INSERT INTO parlant_workspace (id, name, created_at) OVERRIDING SYSTEM VALUE
VALUES (710001, 'drivers-ws', timestamptz '2024-05-01 08:00:00+00');

INSERT INTO parlant_agent (id, workspace_id, name, description, status, config, total_sessions,
                           last_active_at, created_at, updated_at, deleted_at) OVERRIDING SYSTEM VALUE
VALUES (710001, 710001, 'support-agent', 'First-line support', 'active',
        '{"model": "gpt-4o", "temperature": 0.25, "guidelines": 12, "language": "en", "tags": ["a", "b"]}',
        7, timestamptz '2024-06-02 10:11:12.345678+00', timestamptz '2024-05-02 09:00:00+00',
        timestamptz '2024-05-03 09:30:00.5+00', NULL),
       (710002, 710001, 'retired-agent', NULL, 'archived', '{}', 0, NULL,
        timestamptz '2024-05-02 09:00:00+00', timestamptz '2024-05-02 09:00:00+00',
        timestamptz '2024-05-20 00:00:00+00');

INSERT INTO parlant_tool (id, workspace_id, name, display_name, tool_type, parameters, enabled)
OVERRIDING SYSTEM VALUE
VALUES (710001, 710001, 'lookup_order', 'Look up an order', 'openapi',
        '{"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}}', true),
       (710002, 710001, 'refund', 'Refund a payment', 'sdk', '{"max_amount": 250.5}', true),
       (710003, 710001, 'handoff', 'Hand off to a human', 'builtin', '{}', true),
       (710004, 710001, 'search_kb', 'Search the knowledge base', 'mcp', '{"top_k": 5, "unicode": "Grüße ✓"}', true),
       (710005, 710001, 'legacy_fax', 'Send a fax', 'sdk', '{}', false),
       (710006, 710001, 'schedule', 'Book an appointment', 'openapi', '{"slots": [9, 13, 16]}', true);

INSERT INTO parlant_agent_tool (agent_id, tool_id, enabled, priority, configuration)
VALUES (710001, 710001, true, 30, '{"timeout_ms": 1500}'),
       (710001, 710002, true, 10, '{"requires_confirmation": true}'),
       (710001, 710003, true, 20, '{}'),
       (710001, 710004, true, 40, '{"index": "kb-main"}'),
       (710001, 710005, false, 5, '{}');

INSERT INTO parlant_session (id, agent_id, workspace_id, session_type, status, started_at, last_activity_at,
                             message_count, tokens_used, cost) OVERRIDING SYSTEM VALUE
VALUES (710001, 710001, 710001, 'chat', 'active', timestamptz '2024-06-01 12:00:00+00',
        timestamptz '2024-06-01 12:40:00+00', 80, 12345, 0.012345);

INSERT INTO parlant_event (session_id, "offset", event_type, content, created_at)
SELECT 710001, n,
       (ARRAY['message', 'message', 'tool', 'status'])[1 + n % 4],
       jsonb_build_object('n', n, 'source', CASE WHEN n % 2 = 0 THEN 'customer' ELSE 'ai_agent' END,
                          'text', 'event number ' || n || CASE WHEN n % 7 = 0 THEN ' — ünïcode' ELSE '' END),
       timestamptz '2024-06-01 12:00:00+00' + n * interval '30 seconds' + n * interval '1 microsecond'
FROM generate_series(0, 79) AS n;

INSERT INTO parlant_journey (id, agent_id, name, description, enabled, created_at) OVERRIDING SYSTEM VALUE
VALUES (710001, 710001, 'onboarding', 'Greets and qualifies', true, timestamptz '2024-05-04 00:00:00+00'),
       (710002, 710001, 'old-flow', NULL, false, timestamptz '2024-05-04 00:00:00+00');

INSERT INTO parlant_journey_state (id, journey_id, name, state_type, chat_prompt, tool_id, is_initial)
OVERRIDING SYSTEM VALUE
VALUES (710001, 710001, 'greet', 'chat', 'Hello! How can I help?', NULL, true),
       (710002, 710001, 'ask-order', 'chat', 'What is your order number?', NULL, false),
       (710003, 710001, 'fetch-order', 'tool', NULL, 710001, false),
       (710004, 710001, 'done', 'end', NULL, NULL, false),
       (710005, 710002, 'start', 'chat', 'Legacy greeting', NULL, true);

INSERT INTO parlant_journey_transition (journey_id, from_state_id, to_state_id, priority, condition)
VALUES (710001, 710001, 710002, 1, 'customer asks about an order'),
       (710001, 710002, 710003, 1, NULL),
       (710001, 710003, 710004, 1, NULL);

COMMIT;

-- schema.sql — the PostgreSQL schema of a Parlant deployment, as parley's cache and benchmarks expect it.
--
-- Load into a fresh database:  psql -v ON_ERROR_STOP=1 -d parlant -f contrib/parlant/schema.sql
-- Then optionally:              psql -v ON_ERROR_STOP=1 -d parlant -f contrib/parlant/sample_data.sql
--
-- Keys are bigint identity columns (simple to generate in pgbench scripts). Besides the primary keys and
-- the indexes that back unique constraints and foreign keys, the indexes below serve the hot lookups of a
-- running Parlant server:
--   * an agent by id, unless soft-deleted ........ primary key + "deleted_at IS NULL" filter (one row)
--   * the live agents of a workspace .............. parlant_agent_workspace_live_idx (partial)
--   * an agent's enabled tools by priority ........ parlant_agent_tool_enabled_idx (partial, covering)
--   * the events of a session in order ............ parlant_event_session_offset_key (unique)
--   * an agent's sessions, most recent first ...... parlant_session_agent_activity_idx
--   * the active sessions of an agent ............. parlant_session_agent_active_idx (partial)
--   * an agent's enabled journeys ................. parlant_journey_agent_enabled_idx (partial)
--   * a journey's states, its initial state ....... parlant_journey_state_journey_name_key, _initial_key
--   * a journey's transitions out of a state ...... parlant_journey_transition_from_idx (covering)

BEGIN;

CREATE TABLE parlant_workspace (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL CONSTRAINT parlant_workspace_name_key UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE parlant_agent (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id    bigint      NOT NULL REFERENCES parlant_workspace (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    description     text,
    status          text        NOT NULL DEFAULT 'active'
                    CONSTRAINT parlant_agent_status_check CHECK (status IN ('active', 'inactive', 'archived')),
    config          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    total_sessions  bigint      NOT NULL DEFAULT 0 CHECK (total_sessions >= 0),
    last_active_at  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT parlant_agent_updated_check CHECK (updated_at >= created_at)
);
-- A name is unique among the live agents of a workspace; soft-deleted agents free their name.
CREATE UNIQUE INDEX parlant_agent_workspace_name_key
    ON parlant_agent (workspace_id, name) WHERE deleted_at IS NULL;
-- Live agents of a workspace (listings, and the workspace_id foreign key lookups of live rows).
CREATE INDEX parlant_agent_workspace_live_idx
    ON parlant_agent (workspace_id, id) INCLUDE (status) WHERE deleted_at IS NULL;

CREATE TABLE parlant_tool (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  bigint  NOT NULL REFERENCES parlant_workspace (id) ON DELETE CASCADE,
    name          text    NOT NULL,
    display_name  text    NOT NULL,
    tool_type     text    NOT NULL
                  CONSTRAINT parlant_tool_type_check CHECK (tool_type IN ('builtin', 'sdk', 'openapi', 'mcp')),
    parameters    jsonb   NOT NULL DEFAULT '{}'::jsonb,
    enabled       boolean NOT NULL DEFAULT true,
    CONSTRAINT parlant_tool_workspace_name_key UNIQUE (workspace_id, name)
);

CREATE TABLE parlant_agent_tool (
    agent_id       bigint  NOT NULL REFERENCES parlant_agent (id) ON DELETE CASCADE,
    tool_id        bigint  NOT NULL REFERENCES parlant_tool (id) ON DELETE CASCADE,
    enabled        boolean NOT NULL DEFAULT true,
    priority       integer NOT NULL DEFAULT 0,
    configuration  jsonb   NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (agent_id, tool_id)
);
-- An agent's enabled tools in priority order, answered from the index alone.
CREATE INDEX parlant_agent_tool_enabled_idx
    ON parlant_agent_tool (agent_id, priority) INCLUDE (tool_id) WHERE enabled;
-- Deleting a tool cascades here.
CREATE INDEX parlant_agent_tool_tool_idx ON parlant_agent_tool (tool_id);

CREATE TABLE parlant_session (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id            bigint        NOT NULL REFERENCES parlant_agent (id) ON DELETE CASCADE,
    workspace_id        bigint        NOT NULL REFERENCES parlant_workspace (id) ON DELETE CASCADE,
    session_type        text          NOT NULL DEFAULT 'chat'
                        CONSTRAINT parlant_session_type_check CHECK (session_type IN ('chat', 'voice', 'api', 'test')),
    status              text          NOT NULL DEFAULT 'active'
                        CONSTRAINT parlant_session_status_check CHECK (status IN ('active', 'idle', 'closed', 'expired')),
    started_at          timestamptz   NOT NULL DEFAULT now(),
    ended_at            timestamptz,
    last_activity_at    timestamptz   NOT NULL DEFAULT now(),
    message_count       integer       NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    tokens_used         bigint        NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
    cost                numeric(12,6) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    satisfaction_score  smallint      CHECK (satisfaction_score BETWEEN 1 AND 5),
    CONSTRAINT parlant_session_ended_check
        CHECK (ended_at IS NULL OR ended_at >= started_at),
    CONSTRAINT parlant_session_closed_check
        CHECK ((status IN ('closed', 'expired')) = (ended_at IS NOT NULL))
);
-- An agent's sessions, most recently active first.
CREATE INDEX parlant_session_agent_activity_idx
    ON parlant_session (agent_id, last_activity_at DESC);
-- The sessions an agent is currently serving.
CREATE INDEX parlant_session_agent_active_idx
    ON parlant_session (agent_id, last_activity_at DESC) WHERE status IN ('active', 'idle');
CREATE INDEX parlant_session_workspace_idx ON parlant_session (workspace_id, started_at);

CREATE TABLE parlant_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  bigint      NOT NULL REFERENCES parlant_session (id) ON DELETE CASCADE,
    "offset"    integer     NOT NULL CHECK ("offset" >= 0),
    event_type  text        NOT NULL
                CONSTRAINT parlant_event_type_check CHECK (event_type IN ('message', 'tool', 'status', 'custom')),
    content     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The events of a session in order ("WHERE session_id = $1 AND "offset" >= $2 ORDER BY "offset"").
    CONSTRAINT parlant_event_session_offset_key UNIQUE (session_id, "offset")
);

CREATE TABLE parlant_journey (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent_id     bigint      NOT NULL REFERENCES parlant_agent (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    description  text,
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT parlant_journey_agent_name_key UNIQUE (agent_id, name)
);
CREATE INDEX parlant_journey_agent_enabled_idx
    ON parlant_journey (agent_id) INCLUDE (id, name) WHERE enabled;

CREATE TABLE parlant_journey_state (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journey_id   bigint  NOT NULL REFERENCES parlant_journey (id) ON DELETE CASCADE,
    name         text    NOT NULL,
    state_type   text    NOT NULL
                 CONSTRAINT parlant_journey_state_type_check CHECK (state_type IN ('chat', 'tool', 'fork', 'end')),
    chat_prompt  text,
    tool_id      bigint  REFERENCES parlant_tool (id) ON DELETE SET NULL,
    is_initial   boolean NOT NULL DEFAULT false,
    CONSTRAINT parlant_journey_state_journey_name_key UNIQUE (journey_id, name),
    -- Lets transitions require both ends to belong to the transition's journey.
    CONSTRAINT parlant_journey_state_journey_id_key UNIQUE (journey_id, id),
    CONSTRAINT parlant_journey_state_chat_check CHECK (state_type <> 'chat' OR chat_prompt IS NOT NULL)
);
-- At most one initial state per journey; also finds it.
CREATE UNIQUE INDEX parlant_journey_state_initial_key
    ON parlant_journey_state (journey_id) WHERE is_initial;
CREATE INDEX parlant_journey_state_tool_idx ON parlant_journey_state (tool_id) WHERE tool_id IS NOT NULL;

CREATE TABLE parlant_journey_transition (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    journey_id     bigint  NOT NULL REFERENCES parlant_journey (id) ON DELETE CASCADE,
    from_state_id  bigint  NOT NULL,
    to_state_id    bigint  NOT NULL,
    priority       integer NOT NULL DEFAULT 0,
    condition      text,
    CONSTRAINT parlant_journey_transition_from_fkey FOREIGN KEY (journey_id, from_state_id)
        REFERENCES parlant_journey_state (journey_id, id) ON DELETE CASCADE,
    CONSTRAINT parlant_journey_transition_to_fkey FOREIGN KEY (journey_id, to_state_id)
        REFERENCES parlant_journey_state (journey_id, id) ON DELETE CASCADE,
    CONSTRAINT parlant_journey_transition_key UNIQUE (from_state_id, to_state_id)
);
-- The transitions of a journey, grouped by source state, in priority order.
CREATE INDEX parlant_journey_transition_from_idx
    ON parlant_journey_transition (journey_id, from_state_id, priority) INCLUDE (to_state_id);
-- Deleting a state cascades here through to_state_id.
CREATE INDEX parlant_journey_transition_to_idx ON parlant_journey_transition (journey_id, to_state_id);

COMMIT;

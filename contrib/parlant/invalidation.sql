-- invalidation.sql — triggers that tell parley about writes made outside it (psql, migrations, another parley).
--
-- Install into the Parlant database (one command, idempotent, safe to re-run after schema changes):
--     psql -v ON_ERROR_STOP=1 -d parlant -f contrib/parlant/invalidation.sql
-- Remove:
--     psql -d parlant -c "SELECT parley_uninstall_invalidation(c) FROM unnest(ARRAY[...]::regclass[]) c"
--
-- Every INSERT, UPDATE, DELETE, MERGE and TRUNCATE of a covered table sends, at COMMIT, one notification per
-- statement on the channel parley_invalidate (see doc/consistency.md for the format):
--     {"t":"parlant_agent","c":["id","workspace_id"],"r":[["42","7"],["43","7"]]}   rows the statement touched
--     {"t":"parlant_agent"}                                                          the whole table
-- "c" are the table's key columns, "r" the distinct key values (as text, NULL as null) of the rows before and after
-- the statement. A statement touching more than 1000 rows, or whose payload would not fit NOTIFY's 8000-byte
-- limit, and TRUNCATE, send the table-level form. Statements that change no row send nothing.
--
-- Any other table: SELECT parley_install_invalidation('my_table', ARRAY['id', 'tenant_id']);
-- (key columns: the columns your cached queries pin with "col = value"; none = table-level only).

BEGIN;

-- The trigger function, shared by every covered table. TG_ARGV holds the key column names.
CREATE OR REPLACE FUNCTION parley_invalidation_notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    max_rows constant int := 1000;      -- beyond this many rows a statement invalidates the whole table
    max_payload constant int := 7999;   -- NOTIFY payloads must be shorter than 8000 bytes
    table_level text := json_build_object('t', TG_TABLE_NAME)::text;
    keys text[] := TG_ARGV;
    sel text;
    src text;
    n bigint;
    rows json;
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' OR TG_NARGS = 0 THEN
        PERFORM pg_notify('parley_invalidate', table_level);
        RETURN NULL;
    END IF;
    -- the changed rows: new rows for INSERT, old rows for DELETE, both for UPDATE (and MERGE's parts)
    src := CASE TG_OP WHEN 'INSERT' THEN 'parley_new' WHEN 'DELETE' THEN 'parley_old'
                      ELSE 'parley_old UNION ALL SELECT * FROM parley_new' END;
    EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM (SELECT * FROM %s) s LIMIT %s) c', src, max_rows + 1)
        INTO n;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    IF n > max_rows THEN
        PERFORM pg_notify('parley_invalidate', table_level);
        RETURN NULL;
    END IF;
    SELECT string_agg(format('%I::text', k), ', ') INTO sel FROM unnest(keys) k;
    EXECUTE format('SELECT json_agg(json_build_array(%s)) FROM (SELECT DISTINCT %s FROM (SELECT * FROM %s) s) d',
                   sel, (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k), src)
        INTO rows;
    payload := json_build_object('t', TG_TABLE_NAME, 'c', to_json(keys), 'r', rows)::text;
    IF octet_length(payload) > max_payload THEN
        payload := table_level;
    END IF;
    PERFORM pg_notify('parley_invalidate', payload);
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION parley_invalidation_notify() IS
    'parley: notifies channel parley_invalidate of the key values a statement changed (contrib/parlant/invalidation.sql)';

-- Installs (or replaces) the four statement-level triggers on tbl with the given key columns.
CREATE OR REPLACE FUNCTION parley_install_invalidation(tbl regclass, key_columns text[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    col text;
    args text;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = tbl) NOT IN ('r') THEN
        RAISE EXCEPTION 'parley: % is not a plain table (partitioned tables: install on each partition)', tbl;
    END IF;
    FOREACH col IN ARRAY coalesce(key_columns, '{}') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                       WHERE attrelid = tbl AND attname = col AND attnum > 0 AND NOT attisdropped) THEN
            RAISE EXCEPTION 'parley: table % has no column "%"', tbl, col;
        END IF;
    END LOOP;
    SELECT coalesce(string_agg(quote_literal(c), ', '), '') INTO args FROM unnest(key_columns) c;
    PERFORM parley_uninstall_invalidation(tbl);
    EXECUTE format('CREATE TRIGGER parley_invalidate_ins AFTER INSERT ON %s REFERENCING NEW TABLE AS parley_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION parley_invalidation_notify(%s)', tbl, args);
    EXECUTE format('CREATE TRIGGER parley_invalidate_upd AFTER UPDATE ON %s REFERENCING OLD TABLE AS parley_old '
                   'NEW TABLE AS parley_new FOR EACH STATEMENT EXECUTE FUNCTION parley_invalidation_notify(%s)',
                   tbl, args);
    EXECUTE format('CREATE TRIGGER parley_invalidate_del AFTER DELETE ON %s REFERENCING OLD TABLE AS parley_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION parley_invalidation_notify(%s)', tbl, args);
    EXECUTE format('CREATE TRIGGER parley_invalidate_trunc AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION parley_invalidation_notify()', tbl);
END
$fn$;

-- Removes parley's triggers from tbl (the functions stay; drop them to stop the feed in auto mode).
CREATE OR REPLACE FUNCTION parley_uninstall_invalidation(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS parley_invalidate_ins ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS parley_invalidate_upd ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS parley_invalidate_del ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS parley_invalidate_trunc ON %s', tbl);
END
$fn$;

-- The Parlant tables, each with the columns parley's hot lookups pin on (etc/parlant.ini).
SELECT parley_install_invalidation('parlant_workspace', ARRAY['id']);
SELECT parley_install_invalidation('parlant_agent', ARRAY['id', 'workspace_id']);
SELECT parley_install_invalidation('parlant_tool', ARRAY['id', 'workspace_id']);
SELECT parley_install_invalidation('parlant_agent_tool', ARRAY['agent_id', 'tool_id']);
SELECT parley_install_invalidation('parlant_session', ARRAY['id', 'agent_id', 'workspace_id']);
SELECT parley_install_invalidation('parlant_event', ARRAY['id', 'session_id']);
SELECT parley_install_invalidation('parlant_journey', ARRAY['id', 'agent_id']);
SELECT parley_install_invalidation('parlant_journey_state', ARRAY['id', 'journey_id', 'tool_id']);
SELECT parley_install_invalidation('parlant_journey_transition',
                                   ARRAY['id', 'journey_id', 'from_state_id', 'to_state_id']);

COMMIT;

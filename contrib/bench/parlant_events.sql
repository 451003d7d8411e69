-- parlant_events.sql — pgbench script: a page of 50 events of a session from an offset (hot sessions 1..:hot_sessions, offsets 0..2).
\set sid random(1, :hot_sessions)
\set off random(0, 2)
SELECT * FROM parlant_event WHERE session_id = :sid AND "offset" >= :off ORDER BY "offset" LIMIT 50;

-- parlant_agent.sql — pgbench script: the Parlant agent-by-id lookup over a hot set of agents (ids 1..:hot_agents).
\set id random(1, :hot_agents)
SELECT * FROM parlant_agent WHERE id = :id;

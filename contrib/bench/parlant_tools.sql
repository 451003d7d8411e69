-- parlant_tools.sql — pgbench script: an agent's enabled tools joined with the tool details, by priority (hot agents 1..:hot_agents).
\set id random(1, :hot_agents)
SELECT t.id, t.name, t.display_name, t.tool_type, t.parameters, at.priority, at.configuration FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id WHERE at.agent_id = :id AND at.enabled ORDER BY at.priority;

-- A sandbox's resource limits and what happened at them (OOM kills, why it
-- ended), JSON owned by the orchestrator.
ALTER TABLE sandboxes ADD COLUMN resources TEXT;

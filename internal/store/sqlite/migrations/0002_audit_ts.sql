-- Retention prunes audit events by time across all sandboxes: without an
-- index on ts each prune scans the whole table.
CREATE INDEX audit_ts ON audit(ts);

-- Retention prunes audit events by time across all sandboxes.
CREATE INDEX audit_ts ON audit(ts);

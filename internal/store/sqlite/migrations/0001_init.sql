-- The schema of the first release, which created it with IF NOT EXISTS and
-- recorded no version: such databases are at user_version 0 with these
-- tables present, so this step must stay a no-op on them.
CREATE TABLE IF NOT EXISTS sandboxes (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	template_id TEXT NOT NULL,
	state       TEXT NOT NULL,
	metadata    TEXT NOT NULL DEFAULT '{}',
	envs        TEXT NOT NULL DEFAULT '{}',
	timeout     INTEGER NOT NULL DEFAULT 0,
	started_at  INTEGER NOT NULL,
	end_at      INTEGER NOT NULL DEFAULT 0,
	killed_at   INTEGER NOT NULL DEFAULT 0,
	security    TEXT,
	network     TEXT,
	lifecycle   TEXT,
	guest_ip    TEXT NOT NULL DEFAULT '',
	runtime     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sandboxes_state ON sandboxes(state);
CREATE TABLE IF NOT EXISTS idempotency (
	key        TEXT PRIMARY KEY,
	body_hash  TEXT NOT NULL,
	sandbox_id TEXT NOT NULL DEFAULT '',
	response   BLOB,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
	hash       TEXT PRIMARY KEY,
	name       TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	sandbox_id TEXT NOT NULL,
	ts         INTEGER NOT NULL,
	type       TEXT NOT NULL,
	data       TEXT
);
CREATE INDEX IF NOT EXISTS audit_sandbox ON audit(sandbox_id, id);
CREATE TABLE IF NOT EXISTS snapshots (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	sandbox_id  TEXT NOT NULL,
	template_id TEXT NOT NULL,
	source      TEXT NOT NULL,
	kind        TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	size_bytes  INTEGER NOT NULL,
	path        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_sandbox ON snapshots(sandbox_id, seq);

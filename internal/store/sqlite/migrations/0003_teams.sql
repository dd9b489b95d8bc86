-- Teams own API keys, sandboxes and snapshots. What existed before belongs
-- to the team "default", and the keys stored so far (the configured or
-- generated key) become its admin keys.
CREATE TABLE teams (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         TEXT NOT NULL UNIQUE,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
INSERT INTO teams (id, name, created_at) VALUES ('default', 'default', CAST(strftime('%s', 'now') AS INTEGER) * 1000000000);

-- api_keys gains an id, a team, an admin flag and revocation: rebuilt,
-- since SQLite cannot add a UNIQUE or REFERENCES column in place. The id
-- is store.KeyID(hash).
CREATE TABLE api_keys_v3 (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         TEXT NOT NULL UNIQUE,
	hash       TEXT NOT NULL UNIQUE,
	team_id    TEXT NOT NULL REFERENCES teams(id),
	name       TEXT NOT NULL DEFAULT '',
	admin      INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL DEFAULT 0
);
INSERT INTO api_keys_v3 (id, hash, team_id, name, admin, created_at)
	SELECT 'key_' || substr(hash, 1, 16), hash, 'default', name, 1, created_at FROM api_keys ORDER BY created_at, hash;
DROP TABLE api_keys;
ALTER TABLE api_keys_v3 RENAME TO api_keys;
CREATE INDEX api_keys_team ON api_keys(team_id, seq);

ALTER TABLE sandboxes ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_team ON sandboxes(team_id, seq);
ALTER TABLE snapshots ADD COLUMN team_id TEXT NOT NULL DEFAULT 'default';

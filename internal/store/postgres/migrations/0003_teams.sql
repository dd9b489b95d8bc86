-- Teams own API keys, sandboxes and snapshots. What existed before belongs
-- to the team "default", and the keys stored so far (the configured or
-- generated key) become its admin keys.
CREATE TABLE teams (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text NOT NULL UNIQUE,
	name       text NOT NULL UNIQUE,
	created_at timestamptz NOT NULL
);
INSERT INTO teams (id, name, created_at) VALUES ('default', 'default', now());

-- api_keys gains an id, a team, an admin flag and revocation; rebuilt so
-- that seq follows the old keys' creation order. The id is store.KeyID(hash).
CREATE TABLE api_keys_v3 (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text NOT NULL UNIQUE,
	hash       text NOT NULL UNIQUE,
	team_id    text NOT NULL REFERENCES teams(id),
	name       text NOT NULL DEFAULT '',
	admin      boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL,
	revoked_at timestamptz
);
INSERT INTO api_keys_v3 (id, hash, team_id, name, admin, created_at)
	SELECT 'key_' || left(hash, 16), hash, 'default', name, true, created_at FROM api_keys ORDER BY created_at, hash;
DROP TABLE api_keys;
ALTER TABLE api_keys_v3 RENAME TO api_keys;
CREATE INDEX api_keys_team ON api_keys(team_id, seq);

ALTER TABLE sandboxes ADD COLUMN team_id text NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_team ON sandboxes(team_id, seq);
ALTER TABLE snapshots ADD COLUMN team_id text NOT NULL DEFAULT 'default';

-- Version 1: the tables of the first release (see the sqlite backend's
-- 0001_init.sql), in Postgres types. Zero times are NULL; JSON columns are
-- json, not jsonb, so raw policies and audit data come back byte for byte.
CREATE TABLE sandboxes (
	seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id          text NOT NULL UNIQUE,
	template_id text NOT NULL,
	state       text NOT NULL,
	metadata    json NOT NULL DEFAULT '{}',
	envs        json NOT NULL DEFAULT '{}',
	timeout     integer NOT NULL DEFAULT 0,
	started_at  timestamptz,
	end_at      timestamptz,
	killed_at   timestamptz,
	security    json,
	network     json,
	lifecycle   json,
	guest_ip    text NOT NULL DEFAULT '',
	runtime     text NOT NULL DEFAULT ''
);
CREATE INDEX sandboxes_state ON sandboxes(state);
CREATE TABLE idempotency (
	key        text PRIMARY KEY,
	body_hash  text NOT NULL,
	sandbox_id text NOT NULL DEFAULT '',
	response   bytea,
	created_at timestamptz NOT NULL
);
CREATE TABLE api_keys (
	hash       text PRIMARY KEY,
	name       text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL
);
CREATE TABLE audit (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	sandbox_id text NOT NULL,
	ts         timestamptz NOT NULL,
	type       text NOT NULL,
	data       json
);
CREATE INDEX audit_sandbox ON audit(sandbox_id, id);
CREATE TABLE snapshots (
	seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id          text NOT NULL UNIQUE,
	sandbox_id  text NOT NULL,
	template_id text NOT NULL,
	source      text NOT NULL,
	kind        text NOT NULL,
	created_at  timestamptz,
	size_bytes  bigint NOT NULL,
	path        text NOT NULL
);
CREATE INDEX snapshots_sandbox ON snapshots(sandbox_id, seq);

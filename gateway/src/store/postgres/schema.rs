//! PostgreSQL's own migrations, applied in order at open under an advisory lock (nodes that
//! start together migrate once); each runs once and is recorded.

/// `(version, SQL)`; append only, never edit a released entry.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE registrations (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    public_key  TEXT NOT NULL,
    tunnel_port BIGINT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    uses_left  BIGINT,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    hash            TEXT NOT NULL UNIQUE,
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX api_keys_registration ON api_keys(registration_id);
CREATE TABLE tcp_services (
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    service         TEXT NOT NULL,
    port            BIGINT NOT NULL UNIQUE,
    allow_cidrs     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (registration_id, service)
);
CREATE TABLE state_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
INSERT INTO state_version (id, version) VALUES (1, 0)
"#,
    ),
    (
        2,
        r#"
CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    peer_addr   TEXT,
    state       TEXT NOT NULL CHECK (state IN ('active', 'draining')),
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE TABLE tunnel_presence (
    registration_id TEXT NOT NULL,
    node_id         TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    session_id      TEXT NOT NULL,
    since           TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (registration_id, node_id, session_id)
);
CREATE INDEX tunnel_presence_node ON tunnel_presence(node_id)
"#,
    ),
    (
        3,
        r#"
ALTER TABLE nodes ADD COLUMN ssh_addr TEXT
"#,
    ),
    (
        4,
        r#"
ALTER TABLE state_version ADD COLUMN changed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
"#,
    ),
    (
        5,
        r#"
ALTER TABLE api_keys ADD COLUMN service TEXT
"#,
    ),
];

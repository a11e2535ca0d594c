//! Schema migrations, applied in order at open; each runs once and is recorded.

/// `(version, SQL)`; append only, never edit a released entry.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE registrations (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    public_key  TEXT NOT NULL,
    tunnel_port INTEGER NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    uses_left  INTEGER,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    hash            TEXT NOT NULL UNIQUE,
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);
CREATE INDEX api_keys_registration ON api_keys(registration_id);
CREATE TABLE state_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO state_version (id, version) VALUES (1, 0);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE tcp_services (
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    service         TEXT NOT NULL,
    port            INTEGER NOT NULL UNIQUE,
    allow_cidrs     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (registration_id, service)
);
"#,
    ),
    (
        3,
        r#"
ALTER TABLE api_keys ADD COLUMN service TEXT
"#,
    ),
];

//! `[store]`: where registrations, tokens and keys live. An embedded SQLite file by default
//! (one node); `url = "postgres://..."` for several nodes sharing one PostgreSQL database, with
//! the pool, timeouts and reconnects configured here.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// Where the store lives.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite database file (created if missing); ignored when `url` is set. The admin token
    /// file sits beside it in either case.
    pub path: PathBuf,
    /// PostgreSQL connection URL (`postgres://user:password@host:port/db`); masked in logs.
    pub url: Option<String>,
    /// Most connections this node opens to PostgreSQL.
    pub max_connections: u32,
    /// Longest one statement may run (PostgreSQL `statement_timeout`), in milliseconds.
    pub statement_timeout_ms: u64,
    /// Longest a connection (or a free one from the pool) may take to come, in seconds.
    pub connect_timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: "g2c-gateway.db".into(),
            url: None,
            max_connections: 8,
            statement_timeout_ms: 5000,
            connect_timeout_secs: 5,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("path", &self.path)
            .field("url", &self.url.as_deref().map(mask_password))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .finish()
    }
}

impl StoreConfig {
    /// The checks serde cannot make.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: &str| Err(ConfigError::invalid(field, message));
        if let Some(url) = &self.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid("store.url", "must be a postgres:// URL");
            }
        }
        if self.max_connections == 0 {
            return invalid("store.max_connections", "must be at least 1");
        }
        if !(100..=600_000).contains(&self.statement_timeout_ms) {
            return invalid("store.statement_timeout_ms", "must be 100 to 600000");
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            return invalid("store.connect_timeout_secs", "must be 1 to 300");
        }
        Ok(())
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`, for logs.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(parts) => parts,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{auth}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let c = StoreConfig {
            url: Some("postgres://g2c:s3cret@db.internal:5432/g2c".into()),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("g2c:***@db.internal"),
            "{shown}"
        );
        assert_eq!(mask_password("postgres://u@h/db"), "postgres://u@h/db");
        assert!(c.validate().is_ok());
        let bad = StoreConfig {
            url: Some("mysql://x".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}

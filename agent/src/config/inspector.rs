//! The `[inspector]` section: how many recent requests the agent keeps for its Requests page,
//! and which headers and query parameters it masks before keeping them.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Most requests the inspector may be told to keep.
pub const MAX_KEEP: usize = 10_000;

/// The request inspector's settings. Bodies are captured per service (`capture_bodies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectorConfig {
    /// Whether requests are recorded at all (the charts' counts too).
    pub enabled: bool,
    /// How many recent requests are kept in memory (1 to 10,000).
    pub keep: usize,
    /// Headers masked beside the built-in ones (`Authorization`, `Proxy-Authorization`,
    /// `Cookie`, `Set-Cookie`, `X-Api-Key`), case-insensitive.
    pub mask_headers: Vec<String>,
    /// Query parameters masked beside the built-in ones (`token`, `access_token`, `api_key`,
    /// `key`, `secret`, `password`, `sig`, `signature`, ...), case-insensitive.
    pub mask_query: Vec<String>,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keep: 500,
            mask_headers: Vec::new(),
            mask_query: Vec::new(),
        }
    }
}

impl InspectorConfig {
    /// Whether nothing differs from the defaults (then the section is not written).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The keep bound, and masked names that are real header or parameter names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_KEEP).contains(&self.keep) {
            return Err(invalid("inspector.keep", "must be 1 to 10000"));
        }
        for (i, name) in self.mask_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(
                    format!("inspector.mask_headers[{i}]"),
                    "is not a header name",
                ));
            }
        }
        for (i, name) in self.mask_query.iter().enumerate() {
            if name.is_empty() || name.bytes().any(|b| b"&=#? ".contains(&b)) {
                return Err(invalid(
                    format!("inspector.mask_query[{i}]"),
                    "is not a query parameter name",
                ));
            }
        }
        Ok(())
    }
}

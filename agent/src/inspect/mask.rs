//! What the inspector masks before it keeps a head: credentials in headers and secrets in the
//! query string. Masking happens as the head is copied, so the secret never sits in the
//! agent's memory beyond the relay itself.

use crate::config::InspectorConfig;

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// Headers always masked.
const HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "g2c-key",
];

/// Query parameters always masked.
const QUERY: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "sig",
    "signature",
    "code",
    "auth",
    "session",
];

/// The inspector's settings, built from the config once per change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether requests are recorded.
    pub enabled: bool,
    /// How many are kept.
    pub keep: usize,
    headers: Vec<String>,
    query: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&InspectorConfig::default())
    }
}

impl Settings {
    /// The settings of `[inspector]`: the built-in masks plus the operator's.
    pub fn from_config(c: &InspectorConfig) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        let mut headers: Vec<String> = HEADERS.iter().map(|s| (*s).to_owned()).collect();
        headers.extend(lower(&c.mask_headers));
        let mut query: Vec<String> = QUERY.iter().map(|s| (*s).to_owned()).collect();
        query.extend(lower(&c.mask_query));
        Self {
            enabled: c.enabled,
            keep: c.keep,
            headers,
            query,
        }
    }

    /// Whether header `name`'s value is masked.
    pub fn masks_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether query parameter `name`'s value is masked.
    pub fn masks_param(&self, name: &str) -> bool {
        self.query.iter().any(|q| q.eq_ignore_ascii_case(name))
    }

    /// `target` (path and query) with the values of masked parameters replaced.
    pub fn mask_target(&self, target: &str) -> String {
        let Some((path, query)) = target.split_once('?') else {
            return target.to_owned();
        };
        let mut out = String::with_capacity(target.len());
        out.push_str(path);
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) if self.masks_param(&decoded(k)) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(pair),
            }
        }
        out
    }
}

/// A parameter name with its percent-escapes decoded (so `%74oken` is still `token`).
fn decoded(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_secrets_are_masked_and_the_rest_kept() {
        let s = Settings::from_config(&InspectorConfig {
            mask_query: vec!["Tenant".into()],
            mask_headers: vec!["X-Private".into()],
            ..Default::default()
        });
        assert_eq!(
            s.mask_target("/a/b?x=1&token=abc&%74oken=def&tenant=t9&flag&KEY=k"),
            "/a/b?x=1&token=***&%74oken=***&tenant=***&flag&KEY=***"
        );
        assert_eq!(s.mask_target("/plain"), "/plain");
        assert!(s.masks_header("AUTHORIZATION") && s.masks_header("x-private"));
        assert!(!s.masks_header("content-type"));
    }
}

//! What the inspector masks before it keeps a head: credentials in headers and secrets in the
//! query string. The values are overwritten with `*` in the head's one copy, so the secret
//! never sits in the agent's memory beyond the relay itself (its length still shows).

use crate::config::InspectorConfig;

/// What a masked value is shown as where its length is not kept (a replayed answer's headers).
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

    /// Overwrite, in `target` (path and query, as copied), the values of masked query
    /// parameters with `*`.
    pub fn mask_query_in_place(&self, target: &mut [u8]) {
        let Some(q) = target.iter().position(|b| *b == b'?') else {
            return;
        };
        let mut start = q + 1;
        while start <= target.len() {
            let end = target[start..]
                .iter()
                .position(|b| *b == b'&')
                .map_or(target.len(), |p| start + p);
            if let Some(eq) = target[start..end].iter().position(|b| *b == b'=') {
                let name = std::str::from_utf8(&target[start..start + eq]).unwrap_or("");
                if self.masks_param_raw(name) {
                    target[start + eq + 1..end].fill(b'*');
                }
            }
            start = end + 1;
        }
    }

    /// Whether a raw (maybe percent-encoded) parameter name is masked; names without escapes
    /// are compared as they are, without decoding.
    fn masks_param_raw(&self, raw: &str) -> bool {
        if raw.bytes().any(|b| b == b'%' || b == b'+') {
            self.masks_param(&decoded(raw))
        } else {
            self.masks_param(raw)
        }
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
        let masked = |t: &str| {
            let mut b = t.as_bytes().to_vec();
            s.mask_query_in_place(&mut b);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(
            masked("/a/b?x=1&token=abc&%74oken=def&tenant=t9&flag&KEY=k&&=v&token="),
            "/a/b?x=1&token=***&%74oken=***&tenant=**&flag&KEY=*&&=v&token="
        );
        assert_eq!(masked("/plain"), "/plain");
        assert_eq!(masked("/q?"), "/q?");
        assert!(s.masks_header("AUTHORIZATION") && s.masks_header("x-private"));
        assert!(!s.masks_header("content-type"));
    }
}

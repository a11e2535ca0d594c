//! Who may use the local GUI and API: the login secret kept beside the config (mode 0600,
//! created on first start, shown by `g2c-agent gui --show-secret`), browser sessions (an
//! HttpOnly, SameSite=Strict cookie plus a CSRF token for every state-changing request), and
//! a throttle on wrong secrets. Tools such as `g2c-agent status` send the secret as a bearer
//! token instead.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// A browser session ends after this long without use.
const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once (the oldest goes first).
const MAX_SESSIONS: usize = 64;
/// Wrong secrets allowed per window before logins are refused for the rest of it.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The secret file of the agent whose config is at `config`.
pub fn secret_file(config: &Path) -> PathBuf {
    config.with_extension("secret")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Read the secret at `path`, creating it (mode 0600) when missing.
pub fn load_or_create_secret(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            if secret.len() < 16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} holds no usable secret", path.display()),
                ));
            }
            restrict_mode(path);
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret = random_hex(24);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            use std::io::Write;
            let mut f = opts.open(path)?;
            f.write_all(format!("{secret}\n").as_bytes())?;
            f.sync_all()?;
            Ok(secret)
        }
        Err(e) => Err(e),
    }
}

/// A secret file readable by others is tightened to 0600 (and said so).
fn restrict_mode(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "GUI secret file was readable by others; setting mode 0600");
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Compare without an early exit, so timing tells nothing about the secret.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct Session {
    csrf: String,
    last_used: Instant,
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The secret is wrong.
    #[error("wrong secret")]
    WrongSecret,
    /// Too many wrong secrets lately.
    #[error("too many failed logins; try again in a minute")]
    Throttled,
}

/// The login secret and the live browser sessions.
pub struct GuiAuth {
    secret: String,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<(u32, Instant)>,
}

impl GuiAuth {
    /// Use (or create) the secret file at `path`.
    pub fn from_file(path: &Path) -> io::Result<Self> {
        Ok(Self::with_secret(load_or_create_secret(path)?))
    }

    /// A random secret kept in memory only (an agent run without a config file).
    pub fn ephemeral() -> Self {
        Self::with_secret(random_hex(24))
    }

    fn with_secret(secret: String) -> Self {
        Self {
            secret,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new((0, Instant::now())),
        }
    }

    /// The secret itself (to mask it wherever text leaves the agent).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `candidate` is the secret (a bearer token).
    pub fn is_secret(&self, candidate: &str) -> bool {
        same(candidate, &self.secret)
    }

    /// Check the secret and open a session: returns (session token, CSRF token).
    pub fn login(&self, candidate: &str) -> Result<(String, String), LoginError> {
        {
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if f.1.elapsed() > FAILURE_WINDOW {
                *f = (0, Instant::now());
            }
            if f.0 >= MAX_FAILURES {
                return Err(LoginError::Throttled);
            }
            if !self.is_secret(candidate) {
                f.0 += 1;
                return Err(LoginError::WrongSecret);
            }
        }
        let (token, csrf) = (random_hex(32), random_hex(16));
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                last_used: Instant::now(),
            },
        );
        Ok((token, csrf))
    }

    /// The CSRF token of a live session.
    pub fn session(&self, token: &str) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let s = sessions.get_mut(token)?;
        if s.last_used.elapsed() >= SESSION_IDLE {
            sessions.remove(token);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.csrf.clone())
    }

    /// End a session.
    pub fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.secret");
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn wrong_secrets_are_throttled_and_sessions_carry_csrf() {
        let auth = GuiAuth::with_secret("s3cret-s3cret-s3cret".into());
        for _ in 0..MAX_FAILURES {
            assert!(matches!(auth.login("nope"), Err(LoginError::WrongSecret)));
        }
        assert!(matches!(
            auth.login("s3cret-s3cret-s3cret"),
            Err(LoginError::Throttled)
        ));
        let auth = GuiAuth::with_secret("s3cret-s3cret-s3cret".into());
        let (token, csrf) = auth.login("s3cret-s3cret-s3cret").unwrap();
        assert_eq!(auth.session(&token), Some(csrf));
        auth.logout(&token);
        assert_eq!(auth.session(&token), None);
    }
}

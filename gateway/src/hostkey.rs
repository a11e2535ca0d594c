//! The gateway's SSH host key: loaded from its file, or generated (ed25519, mode 0600) on first
//! start so a fresh install needs no manual step.

use std::path::Path;

use g2c_proto::sshkeys::{self, KeyFileError};
use russh::keys::PrivateKey;

/// Load the host key at `path`, generating it if the file does not exist.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let existed = path.exists();
    let key = sshkeys::load_or_generate(path)?;
    if !existed {
        tracing::info!(path = %path.display(), "generated a new SSH host key");
    }
    Ok(key)
}

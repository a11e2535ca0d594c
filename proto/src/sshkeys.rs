//! SSH key helpers shared by both sides: generate an ed25519 key, write it with mode 0600, read
//! it back, and render or compare public keys in OpenSSH one-line form.

use std::path::Path;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{PrivateKey, PublicKey};

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// File I/O failed.
    #[error("key file {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file or string is not a valid OpenSSH key.
    #[error("{path}: not a valid OpenSSH key: {message}")]
    Parse {
        /// Path (or "public key" for strings).
        path: String,
        /// Cause.
        message: String,
    },
}

/// Generate a new ed25519 private key from the OS random source.
pub fn generate_ed25519() -> PrivateKey {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// Write a private key in OpenSSH format, readable by its owner only (0600).
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyFileError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        // An existing file keeps its mode on open: tighten it explicitly.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    use std::io::Write;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Read an OpenSSH private key file.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    PrivateKey::from_openssh(text.as_bytes()).map_err(|e| KeyFileError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Load the key at `path`, generating (and writing) a new one if the file does not exist.
pub fn load_or_generate(path: &Path) -> Result<PrivateKey, KeyFileError> {
    if path.exists() {
        return read_private_key(path);
    }
    let key = generate_ed25519();
    write_private_key(path, &key)?;
    Ok(key)
}

/// The public half in OpenSSH one-line format (`ssh-ed25519 AAAA...`), without a comment.
pub fn public_openssh(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh().unwrap_or_default()
}

/// Parse an OpenSSH one-line public key.
pub fn parse_public(text: &str) -> Result<PublicKey, KeyFileError> {
    PublicKey::from_openssh(text.trim()).map_err(|e| KeyFileError::Parse {
        path: "public key".into(),
        message: e.to_string(),
    })
}

/// Whether two public keys are the same key (comments ignored).
pub fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

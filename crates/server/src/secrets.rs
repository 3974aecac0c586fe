//! The JWT signing key and the encryption key. Given explicitly (environment or config file)
//! they are used as they are; in local mode missing ones are generated once and kept in
//! `<data dir>/secrets/` with 0600 permissions; in production mode they are required.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use aether_domain::secret::{Cipher, random_token};
use anyhow::{Context, Result, bail};

use crate::config::{Config, Mode};

pub struct Secrets {
    pub jwt_secret: Vec<u8>,
    pub cipher: Cipher,
}

pub fn load(cfg: &Config) -> Result<Secrets> {
    let dir = cfg.data_dir.join("secrets");
    let jwt = match &cfg.secrets.jwt_secret {
        Some(s) if s.len() >= 32 => s.as_bytes().to_vec(),
        Some(_) => {
            bail!("setting `jwt_secret` (AETHER_JWT_SECRET): must be at least 32 characters")
        }
        None if cfg.mode == Mode::Production => {
            bail!(
                "setting `jwt_secret` (AETHER_JWT_SECRET, `jwt_secret` in the config file) is required in production mode"
            )
        }
        None => read_or_create(&dir.join("jwt.key"), || random_token(48))?.into_bytes(),
    };
    let primary = match &cfg.secrets.encryption_key {
        Some(k) => Cipher::decode_key(k).map_err(|e| {
            anyhow::anyhow!("setting `encryption_key` (AETHER_ENCRYPTION_KEY): {e}")
        })?,
        None if cfg.mode == Mode::Production => bail!(
            "setting `encryption_key` (AETHER_ENCRYPTION_KEY, `encryption_key` in the config file) is required in production mode; \
             generate one with `openssl rand -base64 32`"
        ),
        None => {
            let text = read_or_create(&dir.join("encryption.key"), Cipher::generate_key)?;
            Cipher::decode_key(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("encryption.key").display()))?
        }
    };
    let older = cfg
        .secrets
        .previous_encryption_keys
        .iter()
        .map(|k| {
            Cipher::decode_key(k).map_err(|e| {
                anyhow::anyhow!(
                    "setting `previous_encryption_keys` (AETHER_PREVIOUS_ENCRYPTION_KEYS): {e}"
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cipher = Cipher::new(&primary, &older)
        .map_err(|e| anyhow::anyhow!("setting `encryption_key`: {e}"))?;
    Ok(Secrets {
        jwt_secret: jwt,
        cipher,
    })
}

/// Reads a secret file, or creates it (0600, in a 0700 directory) with a fresh value.
fn read_or_create(path: &Path, generate: impl FnOnce() -> String) -> Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        let meta = fs::metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).with_context(|| {
                format!("cannot restrict the permissions of {}", path.display())
            })?;
            tracing::warn!(path = %path.display(), "secret file was readable by others; permissions set to 0600");
        }
        return Ok(text.trim().to_string());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
    }
    let value = generate();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new secret");
    Ok(value)
}

//! Secrets at rest and in sight.
//!
//! * Provider keys and proxy passwords are sealed with AES-256-GCM. A sealed value reads
//!   `enc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`; the key id (the first 8 hex
//!   digits of SHA-256 of the key) lets an operator rotate keys: the newest key seals, any
//!   configured key opens.
//! * Gateway API keys are never stored: only their SHA-256 is, for O(1) lookup, and the key is
//!   shown once at creation.
//! * Anything shown in the console or logs goes through [`mask`].

use std::fmt::Write as _;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("an encryption key must be 32 bytes (base64 or 64 hex digits); got {0} bytes")]
    KeyLength(usize),
    #[error("the encryption key is neither base64 nor hex")]
    KeyEncoding,
    #[error("the value is not a sealed secret")]
    NotSealed,
    #[error("the value was sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the sealed value is corrupt or the key is wrong")]
    Corrupt,
}

/// AES-256-GCM sealing with key rotation.
#[derive(Clone)]
pub struct Cipher {
    /// (key id, cipher); the first one seals.
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Cipher").field("key_ids", &ids).finish()
    }
}

impl Cipher {
    /// `primary` seals; `older` keys only open values sealed before a rotation.
    pub fn new(primary: &[u8], older: &[Vec<u8>]) -> Result<Self, SecretError> {
        let mut keys = Vec::with_capacity(1 + older.len());
        for raw in std::iter::once(primary).chain(older.iter().map(Vec::as_slice)) {
            if raw.len() != 32 {
                return Err(SecretError::KeyLength(raw.len()));
            }
            let key =
                Key::<Aes256Gcm>::try_from(raw).map_err(|_| SecretError::KeyLength(raw.len()))?;
            keys.push((key_id(raw), Aes256Gcm::new(&key)));
        }
        Ok(Self { keys })
    }

    /// Parses a key written as base64 (standard or URL-safe) or 64 hex digits.
    pub fn decode_key(text: &str) -> Result<Vec<u8>, SecretError> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return (0..32)
                .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SecretError::KeyEncoding);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
            .map_err(|_| SecretError::KeyEncoding)?;
        if bytes.len() != 32 {
            return Err(SecretError::KeyLength(bytes.len()));
        }
        Ok(bytes)
    }

    /// A fresh random 256-bit key, base64-encoded.
    #[must_use]
    pub fn generate_key() -> String {
        let mut k = [0u8; 32];
        rand::fill(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    #[must_use]
    pub fn primary_key_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// Seals a plaintext secret.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let (id, cipher) = self
            .keys
            .first()
            .ok_or(SecretError::UnknownKey(String::new()))?;
        let nonce = Nonce::generate();
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{id}:{}", URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a value produced by [`Cipher::seal`].
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SecretError::NotSealed)?;
        let (id, body) = rest.split_once(':').ok_or(SecretError::NotSealed)?;
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretError::Corrupt)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(SecretError::Corrupt);
        }
        let (n, ct) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(n).map_err(|_| SecretError::Corrupt)?;
        let pt = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| SecretError::Corrupt)
    }

    /// Whether a stored value is sealed (imports may carry plaintext keys).
    #[must_use]
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

fn key_id(raw: &[u8]) -> String {
    sha256_hex(raw)[..8].to_string()
}

/// Lower-case hex SHA-256.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The lookup hash of a gateway API key.
#[must_use]
pub fn hash_api_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// A new gateway API key: `prefix` + 48 random alphanumerics (≈ 285 bits).
#[must_use]
pub fn generate_api_key(prefix: &str) -> String {
    let body: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// A random URL-safe token of `bytes` random bytes (refresh tokens, CSRF tokens).
#[must_use]
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A readable password for generated admin accounts.
#[must_use]
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Masks a secret for display: keeps a short head and tail of long values only.
#[must_use]
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "****".to_string();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let k1 = Cipher::decode_key(&Cipher::generate_key()).unwrap();
        let k2 = Cipher::decode_key(&Cipher::generate_key()).unwrap();
        let old = Cipher::new(&k1, &[]).unwrap();
        let sealed = old.seal("sk-ant-secret-value").unwrap();
        assert!(Cipher::is_sealed(&sealed));
        assert!(!sealed.contains("secret-value"));
        assert_eq!(old.open(&sealed).unwrap(), "sk-ant-secret-value");
        // Two seals of the same value differ (random nonce).
        assert_ne!(old.seal("x").unwrap(), old.seal("x").unwrap());

        let rotated = Cipher::new(&k2, std::slice::from_ref(&k1)).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), "sk-ant-secret-value");
        let resealed = rotated.seal("v").unwrap();
        assert!(matches!(
            old.open(&resealed),
            Err(SecretError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let c = Cipher::new(&[7u8; 32], &[]).unwrap();
        let sealed = c.seal("secret").unwrap();
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(c.open(&tampered), Err(SecretError::Corrupt));
        assert_eq!(c.open("plain"), Err(SecretError::NotSealed));
    }

    #[test]
    fn keys_decode_from_hex_or_base64() {
        let hex = "00".repeat(32);
        assert_eq!(Cipher::decode_key(&hex).unwrap(), vec![0u8; 32]);
        assert!(matches!(
            Cipher::decode_key("c2hvcnQ="),
            Err(SecretError::KeyLength(5))
        ));
    }

    #[test]
    fn api_keys_and_masks() {
        let k = generate_api_key("sk-");
        assert!(k.starts_with("sk-") && k.len() == 51);
        assert!(k[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(hash_api_key(&k).len(), 64);
        assert_eq!(mask("sk-ant-api03-abcdefgh1234"), "sk-ant…1234");
        assert_eq!(mask("short"), "****");
    }
}

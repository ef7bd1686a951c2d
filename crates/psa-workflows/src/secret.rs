//! Without mail, the new admin's invitation link travels through Temporal (activity result,
//! workflow result) only encrypted with XChaCha20-Poly1305 under `PSA_SECRET_KEY`, so Temporal's
//! history, which operators can read, never holds it in plain text. The worker encrypts; the
//! starter who waited for the run (`psa tenant create`, `psa demo`) decrypts with the same key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

/// The key, parsed from base64 (32 bytes).
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("PSA_SECRET_KEY must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
    BadKey,
    #[error("the sealed secret could not be opened with this PSA_SECRET_KEY")]
    Open,
}

impl SecretKey {
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| SecretError::BadKey)?;
        let key = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(SecretKey(key))
    }

    /// A new random key, base64-encoded (for `psa demo` and tests).
    pub fn generate_base64() -> String {
        STANDARD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, secret: &SecretString) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .0
            .encrypt(&nonce, secret.expose_secret().as_bytes())
            .expect("encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if bytes.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let k = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let sealed = k.seal(&SecretString::from("hunter2-Secret!".to_owned()));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(k.open(&sealed).unwrap().expose_secret(), "hunter2-Secret!");
        let other = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(k.open("garbage").is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{k:?}").contains('='));
    }
}

//! Secrets the platform must keep but never show again (webhook signing secrets) or must pass
//! through Temporal (the new admin's invitation link when the worker sends no mail) are sealed
//! with XChaCha20-Poly1305 under `PSA_SECRET_KEY`, so the database and Temporal's history, which
//! operators can read, never hold them in plain text.
//!
//! A sealed value names what it seals: its purpose and its row (the endpoint, the run) are the
//! cipher's associated data, so a sealed webhook secret cannot be replayed as an invitation link
//! or as another endpoint's secret. The key can be rotated: `PSA_SECRET_KEY_PREVIOUS` (comma
//! separated) keeps older keys for reading, a sealed value names the key that sealed it, and
//! `psa secrets reseal` moves every stored value to the current key.
//!
//! Format: `psa2.<key id>.<base64(nonce || ciphertext)>` (the key id is the first 4 bytes of the
//! key's SHA-256, in hex). Values of the first format (`base64(nonce || ciphertext)`, no
//! associated data) are still read, until resealed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// What a sealed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A webhook endpoint's signing secret (the row: the endpoint's id).
    WebhookSecret,
    /// The new admin's invitation link passed through Temporal (the row: the run's workflow id).
    InvitationLink,
    /// The secret half of one of the platform's own keys (the row: the key's name).
    PlatformKey,
    /// A user's authenticator-app (TOTP) secret (the row: `tenant/user`).
    TotpSecret,
    /// A tenant's client secret at its single sign-on provider (the row: the tenant's id).
    SsoClientSecret,
}

impl Sealed {
    fn as_str(self) -> &'static str {
        match self {
            Sealed::WebhookSecret => "webhook_secret",
            Sealed::InvitationLink => "invitation_link",
            Sealed::PlatformKey => "platform_key",
            Sealed::TotpSecret => "totp_secret",
            Sealed::SsoClientSecret => "sso_client_secret",
        }
    }
}

#[derive(Clone)]
struct Cipher {
    id: String,
    aead: XChaCha20Poly1305,
}

impl Cipher {
    fn from_base64(s: &str) -> Result<Cipher, SecretError> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        let aead = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        let id = Sha256::digest(&bytes)[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Cipher { id, aead })
    }
}

/// The current key, and the previous ones kept for reading.
#[derive(Clone)]
pub struct SecretKey {
    current: Cipher,
    previous: Vec<Cipher>,
}

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

const PREFIX: &str = "psa2.";

fn associated(purpose: Sealed, row: &str) -> Vec<u8> {
    format!("psa-sealed/2|{}|{row}", purpose.as_str()).into_bytes()
}

impl SecretKey {
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        Ok(SecretKey {
            current: Cipher::from_base64(s)?,
            previous: Vec::new(),
        })
    }

    /// With older keys kept for reading (`PSA_SECRET_KEY_PREVIOUS`: separated by commas or
    /// white space, so a file may hold one per line).
    pub fn with_previous(mut self, previous: &str) -> Result<Self, SecretError> {
        for k in previous
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
        {
            self.previous.push(Cipher::from_base64(k)?);
        }
        Ok(self)
    }

    /// A new random key, base64-encoded (for `psa demo` and tests).
    pub fn generate_base64() -> String {
        STANDARD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// The current key's id (as sealed values name it).
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `secret` as `purpose` of `row`, under the current key.
    pub fn seal_for(&self, secret: &SecretString, purpose: Sealed, row: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated(purpose, row);
        let ct = self
            .current
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend(ct);
        format!("{PREFIX}{}.{}", self.current.id, STANDARD.encode(out))
    }

    /// Opens a value sealed as `purpose` of `row` (by the current key or a previous one); a
    /// value sealed for another purpose or row, or by an unknown key, does not open.
    pub fn open_for(
        &self,
        sealed: &str,
        purpose: Sealed,
        row: &str,
    ) -> Result<SecretString, SecretError> {
        let Some(rest) = sealed.strip_prefix(PREFIX) else {
            return self.open_first_format(sealed);
        };
        let (id, body) = rest.split_once('.').ok_or(SecretError::Open)?;
        let cipher = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|c| c.id == id)
            .ok_or(SecretError::Open)?;
        let bytes = STANDARD.decode(body).map_err(|_| SecretError::Open)?;
        if bytes.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = bytes.split_at(24);
        let aad = associated(purpose, row);
        let plain = cipher
            .aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Open)
    }

    /// Whether `sealed` is under the current key, bound to its purpose (nothing to reseal).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(id, _)| id == self.current.id)
    }

    /// A value of the first format (before purposes and key ids), under any known key.
    fn open_first_format(&self, sealed: &str) -> Result<SecretString, SecretError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| SecretError::Open)?;
        if bytes.len() < 24 {
            return Err(SecretError::Open);
        }
        let (nonce, ct) = bytes.split_at(24);
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find_map(|c| c.aead.decrypt(XNonce::from_slice(nonce), ct).ok())
            .and_then(|plain| String::from_utf8(plain).ok())
            .map(SecretString::from)
            .ok_or(SecretError::Open)
    }
}

/// The name of the key export archives are encrypted to (`platform_keys`).
pub const ARCHIVE_KEY: &str = "export_archives";

/// The tenant tables' sealed columns, opened for a move's archive and sealed again by its import.
impl psa_models::exports::Sealer for SecretKey {
    fn open(
        &self,
        column: psa_models::exports::SealedColumn,
        row: &str,
        sealed: &str,
    ) -> psa_models::Result<String> {
        self.open_for(sealed, purpose_of(column), row)
            .map(|s| s.expose_secret().to_owned())
            .map_err(|e| psa_models::Error::Internal(format!("{row}: {e}").into()))
    }

    fn seal(&self, column: psa_models::exports::SealedColumn, row: &str, plain: &str) -> String {
        self.seal_for(&SecretString::from(plain), purpose_of(column), row)
    }
}

fn purpose_of(column: psa_models::exports::SealedColumn) -> Sealed {
    match column {
        psa_models::exports::SealedColumn::TotpSecret => Sealed::TotpSecret,
        psa_models::exports::SealedColumn::SsoClientSecret => Sealed::SsoClientSecret,
    }
}

/// The key export archives are encrypted to: read from `platform_keys` and opened with `key`,
/// or made on first use (the first process to make it wins; every process uses the one stored).
pub async fn archive_key(
    pool: &sqlx::PgPool,
    key: &SecretKey,
) -> Result<psa_models::exports::ArchiveKey, psa_models::Error> {
    use psa_models::exports;
    if exports::platform_key(pool, ARCHIVE_KEY).await?.is_none() {
        let identity = age::pq::Identity::generate();
        let sealed = key.seal_for(&identity.to_string(), Sealed::PlatformKey, ARCHIVE_KEY);
        exports::insert_platform_key(
            pool,
            ARCHIVE_KEY,
            &identity.to_public().to_string(),
            &sealed,
        )
        .await?;
    }
    let (_, sealed) = exports::platform_key(pool, ARCHIVE_KEY)
        .await?
        .ok_or_else(|| psa_models::Error::internal(SecretError::Open))?;
    let opened = key
        .open_for(&sealed, Sealed::PlatformKey, ARCHIVE_KEY)
        .map_err(|_| psa_models::Error::Unavailable {
            code: "unavailable",
            message: "the export archives' key cannot be opened with this PSA_SECRET_KEY (set the \
                      key that sealed it in PSA_SECRET_KEY_PREVIOUS)"
                .into(),
        })?;
    let identity: age::pq::Identity = opened
        .expose_secret()
        .parse()
        .map_err(|e: &str| psa_models::Error::internal(std::io::Error::other(e)))?;
    Ok(psa_models::exports::ArchiveKey::new(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_base64(&SecretKey::generate_base64()).unwrap()
    }

    #[test]
    fn sealed_for_one_purpose_and_row_opens_only_there() {
        let k = key();
        let secret = SecretString::from("hunter2-Secret!".to_owned());
        let sealed = k.seal_for(&secret, Sealed::WebhookSecret, "endpoint-1");
        assert!(!sealed.contains("hunter2"));
        assert!(sealed.starts_with(&format!("psa2.{}.", k.current_id())));
        let open = |s: &str, p, r| k.open_for(s, p, r).map(|v| v.expose_secret().to_owned());
        assert_eq!(
            open(&sealed, Sealed::WebhookSecret, "endpoint-1").unwrap(),
            "hunter2-Secret!"
        );
        // Another row, another purpose: refused.
        assert!(open(&sealed, Sealed::WebhookSecret, "endpoint-2").is_err());
        assert!(open(&sealed, Sealed::InvitationLink, "endpoint-1").is_err());
        // Another key: refused; garbage: refused; a bad key: refused.
        assert!(
            key()
                .open_for(&sealed, Sealed::WebhookSecret, "endpoint-1")
                .is_err()
        );
        assert!(open("garbage", Sealed::WebhookSecret, "x").is_err());
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
        assert!(!format!("{k:?}").contains('='));
    }

    #[test]
    fn a_rotated_key_still_reads_what_the_previous_one_sealed() {
        let (old, new) = (SecretKey::generate_base64(), SecretKey::generate_base64());
        let before = SecretKey::from_base64(&old).unwrap();
        let sealed = before.seal_for(
            &SecretString::from("whsec_x".to_owned()),
            Sealed::WebhookSecret,
            "e",
        );
        let after = SecretKey::from_base64(&new)
            .unwrap()
            .with_previous(&old)
            .unwrap();
        assert!(!after.is_current(&sealed));
        assert_eq!(
            after
                .open_for(&sealed, Sealed::WebhookSecret, "e")
                .unwrap()
                .expose_secret(),
            "whsec_x"
        );
        // Without the previous key it cannot.
        assert!(
            SecretKey::from_base64(&new)
                .unwrap()
                .open_for(&sealed, Sealed::WebhookSecret, "e")
                .is_err()
        );
        // A value of the first format is read under any known key.
        let first = {
            let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
            let ct = before.current.aead.encrypt(&nonce, &b"legacy"[..]).unwrap();
            let mut out = nonce.to_vec();
            out.extend(ct);
            STANDARD.encode(out)
        };
        assert_eq!(
            after
                .open_for(&first, Sealed::WebhookSecret, "e")
                .unwrap()
                .expose_secret(),
            "legacy"
        );
    }
}

//! Passwords chosen by their users: the strength rule, and hashing (argon2id). Generated
//! passwords are only used as the hash that unknown accounts are checked against.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::distr::{Distribution, Uniform};
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result};

/// The reference's alphabet for generated passwords (70 symbols).
pub const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*";
/// Length of generated passwords: 16 symbols of 70 is about 98 bits.
pub const GENERATED_LENGTH: usize = 16;

/// A random password from the operating system's CSPRNG (the hash unknown accounts are checked
/// against). Each symbol is drawn uniformly
/// (rejection sampling, unlike the reference's biased `byte % 70`).
pub fn generate() -> SecretString {
    // ThreadRng is a CSPRNG (ChaCha) seeded from the operating system.
    let mut rng = rand::rng();
    generate_with(&mut rng)
}

fn generate_with(rng: &mut impl Rng) -> SecretString {
    let pick = Uniform::new(0, ALPHABET.len()).expect("non-empty alphabet");
    let s: String = (0..GENERATED_LENGTH)
        .map(|_| char::from(ALPHABET[pick.sample(rng)]))
        .collect();
    SecretString::from(s)
}

/// The shortest password accepted (NIST SP 800-63B asks for 8 at least; 12 is OWASP ASVS 5's).
pub const MIN_LENGTH: usize = 12;
/// The longest: argon2 hashes any length, but a megabyte password would be a cheap way to burn
/// a core.
pub const MAX_LENGTH: usize = 256;

/// Checks a password a user chose: 12 to 256 characters, and hard to guess by zxcvbn's estimate
/// (score 3 of 4: more than 10^8 guesses), with the user's own details (`context`: email, names,
/// tenant name) counted as known to an attacker. The error names the problem and, where zxcvbn
/// has one, a hint; it never contains the password.
pub fn check_strength(password: &SecretString, context: &[&str]) -> Result<()> {
    let p = password.expose_secret();
    let length = p.chars().count();
    if length < MIN_LENGTH {
        return Err(Error::validation(
            "password",
            format!("The password must be at least {MIN_LENGTH} characters long"),
        ));
    }
    if length > MAX_LENGTH {
        return Err(Error::validation(
            "password",
            format!("The password must be at most {MAX_LENGTH} characters long"),
        ));
    }
    let estimate = zxcvbn::zxcvbn(p, context);
    if estimate.score() < zxcvbn::Score::Three {
        let hint = estimate
            .feedback()
            .and_then(|f| {
                f.warning()
                    .map(|w| w.to_string())
                    .or_else(|| f.suggestions().first().map(|s| s.to_string()))
            })
            .unwrap_or_else(|| "Add more words or characters.".to_owned());
        return Err(Error::validation(
            "password",
            format!("The password is too easy to guess. {hint}"),
        ));
    }
    Ok(())
}

/// OWASP's argon2id minimum (m = 19 MiB, t = 2, p = 1): logins stay around 20-40 ms of one core.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password to a PHC string. CPU-heavy: runs on a blocking thread.
pub async fn hash(password: &SecretString) -> Result<String> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(Error::internal)?
}

pub fn hash_blocking(password: &SecretString) -> Result<String> {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| Error::internal(PhcError(e)))?;
    hasher()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(PhcError(e)))
}

/// Checks a password against a stored PHC string; `false` for a wrong password or a malformed
/// hash. CPU-heavy: runs on a blocking thread.
pub async fn verify(password: &SecretString, stored: &str) -> Result<bool> {
    let password = password.clone();
    let stored = stored.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        hasher()
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(Error::internal)
}

/// argon2's error type does not implement `std::error::Error` in every version; this wraps it.
#[derive(Debug)]
struct PhcError(argon2::password_hash::Error);

impl std::fmt::Display for PhcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "password hashing failed: {}", self.0)
    }
}

impl std::error::Error for PhcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_length_and_alphabet() {
        for _ in 0..200 {
            let p = generate();
            let s = p.expose_secret();
            assert_eq!(s.chars().count(), GENERATED_LENGTH);
            assert!(s.bytes().all(|b| ALPHABET.contains(&b)), "{s}");
        }
    }

    #[test]
    fn generated_passwords_differ_and_cover_the_alphabet() {
        let mut seen = std::collections::HashSet::new();
        let mut symbols = std::collections::HashSet::new();
        for _ in 0..500 {
            let p = generate();
            symbols.extend(p.expose_secret().bytes());
            assert!(seen.insert(p.expose_secret().to_owned()));
        }
        // 8000 uniform draws over 70 symbols miss one with probability ~ 70 * e^-114.
        assert_eq!(symbols.len(), ALPHABET.len());
    }

    #[test]
    fn strength_rule() {
        let check = |p: &str, ctx: &[&str]| check_strength(&SecretString::from(p.to_owned()), ctx);
        let short = check("Tr0ub4dor&3", &[]).unwrap_err().to_string();
        assert!(short.contains("at least 12"), "{short}");
        let weak = check("password1234", &[]).unwrap_err().to_string();
        assert!(
            weak.starts_with("The password is too easy to guess."),
            "{weak}"
        );
        assert!(!weak.contains("password1234"));
        // The user's own details are known to an attacker.
        assert!(check("ada.lovelace@acme.test", &["ada.lovelace@acme.test"]).is_err());
        assert!(check("ada.lovelace@acme.test", &[]).is_ok());
        assert!(check("correct horse battery staple", &[]).is_ok());
        assert!(
            check(&"x".repeat(257), &[])
                .unwrap_err()
                .to_string()
                .contains("at most 256")
        );
        // Characters, not bytes: twelve accented letters are twelve.
        assert!(
            check("ééééééééééé", &[])
                .unwrap_err()
                .to_string()
                .contains("at least")
        );
    }

    #[test]
    fn alphabet_is_the_reference_one() {
        assert_eq!(ALPHABET.len(), 70);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let p = SecretString::from("hunter2-very-secret".to_owned());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let p = generate();
        let h = hash(&p).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!h.contains(p.expose_secret()));
        assert!(verify(&p, &h).await.unwrap());
        assert!(
            !verify(&SecretString::from("wrong".to_owned()), &h)
                .await
                .unwrap()
        );
        assert!(!verify(&p, "not a hash").await.unwrap());
    }
}

//! Parse, don't validate: input is turned once, at the edge, into types that cannot hold an
//! invalid value. The messages are the reference's, word for word where it had one.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Rejects control characters (newlines, NUL, escapes) in single-line text: they break logs and
/// exports and are never part of a name.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Invisible format characters: zero-width spaces and joiners, bidirectional overrides and
/// isolates, the soft hyphen, the byte-order mark, tag characters. In a name they make two
/// entries that look the same ("Acme" and "Acme\u{200b}") or text that reads backwards.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}')
}

/// Single-line text as stored: trimmed and in Unicode NFC (so that "Café" typed with a
/// combining accent and "Café" precomposed are the same name); `None` if it holds a control or
/// an invisible format character.
fn normalized(raw: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    let s: String = raw.trim().nfc().collect();
    (!s.chars().any(|c| c.is_control() || is_invisible(c))).then_some(s)
}

/// Trims; maps `""` (after trimming) to `None`. The reference's `cleanNullableFields`.
pub fn clean_optional(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A company name: trimmed, 1 to 255 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompanyName(String);

impl CompanyName {
    pub fn parse(raw: &str) -> Result<Self> {
        let Some(s) = normalized(raw) else {
            return Err(Error::validation(
                "company_name",
                "Company name must not contain control or invisible characters",
            ));
        };
        if s.is_empty() {
            return Err(Error::validation(
                "company_name",
                "Company name is required",
            ));
        }
        if s.chars().count() > 255 {
            return Err(Error::validation(
                "company_name",
                "Company name must be at most 255 characters",
            ));
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's full name: trimmed, 1 to 255 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FullName(String);

impl FullName {
    pub fn parse(raw: &str) -> Result<Self> {
        let Some(s) = normalized(raw) else {
            return Err(Error::validation(
                "full_name",
                "Full name must not contain control or invisible characters",
            ));
        };
        if s.is_empty() {
            return Err(Error::validation("full_name", "Full name is required"));
        }
        if s.chars().count() > 255 {
            return Err(Error::validation(
                "full_name",
                "Full name must be at most 255 characters",
            ));
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

static EMAIL_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$").expect("valid regex"));

/// An email address as stored: trimmed and lower-cased, matching the reference's
/// `^[^\s@]+@[^\s@]+\.[^\s@]+$`, at most 254 characters (RFC 5321), no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_field(raw, "email")
    }

    /// Like [`EmailAddress::parse`], naming `field` in the error.
    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self> {
        let Some(s) = normalized(raw).map(|s| s.to_lowercase()) else {
            return Err(Error::validation(
                field,
                "Please enter a valid email address",
            ));
        };
        if s.is_empty() {
            return Err(Error::validation(field, "Email address is required"));
        }
        if s.chars().count() > 254 || has_control(&s) || !EMAIL_RE.is_match(&s) {
            return Err(Error::validation(
                field,
                "Please enter a valid email address",
            ));
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

static TAG_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^[a-zA-Z0-9\-_\s!@#$%^&*()+=\[\]{};':",./<>?]+$"#).expect("valid regex")
});

/// Tag text: trimmed, 1 to 50 characters of the reference's ASCII set. Compared exactly
/// (case-sensitive) when definitions are reused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagText(String);

impl TagText {
    pub fn parse(raw: &str) -> Result<Self> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(Error::validation("tag_text", "Tag text is required"));
        }
        if s.chars().count() > 50 {
            return Err(Error::validation(
                "tag_text",
                "Tag text too long (max 50 characters)",
            ));
        }
        // `\s` in the reference's class admits tabs and newlines; a tag is one line.
        if !TAG_RE.is_match(s) || has_control(s) {
            return Err(Error::validation(
                "tag_text",
                "Tag text contains invalid characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tenant's slug: the short name people type or follow in a sign-in link
/// (`/console/sign-in?org=SLUG`). Lowercase `a-z`, `0-9` and `-`, 3 to 63 characters, no hyphen
/// at either end (the database checks the same).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self> {
        let s = raw.trim();
        let invalid = |message: &'static str| Err(Error::validation("slug", message));
        if !(3..=63).contains(&s.len()) {
            return invalid("The slug must be 3 to 63 characters long");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid("The slug may contain only lowercase letters a-z, digits and hyphens");
        }
        if s.starts_with('-') || s.ends_with('-') {
            return invalid("The slug must not start or end with a hyphen");
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return invalid("The slug must not look like an organisation id");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A company's website: an absolute http(s) URL with a host, at most 2048 characters. A value
/// without a scheme is read as `https://` + value (what people type); the value is stored as
/// given, trimmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WebsiteUrl(String);

impl WebsiteUrl {
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_field(raw, "url")
    }

    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self> {
        let s = raw.trim();
        let invalid = || Error::validation(field, "Please enter a valid URL");
        if s.is_empty() || s.len() > 2048 || has_control(s) || s.chars().any(char::is_whitespace) {
            return Err(invalid());
        }
        let parsed = parse_http_url(s).ok_or_else(invalid)?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid());
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses `s` as an http(s) URL, prefixing `https://` when it has no scheme (the reference's rule).
pub(crate) fn parse_http_url(s: &str) -> Option<url::Url> {
    let lower = s.to_ascii_lowercase();
    let with_scheme = if lower.starts_with("http://") || lower.starts_with("https://") {
        s.to_owned()
    } else if s.contains("://") {
        return None;
    } else {
        format!("https://{s}")
    };
    let u = url::Url::parse(&with_scheme).ok()?;
    matches!(u.scheme(), "http" | "https").then_some(u)
}

/// A first or last name: trimmed, 1 to 100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonName(String);

impl PersonName {
    /// Parses a name; `field` and `label` name it in the error ("first_name", "First name").
    pub fn parse_field(raw: &str, field: &'static str, label: &str) -> Result<Self> {
        let Some(s) = normalized(raw) else {
            return Err(Error::validation(
                field,
                format!("{label} must not contain control or invisible characters"),
            ));
        };
        if s.is_empty() {
            return Err(Error::validation(field, format!("{label} is required")));
        }
        if s.chars().count() > 100 {
            return Err(Error::validation(
                field,
                format!("{label} must be at most 100 characters"),
            ));
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Values that crossed a serialisation boundary (a workflow's input in Temporal's history) are
/// parsed again on the way in: a domain type never holds an invalid value, whoever wrote the
/// bytes.
macro_rules! deserialize_by_parsing {
    ($($name:ident => $parse:expr),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                let parse: fn(&str) -> Result<$name> = $parse;
                parse(&raw).map_err(serde::de::Error::custom)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

deserialize_by_parsing! {
    CompanyName => CompanyName::parse,
    FullName => FullName::parse,
    EmailAddress => EmailAddress::parse,
    TagText => TagText::parse,
    PersonName => |s| PersonName::parse_field(s, "name", "Name"),
    Slug => Slug::parse,
}

/// Optional free text (notes, phone numbers, roles): trimmed, empty means absent, bounded.
pub fn optional_text(
    raw: Option<&str>,
    field: &'static str,
    max_chars: usize,
) -> Result<Option<String>> {
    let Some(s) = clean_optional(raw) else {
        return Ok(None);
    };
    if s.chars().count() > max_chars {
        return Err(Error::validation(
            field,
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    Ok(Some(s))
}

/// `companies.client_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClientType {
    #[default]
    Company,
    Individual,
}

/// `companies.billing_cycle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "kebab-case")]
#[sqlx(type_name = "text", rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BillingCycle {
    Weekly,
    BiWeekly,
    #[default]
    Monthly,
    Quarterly,
    SemiAnnually,
    Annually,
}

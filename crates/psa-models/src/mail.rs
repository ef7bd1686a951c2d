//! Mail: the welcome email, invitations and password resets, sent through SMTP.
//!
//! `PSA_SMTP_URL` names the server: `smtps://user:pass@host:465` (implicit TLS) or
//! `smtp://user:pass@host:587?tls=required` (STARTTLS). Plain `smtp://` is accepted only to a
//! loopback host (a local relay or a test sink): anything else would carry invitation links in
//! clear across a network. Messages have a text and an HTML part, rendered from the templates in
//! `templates/mail/` (HTML autoescaped).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

/// A settings mistake, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "PSA_SMTP_URL is not a valid SMTP URL (smtps://host:465 or smtp://host:587?tls=required)"
    )]
    BadUrl,
    #[error(
        "PSA_SMTP_URL sends in clear to {0}: use smtps:// (TLS) or ?tls=required (STARTTLS); plain smtp:// is for a loopback relay only"
    )]
    Cleartext(String),
    #[error(
        "PSA_MAIL_FROM is not a valid mailbox (\"psa <noreply@example.com>\" or noreply@example.com)"
    )]
    BadFrom,
    #[error("PSA_MAIL_FROM is required with PSA_SMTP_URL")]
    MissingFrom,
    #[error(
        "PSA_PUBLIC_URL must be an absolute http(s) URL without a query or fragment, e.g. https://psa.example.com"
    )]
    BadPublicUrl,
}

/// A message that could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Worth retrying: the server was unreachable, or answered with a temporary (4xx) code.
    pub transient: bool,
    pub message: String,
}

/// An SMTP connection pool and the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl std::fmt::Debug for Mailer {
    // The URL may carry the SMTP password: only the host is ever shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("host", &self.host).finish()
    }
}

impl Mailer {
    /// Must be called on a Tokio runtime (the connection pool runs on it).
    pub fn new(smtp_url: &SecretString, from: &str) -> Result<Self, ConfigError> {
        let raw = smtp_url.expose_secret();
        let url = url::Url::parse(raw).map_err(|_| ConfigError::BadUrl)?;
        let host = url.host_str().ok_or(ConfigError::BadUrl)?.to_owned();
        // lettre reads the first `tls` value: exactly one, and `required`, or it does not count.
        let tls: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned())
            .collect();
        if tls.len() > 1 {
            return Err(ConfigError::BadUrl);
        }
        let tls_required = tls.first().is_some_and(|v| v == "required");
        match url.scheme() {
            "smtps" => {}
            "smtp" if tls_required => {}
            "smtp" if is_loopback(&host) => {}
            "smtp" => return Err(ConfigError::Cleartext(host)),
            _ => return Err(ConfigError::BadUrl),
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(raw)
            .map_err(|_| ConfigError::BadUrl)?
            // A server that accepts the connection and then says nothing must not hold a step
            // (or a request) for lettre's default minute.
            .timeout(Some(Duration::from_secs(15)))
            .build();
        let from: Mailbox = from.trim().parse().map_err(|_| ConfigError::BadFrom)?;
        Ok(Mailer {
            transport,
            from,
            host,
        })
    }

    /// The server's host name (for logs: never the URL).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends `email` to `to` (`"Ada Lovelace" <ada@example.com>`).
    pub async fn send(&self, to_name: &str, to: &str, email: &Email) -> Result<(), SendError> {
        let permanent = |message: String| SendError {
            transient: false,
            message,
        };
        let address = to
            .parse()
            .map_err(|_| permanent(format!("the address {to} cannot be mailed")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(Some(to_name.to_owned()), address))
            .subject(&email.subject)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| permanent(format!("the message could not be built: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                transient: !e.is_permanent(),
                message: format!("SMTP {}: {e}", self.host),
            })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses `PSA_PUBLIC_URL`, the address users reach `psa serve` at (links in emails).
pub fn parse_public_url(raw: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(raw.trim()).map_err(|_| ConfigError::BadPublicUrl)?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(ConfigError::BadPublicUrl);
    }
    Ok(url)
}

/// A rendered message. Its parts carry a link (a credential): `Debug` does not show them.
#[derive(Clone)]
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    // `.html` templates are autoescaped: a tenant named `<script>` stays text.
    for (name, source) in [
        ("welcome.txt", include_str!("../templates/mail/welcome.txt")),
        (
            "welcome.html",
            include_str!("../templates/mail/welcome.html"),
        ),
        (
            "invitation.txt",
            include_str!("../templates/mail/invitation.txt"),
        ),
        (
            "invitation.html",
            include_str!("../templates/mail/invitation.html"),
        ),
        (
            "password_reset.txt",
            include_str!("../templates/mail/password_reset.txt"),
        ),
        (
            "password_reset.html",
            include_str!("../templates/mail/password_reset.html"),
        ),
        ("notice.txt", include_str!("../templates/mail/notice.txt")),
        ("notice.html", include_str!("../templates/mail/notice.html")),
        ("layout.html", include_str!("../templates/mail/layout.html")),
    ] {
        env.add_template(name, source)
            .expect("the mail templates are valid");
    }
    env
});

/// What an email is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first administrator of a new tenant.
    Welcome,
    /// A user invited by an administrator (or an operator).
    Invitation,
    PasswordReset,
}

impl Kind {
    fn template(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::Invitation => "invitation",
            Kind::PasswordReset => "password_reset",
        }
    }

    fn subject(self, tenant_name: &str) -> String {
        match self {
            Kind::Welcome => format!("Welcome to psa: {tenant_name} is ready"),
            Kind::Invitation => format!("You are invited to {tenant_name} on psa"),
            Kind::PasswordReset => format!("Reset your psa password for {tenant_name}"),
        }
    }
}

/// Who the email is for, and the link it carries.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub tenant_name: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub link: &'a SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Renders an email of `kind`.
pub fn render(kind: Kind, cx: Context<'_>) -> Email {
    let hours = ((cx.expires_at - Utc::now()).num_minutes().max(0) as u64).div_ceil(60);
    let values = minijinja::context! {
        tenant_name => cx.tenant_name,
        first_name => cx.first_name,
        last_name => cx.last_name,
        email => cx.email,
        link => cx.link.expose_secret(),
        expires_at => cx.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        valid_for => if hours <= 1 { "one hour".to_owned() } else { format!("{hours} hours") },
    };
    let render = |ext: &str| {
        TEMPLATES
            .get_template(&format!("{}.{ext}", kind.template()))
            .and_then(|t| t.render(&values))
            .expect("the mail templates render with these values")
    };
    Email {
        subject: kind.subject(cx.tenant_name),
        text: render("txt"),
        html: render("html"),
    }
}

/// A notice about the account, without a link (a second factor reset by an administrator, a
/// sign-in from a new device): `lines` are its paragraphs.
pub fn notice(tenant_name: &str, first_name: &str, subject: &str, lines: &[String]) -> Email {
    let values = minijinja::context! {
        tenant_name => tenant_name,
        first_name => first_name,
        subject => subject,
        lines => lines.to_vec(),
    };
    let render = |ext: &str| {
        TEMPLATES
            .get_template(&format!("notice.{ext}"))
            .and_then(|t| t.render(&values))
            .expect("the mail templates render with these values")
    };
    Email {
        subject: format!("{subject} ({tenant_name})"),
        text: render("txt"),
        html: render("html"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    // A mailer's connection pool lives on the Tokio runtime.
    #[tokio::test]
    async fn cleartext_only_to_loopback() {
        let from = "psa <noreply@example.com>";
        assert!(Mailer::new(&url("smtp://127.0.0.1:2525"), from).is_ok());
        assert!(Mailer::new(&url("smtp://localhost:25"), from).is_ok());
        assert!(Mailer::new(&url("smtp://[::1]:25"), from).is_ok());
        assert!(Mailer::new(&url("smtps://u:p@mail.example.com:465"), from).is_ok());
        assert!(Mailer::new(&url("smtp://mail.example.com:587?tls=required"), from).is_ok());
        // lettre reads the first value: a second one must not make an opportunistic URL pass.
        assert!(
            Mailer::new(
                &url("smtp://mail.example.com:587?tls=opportunistic&tls=required"),
                from
            )
            .is_err()
        );
        assert!(Mailer::new(&url("smtp://mail.example.com:587?tls=opportunistic"), from).is_err());
        let e = Mailer::new(&url("smtp://u:secret@mail.example.com:25"), from).unwrap_err();
        assert!(matches!(e, ConfigError::Cleartext(_)));
        assert!(!e.to_string().contains("secret"));
        assert!(matches!(
            Mailer::new(&url("http://mail.example.com"), from).unwrap_err(),
            ConfigError::BadUrl
        ));
        assert!(matches!(
            Mailer::new(&url("smtp://127.0.0.1:25"), "not an address").unwrap_err(),
            ConfigError::BadFrom
        ));
        let m = Mailer::new(&url("smtps://u:secret@mail.example.com"), from).unwrap();
        assert!(!format!("{m:?}").contains("secret"));
    }

    #[test]
    fn public_url() {
        assert!(parse_public_url("https://psa.example.com").is_ok());
        assert!(parse_public_url("http://127.0.0.1:8080/").is_ok());
        assert!(parse_public_url("psa.example.com").is_err());
        assert!(parse_public_url("ftp://psa.example.com").is_err());
        assert!(parse_public_url("https://psa.example.com/?a=1").is_err());
    }

    #[test]
    fn templates_name_the_tenant_and_the_user_and_escape_html() {
        let link = url("https://psa.example.com/invite#psa_i_abc");
        let e = render(
            Kind::Welcome,
            Context {
                tenant_name: "Acme <b>&</b> Co",
                first_name: "Ada",
                last_name: "Lovelace",
                email: "ada@acme.test",
                link: &link,
                expires_at: Utc::now() + chrono::Duration::hours(72),
            },
        );
        assert_eq!(e.subject, "Welcome to psa: Acme <b>&</b> Co is ready");
        assert!(e.text.contains("Ada") && e.text.contains("Acme <b>&</b> Co"));
        assert!(e.text.contains("https://psa.example.com/invite#psa_i_abc"));
        assert!(e.text.contains("72 hours"), "{}", e.text);
        assert!(
            !format!("{e:?}").contains("psa_i_abc"),
            "Debug hides the link"
        );
        assert!(
            e.html.contains("Acme &lt;b&gt;&amp;&lt;&#x2f;b&gt; Co"),
            "{}",
            e.html
        );
        // Attribute values are escaped too (`/` becomes `&#x2f;`); browsers decode them.
        assert!(
            e.html
                .contains("href=\"https:&#x2f;&#x2f;psa.example.com&#x2f;invite#psa_i_abc\""),
            "{}",
            e.html
        );
        for kind in [Kind::Invitation, Kind::PasswordReset] {
            let e = render(
                kind,
                Context {
                    tenant_name: "Acme",
                    first_name: "Ada",
                    last_name: "Lovelace",
                    email: "ada@acme.test",
                    link: &link,
                    expires_at: Utc::now() + chrono::Duration::hours(1),
                },
            );
            assert!(e.text.contains("psa_i_abc") && e.html.contains("psa_i_abc"));
            assert!(e.text.contains("one hour"), "{}", e.text);
        }
    }
}

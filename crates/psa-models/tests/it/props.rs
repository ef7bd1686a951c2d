//! Property tests of the parsers: they never panic, what they accept round-trips, and the
//! normalisations (trimming, lower-casing) hold.

use proptest::prelude::*;
use psa_models::validate::{CompanyName, EmailAddress, FullName, TagText, WebsiteUrl};
use psa_models::{colors, email_suffix};
use unicode_normalization::UnicodeNormalization;

proptest! {
    #[test]
    fn parsers_never_panic(s in any::<String>()) {
        let _ = CompanyName::parse(&s);
        let _ = FullName::parse(&s);
        let _ = EmailAddress::parse(&s);
        let _ = TagText::parse(&s);
        let _ = WebsiteUrl::parse(&s);
        let _ = email_suffix::extract(&s);
        let _ = colors::tag_colors(&s);
    }

    /// Valid names (printable characters around optional padding) are accepted, trimmed and
    /// round-trip. At most 82 characters: NFC expands a few (composition exclusions such as
    /// U+FB2C become up to three), and the 255-character limit is counted after it.
    #[test]
    fn valid_names_are_accepted_trimmed_and_round_trip(
        core in "[\\PC&&[^\\s]]([\\PC]{0,80}[\\PC&&[^\\s]])?", pad in "[ \t]{0,3}",
    ) {
        let s = format!("{pad}{core}{pad}");
        let n = CompanyName::parse(&s).unwrap();
        let nfc: String = s.trim().nfc().collect();
        prop_assert_eq!(n.as_str(), nfc.as_str());
        prop_assert_eq!(CompanyName::parse(n.as_str()).unwrap(), n.clone());
        let padded = format!("  {}\t", n.as_str());
        prop_assert_eq!(CompanyName::parse(&padded).unwrap(), n);
    }

    /// Blank, over-long, or names with a control character are refused, naming the field.
    #[test]
    fn invalid_names_are_refused(
        blank in "[ \t]{0,5}",
        long in "[a-z]{256,300}",
        (head, ctrl, tail) in ("[a-z]{1,10}", "[\\x00-\\x08\\x0b\\x0e-\\x1f\\x7f]", "[a-z]{1,10}"),
        invisible in "[\u{200b}-\u{200f}\u{202a}-\u{202e}\u{2060}\u{2066}-\u{2069}\u{feff}\u{ad}]",
    ) {
        for bad in [blank, long, format!("{head}{ctrl}{tail}"), format!("{head}{invisible}{tail}")] {
            let e = CompanyName::parse(&bad).unwrap_err();
            prop_assert_eq!(e.field(), Some("company_name"));
        }
    }

    #[test]
    fn emails_are_trimmed_lower_cased_and_idempotent(
        local in "[A-Za-z0-9._%+-]{1,20}", domain in "[A-Za-z0-9-]{1,20}", tld in "[A-Za-z]{2,6}",
        pad in "[ \t]{0,3}",
    ) {
        let raw = format!("{pad}{local}@{domain}.{tld}{pad}");
        let e = EmailAddress::parse(&raw).unwrap();
        prop_assert_eq!(e.as_str(), raw.trim().to_lowercase());
        prop_assert_eq!(e.as_str(), e.as_str().trim());
        prop_assert_eq!(EmailAddress::parse(e.as_str()).unwrap(), e.clone());
        prop_assert_eq!(EmailAddress::parse(&raw.to_uppercase()).unwrap(), e);
    }

    /// Anything without the `local@domain.tld` shape is refused.
    #[test]
    fn emails_without_the_reference_shape_are_refused(
        no_at in "[a-z0-9.]{0,30}",
        (local, domain) in ("[a-z0-9]{1,10}", "[a-z0-9]{1,10}"),
        (l2, d2, t2, sp) in ("[a-z]{1,8}", "[a-z]{1,8}", "[a-z]{2,4}", "[ \t]"),
    ) {
        for bad in [
            no_at,
            format!("{local}@{domain}"),
            format!("@{domain}.com"),
            format!("{l2}{sp}x@{d2}.{t2}"),
            format!("{l2}@@{d2}.{t2}"),
        ] {
            let e = EmailAddress::parse(&bad).unwrap_err();
            prop_assert_eq!(e.field(), Some("email"), "{}", bad);
        }
    }

    #[test]
    fn tag_text_round_trips(s in "[a-zA-Z0-9 !@#$%^&*()+=._-]{0,60}") {
        match TagText::parse(&s) {
            Ok(t) => {
                prop_assert_eq!(t.as_str(), s.trim());
                prop_assert!(t.as_str().len() <= 50);
                prop_assert_eq!(TagText::parse(t.as_str()).unwrap(), t);
            }
            Err(e) => prop_assert!(s.trim().is_empty() || s.trim().len() > 50, "{e}"),
        }
    }

    #[test]
    fn suffixes_are_lower_case_hosts_without_www(host in "(www\\.)?[a-zA-Z][a-zA-Z0-9-]{0,10}\\.(com|org|co\\.uk|de)", path in "(/[a-z]{0,5}){0,2}") {
        // `xn--` starts an IDNA label: "xn--" and what follows must be valid punycode, which a
        // random label is not (such a host is refused, rightly).
        prop_assume!(!host.to_lowercase().split('.').any(|l| l.starts_with("xn--")));
        let s = email_suffix::extract(&format!("https://{host}{path}")).unwrap();
        prop_assert_eq!(s.clone(), s.to_lowercase());
        let lower = host.to_lowercase();
        let expected = lower.strip_prefix("www.").unwrap_or(&lower);
        prop_assert_eq!(s.as_str(), expected);
    }

    #[test]
    fn colours_are_well_formed(s in any::<String>()) {
        let (bg, fg) = colors::tag_colors(&s);
        prop_assert!(bg.len() == 7 && bg.starts_with('#') && bg[1..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        prop_assert_eq!(fg, "#2C3E50");
        prop_assert!(colors::hue(&s) < 360);
    }
}

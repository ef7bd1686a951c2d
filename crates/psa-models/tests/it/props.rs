//! Property tests of the parsers: they never panic, what they accept round-trips, and the
//! normalisations (trimming, lower-casing) hold.

use proptest::prelude::*;
use psa_models::validate::{CompanyName, EmailAddress, FullName, TagText, WebsiteUrl};
use psa_models::{colors, email_suffix};

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

    #[test]
    fn accepted_names_are_trimmed_and_round_trip(s in "\\PC{0,300}") {
        if let Ok(n) = CompanyName::parse(&s) {
            prop_assert_eq!(n.as_str(), s.trim());
            prop_assert!(!n.as_str().is_empty() && n.as_str().chars().count() <= 255);
            prop_assert_eq!(CompanyName::parse(n.as_str()).unwrap(), n.clone());
            let padded = format!("  {}\t", n.as_str());
            prop_assert_eq!(CompanyName::parse(&padded).unwrap(), n);
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

    #[test]
    fn accepted_emails_have_the_reference_shape(s in "\\PC{0,60}") {
        if let Ok(e) = EmailAddress::parse(&s) {
            let (local, domain) = e.as_str().split_once('@').unwrap();
            prop_assert!(!local.is_empty() && domain.contains('.'));
            prop_assert!(!e.as_str().chars().any(char::is_whitespace));
            prop_assert_eq!(e.as_str().to_lowercase(), e.as_str());
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

//! Tag colours from the reference's shared string hash, so the same text gets the same colours
//! here as in the reference's `TagModel` (the path customer tracking used).

/// The reference's JavaScript hash: `h = c + ((h << 5) - h)` over UTF-16 code units, where the
/// shift wraps as int32 but the sum is a float64 that may leave the int32 range.
pub fn string_hash(text: &str) -> i64 {
    text.encode_utf16().fold(0i64, |h, c| {
        let shifted = ((h as u32 as i32).wrapping_shl(5)) as i64;
        i64::from(c) + shifted - h
    })
}

/// The hue (0..360) for a text.
pub fn hue(text: &str) -> u16 {
    (string_hash(text).unsigned_abs() % 360) as u16
}

/// HSL (s and l in 0..=1) to `#RRGGBB`, upper-case, with the "k = (n + h/30) mod 12" formula.
pub fn hsl_to_hex(h: f64, s: f64, l: f64) -> String {
    let a = s * l.min(1.0 - l);
    let f = |n: f64| {
        let k = (n + h / 30.0) % 12.0;
        let v = l - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0);
        (255.0 * v).round() as u8
    };
    format!("#{:02X}{:02X}{:02X}", f(0.0), f(8.0), f(4.0))
}

/// The text colour of every generated tag.
pub const TAG_TEXT_COLOR: &str = "#2C3E50";

/// `(background, text)` colours for a new tag definition.
pub fn tag_colors(text: &str) -> (String, String) {
    (
        hsl_to_hex(f64::from(hue(text)), 0.70, 0.85),
        TAG_TEXT_COLOR.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        assert_eq!(string_hash("PSA Customer"), 1_691_950_912);
        assert_eq!(hue("PSA Customer"), 232);
        assert_eq!(string_hash("AlgaDesk Customer"), -6_663_147_712);
        assert_eq!(hue("AlgaDesk Customer"), 232);
        assert_eq!(hue("VIP"), 29);
        assert_eq!(hue("a"), 97);
        assert_eq!(hue(""), 0);
    }

    #[test]
    fn psa_customer_colours() {
        assert_eq!(
            tag_colors("PSA Customer"),
            ("#BEC5F4".to_owned(), "#2C3E50".to_owned())
        );
    }

    #[test]
    fn hsl_primaries() {
        assert_eq!(hsl_to_hex(0.0, 1.0, 0.5), "#FF0000");
        assert_eq!(hsl_to_hex(120.0, 1.0, 0.5), "#00FF00");
        assert_eq!(hsl_to_hex(240.0, 1.0, 0.5), "#0000FF");
        assert_eq!(hsl_to_hex(0.0, 0.0, 1.0), "#FFFFFF");
    }
}

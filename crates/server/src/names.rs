//! User and group names: what may be one, and when two names are the same user.
//!
//! People recognise each other by name, so a name that looks like another's is an
//! impersonation: `alice`, `Alice`, Cyrillic `аlice`, fullwidth `ａlice` and `ali\u{200B}ce`
//! all read as "alice". A name is shown as it was registered, but unique by its *key*:
//! Unicode NFKC (which folds fullwidth and composed forms), lower-cased, then reduced to
//! its UTS #39 confusable skeleton (which maps look-alike letters of other scripts onto one
//! prototype). Invisible characters are refused outright rather than folded away.
//!
//! Case is folded before the skeleton is taken, so a capital I written for an l
//! (`aIice`) reads as `aiice`, a name of its own: that look-alike depends on the font.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_security::skeleton;

/// The longest name, in characters.
pub(crate) const MAX_NAME: usize = 32;

/// Why a name is refused (for a `bad_request` message), or `None` if it may be used.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME {
        return Some("must be 1 to 32 characters");
    }
    if name.chars().all(char::is_whitespace) {
        return Some("must not be only spaces");
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Some("must not begin or end with a space");
    }
    for c in name.chars() {
        if c.is_control() {
            return Some("must not contain control characters");
        }
        if c.general_category() == GeneralCategory::Format {
            return Some("must not contain invisible format characters (such as zero-width spaces or direction marks)");
        }
        if c.is_whitespace() && c != ' ' {
            return Some(
                "may contain plain spaces only (U+0020), no other kind of space or line break",
            );
        }
    }
    None
}

/// What two names share when they would be taken for each other: equal keys, same user.
pub fn name_key(name: &str) -> String {
    let folded: String = name.nfkc().collect::<String>().to_lowercase();
    skeleton(&folded).collect::<String>().nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_key() {
        let alice = name_key("alice");
        for other in ["Alice", "ALICE", "\u{0430}lice", "\u{FF41}lice", "a1ice"] {
            assert_eq!(name_key(other), alice, "{other:?}");
        }
        assert_eq!(name_key("jose\u{0301}"), name_key("jos\u{00E9}"));
        assert_ne!(name_key("alice"), name_key("alicia"));
        assert_ne!(name_key("bob"), name_key("rob"));
    }

    #[test]
    fn invisible_and_padded_names_are_refused() {
        for bad in [
            "",
            "   ",
            " alice",
            "alice ",
            "ali\u{200B}ce",
            "al\u{202E}ice",
            "a\u{0}b",
            "a\tb",
            "a\u{2028}b",
            "a\u{00A0}b",
            "\u{FEFF}alice",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} was accepted");
        }
        for good in ["alice", "Jane Doe", "josé", "日本語", "o'brien", "x_1"] {
            assert_eq!(name_problem(good), None, "{good:?}");
        }
        assert!(name_problem(&"a".repeat(33)).is_some());
    }
}

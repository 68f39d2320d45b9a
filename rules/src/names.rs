//! Which names the API accepts (queue names, job types, worker names, idempotency keys,
//! schedule names): at least one visible character, no control characters, a length limit.
//! One rule in one place: SQL's `job._check_name` raises with the problem this names, and the
//! hot paths call it inline.

use crate::quote_literal;

/// Characters that show nothing: white space (Unicode's White_Space, which includes the
/// no-break and ideographic spaces) and the default-ignorable format characters (zero-width
/// spaces and joiners, direction marks, the byte-order mark, fillers, variation selectors).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// What is wrong with `name` (phrased to follow the thing's name: "queue name …"), or None.
pub fn name_problem(name: &str, max_len: usize) -> Option<String> {
    let len = name.chars().count();
    if len > max_len {
        return Some(format!(
            "is too long: {len} characters, at most {max_len} allowed"
        ));
    }
    if name.chars().all(is_invisible) {
        return Some(if name.is_empty() {
            "must not be empty".to_owned()
        } else {
            "must have a visible character: it is only white space or invisible characters"
                .to_owned()
        });
    }
    if name.chars().any(char::is_control) {
        return Some(format!(
            "must not contain control characters: {}",
            quote_literal(name)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::name_problem;

    #[test]
    fn ordinary_names_pass() {
        for name in ["emails", "émails", "送信", "a b", "q-1/x:y", "🙂"] {
            assert_eq!(name_problem(name, 128), None, "{name}");
        }
    }

    #[test]
    fn names_that_show_nothing_are_refused() {
        for name in [
            "",
            " ",
            "\u{00a0}",
            "\u{200b}",
            " \u{2060}\u{feff} ",
            "\u{3000}",
            "\u{3164}",
        ] {
            assert!(name_problem(name, 128).is_some(), "{name:?}");
        }
    }

    #[test]
    fn control_characters_and_length_are_refused() {
        assert!(name_problem("a\nb", 128).unwrap().contains("control"));
        assert!(name_problem("a\u{0}b", 128).unwrap().contains("control"));
        assert!(name_problem(&"x".repeat(129), 128)
            .unwrap()
            .contains("too long"));
        assert_eq!(name_problem(&"é".repeat(128), 128), None); // characters, not bytes
    }
}

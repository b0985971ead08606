//! Rules for text users choose that more than one service checks: display
//! text (nicknames, signatures, greetings, device names) and phone numbers.
//!
//! Display text may be in any script (Chinese included); control characters
//! are refused and lengths count characters, not bytes.

use crate::RpcError;

/// Optional display text of at most `max` characters without control
/// characters; surrounding whitespace is trimmed.
pub fn display<'a>(field: &str, text: &'a str, max: usize) -> Result<&'a str, RpcError> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(RpcError::bad_request(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(RpcError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(text)
}

/// A phone number in international form, normalized: '+', then 7..=15
/// digits not starting with 0; spaces, '-' and parentheses are ignored.
/// `None` when `text` is not one.
pub fn phone(text: &str) -> Option<String> {
    let kept: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+')?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

/// Lowercases for case-insensitive matching (Unicode aware; Chinese is unchanged).
pub fn fold(text: &str) -> String {
    text.trim().to_lowercase()
}

/// Lower-cased without any whitespace: how a typed name is compared
/// ("Wang Xiao" and "wangxiao" alike).
pub fn compact(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// A name's pinyin, lower-cased and without tones or spaces, whole and by
/// initials ("王小明" → "wangxiaoming", "wxm"); other characters are kept as
/// they are, lower-cased ("Team 项目" → "teamxiangmu", "teamxm"). Chinese
/// users find people and groups by typing these.
pub fn pinyin(name: &str) -> (String, String) {
    use pinyin::ToPinyin;
    let lower = compact(name);
    let (mut full, mut initials) = (String::new(), String::new());
    for (c, p) in lower.chars().zip(lower.as_str().to_pinyin()) {
        match p {
            Some(p) => {
                full.push_str(p.plain());
                initials.push_str(p.first_letter());
            }
            None => {
                full.push(c);
                initials.push(c);
            }
        }
    }
    (full, initials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_pinyin_whole_and_by_initials() {
        assert_eq!(pinyin("王小明"), ("wangxiaoming".into(), "wxm".into()));
        assert_eq!(pinyin("Team 项目"), ("teamxiangmu".into(), "teamxm".into()));
        assert_eq!(pinyin(""), (String::new(), String::new()));
    }

    #[test]
    fn display_text_allows_chinese_and_refuses_control_characters() {
        assert_eq!(display("nickname", "  小明  ", 64).unwrap(), "小明");
        assert!(display("nickname", &"字".repeat(64), 64).is_ok());
        let err = display("nickname", &"字".repeat(65), 64).unwrap_err();
        assert!(err.message.contains("nickname"));
        assert!(display("nickname", "a\u{0}b", 64).is_err());
    }

    #[test]
    fn phones_are_normalized_to_international_form() {
        assert_eq!(
            phone("+86 138-0013-8000").as_deref(),
            Some("+8613800138000")
        );
        assert_eq!(phone("+1 (415) 555-0100").as_deref(), Some("+14155550100"));
        for bad in [
            "13800138000",
            "+",
            "+0123456789",
            "+12ab3456789",
            "+1234",
            &format!("+{}", "1".repeat(16)),
        ] {
            assert_eq!(phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn fold_lowercases_any_script() {
        assert_eq!(fold(" Alice "), "alice");
        assert_eq!(fold("王小明"), "王小明");
        assert_eq!(fold("ÉCOLE"), "école");
    }
}

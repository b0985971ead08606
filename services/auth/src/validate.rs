//! Rules for what users choose: usernames, passwords, display text.
//! Display text may be in any script (Chinese included); control characters
//! are refused and lengths count characters, not bytes.

use shared::RpcError;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const DISPLAY_MAX: usize = 64;

/// 3..=32 ASCII letters, digits, '_', '.', '-', starting with a letter.
pub fn username(name: &str) -> Result<(), RpcError> {
    let ok_len = (USERNAME_MIN..=USERNAME_MAX).contains(&name.len());
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_len && ok_start && ok_chars {
        Ok(())
    } else {
        Err(RpcError::bad_request(format!(
            "username must be {USERNAME_MIN}-{USERNAME_MAX} characters: letters, digits, '_', '.', '-', starting with a letter"
        )))
    }
}

/// 8..=128 characters.
pub fn password(password: &str) -> Result<(), RpcError> {
    let n = password.chars().count();
    if (PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        Ok(())
    } else {
        Err(RpcError::bad_request(format!(
            "password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"
        )))
    }
}

/// Optional display text (nickname, device name): up to 64 characters.
pub fn display_text<'a>(field: &str, text: &'a str) -> Result<&'a str, RpcError> {
    shared::text::display(field, text, DISPLAY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["bob", "alice_01", "Zed.x-y", &"a".repeat(32)] {
            assert!(username(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1bob",
            "_bob",
            "bo b",
            "张三",
            "bob!",
            &"a".repeat(33),
        ] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_count_characters() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password("密码密码密码密码").is_ok());
        assert!(password(&"x".repeat(129)).is_err());
    }
}

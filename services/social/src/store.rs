//! The social service's SQL. Runs on SQLite and PostgreSQL alike.
//!
//! By domain: [`profiles`], [`requests`], [`friends`] (with blocks).

mod friends;
mod profiles;
mod requests;

pub use friends::*;
pub use profiles::*;
pub use requests::*;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/social");

const PROFILE_COLUMNS: &str =
    "user_id, username, nickname, signature, avatar, created_at_ms, updated_at_ms";
const REQUEST_COLUMNS: &str =
    "id, from_user_id, to_user_id, greeting, status, created_at_ms, updated_at_ms";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ProfileRow {
    pub user_id: String,
    pub username: String,
    pub nickname: String,
    pub signature: String,
    pub avatar: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub from_user_id: String,
    pub to_user_id: String,
    pub greeting: String,
    pub status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

pub const PENDING: &str = "pending";
pub const ACCEPTED: &str = "accepted";
pub const REJECTED: &str = "rejected";

/// `$first, $first+1, ...` for `n` values of an `IN (...)` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_literal("a%b_c\\"), "a\\%b\\_c\\\\");
        assert_eq!(like_literal("小明"), "小明");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}

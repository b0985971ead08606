//! Words of a message, the same way for what is indexed and what is asked.
//!
//! SurrealDB's tokenizers split on spaces and classes of characters, so
//! they do not find a Chinese word inside unspaced text ("明天开会" is one
//! token to them). Text is cut here instead: Chinese by `jieba-rs` (its
//! dictionary is in the crate), in search mode for what is indexed (a
//! long word and the words inside it: 中华人民共和国, 中华, 人民, 共和国),
//! plus each Han character alone, so a one-character query finds it. Latin
//! words are lower-cased, their accents folded (café → cafe) and stemmed
//! (meetings → meet). The index then only splits on spaces: the terms it
//! holds are exactly those made here, and so are the highlights.

use std::sync::LazyLock;

use jieba_rs::Jieba;
use rust_stemmers::{Algorithm, Stemmer};

static JIEBA: LazyLock<Jieba> = LazyLock::new(Jieba::new);
static ENGLISH: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Loads the dictionary (about half a second) before the first message.
pub fn warm_up() {
    LazyLock::force(&JIEBA);
}

/// A term and where it is in the text (Unicode scalar values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub term: String,
    pub start: usize,
    pub end: usize,
}

fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// One token made comparable: lower-cased, accents folded, stemmed when it
/// is a Latin word; `None` for what is not a word (punctuation, spaces).
fn normalize(word: &str) -> Option<String> {
    if !word.chars().any(char::is_alphanumeric) {
        return None;
    }
    let mut folded = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if ('\u{00C0}'..='\u{024F}').contains(&c) {
                folded.push_str(&deunicode::deunicode_char(c).unwrap_or("").to_lowercase());
            } else {
                folded.push(c);
            }
        }
    }
    if folded.is_empty() {
        return None;
    }
    if folded.chars().all(|c| c.is_ascii_alphabetic()) {
        return Some(ENGLISH.stem(&folded).into_owned());
    }
    Some(folded)
}

/// A run of `text`: Han characters (cut into words by jieba) or other
/// letters and digits (one word), with where it starts (in characters).
enum Run<'a> {
    Han(&'a str, usize),
    Word(&'a str, usize),
}

/// Splits `text` into runs of Han characters and of other letters and
/// digits; what lies between (spaces, punctuation) is dropped. jieba would
/// cut a Latin word at an accented letter (Café: Caf, é).
fn runs(text: &str) -> Vec<Run<'_>> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Han,
        Word,
        Other,
    }
    let class = |c: char| {
        if is_han(c) {
            Class::Han
        } else if c.is_alphanumeric() {
            Class::Word
        } else {
            Class::Other
        }
    };
    let mut runs = Vec::new();
    let mut current: Option<(Class, usize, usize)> = None; // class, byte start, char start
    fn push<'a>(runs: &mut Vec<Run<'a>>, text: &'a str, run: (Class, usize, usize), end: usize) {
        let (k, b, c) = run;
        match k {
            Class::Han => runs.push(Run::Han(&text[b..end], c)),
            Class::Word => runs.push(Run::Word(&text[b..end], c)),
            Class::Other => {}
        }
    }
    for (i, (byte, ch)) in text.char_indices().enumerate() {
        let k = class(ch);
        match current {
            Some((ck, _, _)) if ck == k => {}
            Some(run) => {
                push(&mut runs, text, run, byte);
                current = Some((k, byte, i));
            }
            None => current = Some((k, byte, i)),
        }
    }
    if let Some(run) = current {
        push(&mut runs, text, run, text.len());
    }
    runs
}

/// The terms of `text` as indexed: search-mode words and single Han
/// characters, each with its place.
pub fn indexed(text: &str) -> Vec<Term> {
    let mut terms = Vec::new();
    for run in runs(text) {
        match run {
            Run::Word(word, start) => {
                if let Some(term) = normalize(word) {
                    terms.push(Term {
                        term,
                        start,
                        end: start + word.chars().count(),
                    });
                }
            }
            Run::Han(han, at) => {
                for (i, c) in han.chars().enumerate() {
                    terms.push(Term {
                        term: c.to_string(),
                        start: at + i,
                        end: at + i + 1,
                    });
                }
                for token in JIEBA.cut_for_search(han, true) {
                    if token.end - token.start > 1 {
                        terms.push(Term {
                            term: token.word.to_owned(),
                            start: at + token.start,
                            end: at + token.end,
                        });
                    }
                }
            }
        }
    }
    terms
}

/// What the index holds for `text`: its terms, space-separated.
pub fn indexed_string(text: &str) -> String {
    let terms = indexed(text);
    let mut out = String::with_capacity(text.len() * 2);
    for t in terms {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&t.term);
    }
    out
}

/// The terms a query asks for (each must be found), without repeats.
pub fn query(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    let mut add = |term: String| {
        if !terms.contains(&term) {
            terms.push(term);
        }
    };
    for run in runs(text) {
        match run {
            Run::Word(word, _) => {
                if let Some(term) = normalize(word) {
                    add(term);
                }
            }
            Run::Han(han, _) => {
                // Without the HMM: it can guess a word the dictionary does
                // not hold, which the message was never indexed under.
                for token in JIEBA.cut(han, false) {
                    add(token.word.to_owned());
                }
            }
        }
    }
    terms
}

/// Up to `width` characters of `text` around the first of `terms`, and
/// where each of `terms` is in it (character ranges of the snippet).
pub fn snippet(text: &str, terms: &[String], width: usize) -> (String, Vec<(usize, usize)>) {
    let chars: Vec<char> = text.chars().collect();
    let mut found: Vec<(usize, usize)> = indexed(text)
        .into_iter()
        .filter(|t| terms.contains(&t.term))
        .map(|t| (t.start, t.end))
        .collect();
    found.sort_unstable();
    // A match inside a longer one (a Han character of a matched word) is
    // covered by it.
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in found {
        match merged.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let first = merged.first().map_or(0, |m| m.0);
    let start = if chars.len() <= width {
        0
    } else {
        first.saturating_sub(width / 4).min(chars.len() - width)
    };
    let end = (start + width).min(chars.len());
    let snippet: String = chars[start..end].iter().collect();
    let highlights = merged
        .into_iter()
        .filter(|&(s, e)| s >= start && e <= end)
        .map(|(s, e)| (s - start, e - start))
        .collect();
    (snippet, highlights)
}

/// Whether a name (a group's, a nickname) matches what a user typed: its
/// text holds it (without case), or, typed in Latin letters, the name's
/// pinyin does, whole or by initials: `xiaoming`, `xiaom` and `xm` all find
/// 王小明, as Chinese users expect of the apps they use every day.
pub fn name_matches(name: &str, typed: &str) -> bool {
    let typed = shared::text::compact(typed);
    if typed.is_empty() {
        return false;
    }
    let lower = shared::text::compact(name);
    if lower.contains(&typed) {
        return true;
    }
    if !typed.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let (full, initials) = shared::text::pinyin(name);
    full.contains(&typed) || initials.contains(&typed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, term: &str) -> bool {
        indexed(text).iter().any(|t| t.term == term)
    }

    #[test]
    fn chinese_words_are_found_inside_unspaced_text() {
        assert!(has("我们明天开会讨论项目", "明天"));
        assert!(has("我们明天开会讨论项目", "开会"));
        assert!(has("我们明天开会讨论项目", "项目"));
        assert!(has("中华人民共和国", "共和国"));
        // One character alone is found too.
        assert!(has("我们明天开会讨论项目", "会"));
    }

    #[test]
    fn english_words_are_lowercased_folded_and_stemmed() {
        assert!(has("Meetings at the Café", "meet"));
        assert!(has("Meetings at the Café", "cafe"));
        assert_eq!(query("MEETING café"), vec!["meet", "cafe"]);
    }

    #[test]
    fn mixed_text_gives_both() {
        let t = "明天 meeting 改到3点";
        for term in ["明天", "meet", "改", "到", "3", "点"] {
            assert!(has(t, term), "{term} in {:?}", indexed(t));
        }
        assert_eq!(query("明天 meeting"), vec!["明天", "meet"]);
    }

    #[test]
    fn punctuation_and_spaces_are_no_terms() {
        assert!(query("  ，。!? ").is_empty());
        assert!(indexed_string("...").is_empty());
    }

    #[test]
    fn names_match_by_text_pinyin_and_initials() {
        for typed in [
            "小明",
            "xiaoming",
            "XiaoMing",
            "xiaom",
            "xm",
            "wxm",
            "wang xiao",
        ] {
            assert!(name_matches("王小明", typed), "{typed}");
        }
        for typed in ["xiaohong", "xh", "小红", "", "  "] {
            assert!(!name_matches("王小明", typed), "{typed:?}");
        }
        assert!(name_matches("Team 项目组", "team"));
        assert!(name_matches("Team 项目组", "xmz"));
        assert!(name_matches("Team 项目组", "xiangmu"));
    }

    #[test]
    fn a_snippet_marks_the_matches_in_characters() {
        let text = "周末一起去看电影吗？Let's watch a movie";
        let (snippet, marks) = snippet(text, &query("电影 movies"), 120);
        assert_eq!(snippet, text);
        let marked: Vec<String> = marks
            .iter()
            .map(|&(s, e)| snippet.chars().skip(s).take(e - s).collect())
            .collect();
        assert_eq!(marked, vec!["电影", "movie"]);
    }

    #[test]
    fn a_long_text_is_cut_around_the_first_match() {
        let text = format!("{} 项目报告 {}", "前".repeat(300), "后".repeat(300));
        let (snippet, marks) = snippet(&text, &query("报告"), 40);
        assert_eq!(snippet.chars().count(), 40);
        let (s, e) = marks[0];
        let marked: String = snippet.chars().skip(s).take(e - s).collect();
        assert_eq!(marked, "报告");
    }
}

//! A real speech engine for tests and the benchmark: `engines/speech.py`
//! (pocketsphinx behind the OpenAI-compatible transcription endpoint), and
//! speech to feed it, spoken by flite.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The test engine, listening until dropped.
pub struct Engine {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Engine {
    /// Starts it on `port` (0: any free one).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_with(port, &[])
    }

    /// Starts it with more arguments (`--fake TEXT`, `--language zh`).
    pub fn start_with(port: u16, args: &[&str]) -> anyhow::Result<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/engines/speech.py");
        let mut child = Command::new("python3")
            .args([script, "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the speech engine did not start: {line:?} (pip install pocketsphinx)"
                )
            })?
            .to_owned();
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` spoken by flite's slt voice, as WAV.
pub fn spoken(text: &str) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let wav = dir.path().join("speech.wav");
    let status = Command::new("flite")
        .args(["-voice", "slt", "-t", text, "-o"])
        .arg(&wav)
        .status()?;
    anyhow::ensure!(status.success(), "flite failed (apt-get install flite)");
    Ok(std::fs::read(wav)?)
}

/// The share of `expected`'s words missing from `heard` (a word error rate
/// that counts only deletions and substitutions).
pub fn missed(expected: &str, heard: &str) -> f64 {
    let heard: Vec<&str> = heard.split_whitespace().collect();
    let words: Vec<&str> = expected.split_whitespace().collect();
    let missing = words.iter().filter(|w| !heard.contains(w)).count();
    missing as f64 / words.len() as f64
}

/// Sends a voice message of `file_id` from `from` to `to` over HTTP; the
/// answer (`messageId`, `seq`, ...).
pub async fn send_voice(
    system: &crate::System,
    from: &crate::User,
    to: &crate::User,
    client_msg_id: &str,
    file_id: &str,
) -> anyhow::Result<serde_json::Value> {
    let (status, sent) = system
        .api()
        .send_method(
            reqwest::Method::POST,
            "/v1/messages",
            Some(&from.token),
            Some(serde_json::json!({
                "toUserId": to.user_id,
                "clientMsgId": client_msg_id,
                "body": { "voice": { "fileId": file_id } },
            })),
        )
        .await?;
    anyhow::ensure!(status == 200, "send: {status} {sent}");
    Ok(sent)
}

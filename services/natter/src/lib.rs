//! What the natter binary and the test harness share: the configuration of
//! a whole process ([`config`]) and the registry of the services it can run
//! ([`Service`]). Adding a service is one variant here, its configuration
//! section, and its `run`.

pub mod config;
pub mod nats_users;

use shared::Nats;
use shared::service::StartError;
use tokio_util::sync::CancellationToken;

pub use config::NatterConfig;

/// A service a natter process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Service {
    Auth,
    Messages,
    Presence,
    Social,
    Groups,
    Files,
    Speech,
    Edge,
}

impl Service {
    /// Every service, in start order (the edge last).
    pub const ALL: [Service; 8] = [
        Service::Auth,
        Service::Messages,
        Service::Presence,
        Service::Social,
        Service::Groups,
        Service::Files,
        Service::Speech,
        Service::Edge,
    ];

    /// Its name on the command line, in the configuration and as its NATS user.
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Messages => "messages",
            Service::Presence => "presence",
            Service::Social => "social",
            Service::Groups => "groups",
            Service::Files => "files",
            Service::Speech => "speech",
            Service::Edge => "edge",
        }
    }

    /// The micro service name its instances answer `$SRV.PING` with (the
    /// edge serves HTTP and WebSockets, no NATS endpoint).
    pub fn micro_name(self) -> Option<&'static str> {
        match self {
            Service::Auth => Some(auth::MICRO_NAME),
            Service::Messages => Some(messages::MICRO_NAME),
            Service::Presence => Some(presence::MICRO_NAME),
            Service::Social => Some(social::MICRO_NAME),
            Service::Groups => Some(groups::MICRO_NAME),
            Service::Files => Some(files::MICRO_NAME),
            Service::Speech => Some(speech::MICRO_NAME),
            Service::Edge => None,
        }
    }

    /// Runs the service with its section of `config` until `shutdown`.
    pub async fn run(
        self,
        config: &NatterConfig,
        nats: Nats,
        shutdown: CancellationToken,
    ) -> Result<(), StartError> {
        match self {
            Service::Auth => auth::run(config.auth(), nats, shutdown).await,
            Service::Messages => messages::run(config.messages(), nats, shutdown).await,
            Service::Presence => presence::run(config.presence(), nats, shutdown).await,
            Service::Social => social::run(config.social(), nats, shutdown).await,
            Service::Groups => groups::run(config.groups(), nats, shutdown).await,
            Service::Files => files::run(config.files(), nats, shutdown).await,
            Service::Speech => speech::run(config.speech(), nats, shutdown).await,
            Service::Edge => edge::run(config.edge(), nats, shutdown).await,
        }
    }
}

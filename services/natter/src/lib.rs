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

/// The search service's micro service name (its crate may not be built in).
pub const SEARCH_MICRO_NAME: &str = "natter-search";
/// The search service's durable consumer on `IM_EVENTS`.
pub const SEARCH_CONSUMER: &str = "natter-search";

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
    Search,
    Edge,
}

impl Service {
    /// Every service, in start order (the edge last).
    pub const ALL: [Service; 9] = [
        Service::Auth,
        Service::Messages,
        Service::Presence,
        Service::Social,
        Service::Groups,
        Service::Files,
        Service::Speech,
        Service::Search,
        Service::Edge,
    ];

    /// Whether this binary can run it: the search service (and SurrealDB)
    /// is left out of a binary built without the `search` feature; its
    /// search calls then reach a search service elsewhere on the cluster.
    pub fn built(self) -> bool {
        self != Service::Search || cfg!(feature = "search")
    }

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
            Service::Search => "search",
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
            Service::Search => Some(SEARCH_MICRO_NAME),
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
            #[cfg(feature = "search")]
            Service::Search => search::run(config.search(), nats, shutdown).await,
            #[cfg(not(feature = "search"))]
            Service::Search => {
                let _ = (nats, shutdown);
                Err(StartError::setup(
                    "the search service",
                    "this natter binary was built without the `search` feature; \
                     run search in a process built with it (cargo build -p natter)",
                ))
            }
            Service::Edge => edge::run(config.edge(), nats, shutdown).await,
        }
    }
}

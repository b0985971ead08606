//! Configuration of the edge.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use shared::config::{ConfigError, within};
use shared::nats::StreamsConfig;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API and WebSocket endpoint.
    pub listen: SocketAddr,
    /// Largest WebSocket message (after reassembly) and HTTP body, bytes.
    pub max_frame_bytes: usize,
    /// Seconds without any frame from a client before the edge closes it.
    pub idle_timeout_secs: u64,
    /// Seconds between the edge's WebSocket pings.
    pub ping_interval_secs: u64,
    /// Pushes and signals queued for one connection: past it, pushes are
    /// dropped and the connection reads them from the inbox once it has
    /// taken what is queued (signals are only dropped).
    pub send_queue: usize,
    /// Seconds a client may take to read what is written to it before it
    /// is disconnected (it resumes later from its cursor).
    pub slow_client_timeout_secs: u64,
    /// Sends one connection may have waiting for their ack.
    pub max_inflight_sends: usize,
    /// WebSocket connections this edge accepts at once.
    pub max_connections: usize,
    /// Seconds between presence heartbeats (a third of the presence TTL).
    pub heartbeat_interval_secs: u64,
    /// Seconds between writes of a device's acked cursor.
    pub cursor_flush_secs: u64,
    /// Seconds between checks that a connection has not missed a push (one
    /// direct get of the user's last inbox entry).
    pub inbox_check_secs: u64,
    /// Inbox replays (resumes and catch-ups) this edge runs at once.
    pub max_concurrent_replays: usize,
    /// Reverse proxies in front of this edge, as addresses or networks
    /// (`10.0.0.7`, `10.0.0.0/8`): for a request from one of them, the
    /// client's address is the last one in `client_ip_header`. Empty: the
    /// socket's peer is the client (a header from anyone else is ignored).
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy puts the client's address in.
    pub client_ip_header: String,
    /// Serve HTTPS and WSS with this certificate chain (PEM); with
    /// `tls_key_file`. Empty: plain HTTP (behind a TLS-terminating proxy).
    pub tls_cert_file: String,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: String,
    /// Seconds between looks at the two files; a change is served from the
    /// next handshake on.
    pub tls_reload_secs: u64,
    /// What one user may do on this edge, over all of their devices.
    pub per_user: PerUser,
    #[serde(skip)]
    pub streams: StreamsConfig,
}

/// Limits per user and edge (see `limits`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerUser {
    /// WebSockets open at once.
    pub sockets: usize,
    /// New WebSockets a minute (all at once if need be).
    pub socket_opens_per_minute: u32,
    /// Messages sent a second, sustained ...
    pub sends_per_second: u32,
    /// ... and at once.
    pub send_burst: u32,
    /// Inbox replays (`resume` frames) a minute, sustained ...
    pub resumes_per_minute: u32,
    /// ... and at once.
    pub resume_burst: u32,
}

impl Default for PerUser {
    fn default() -> Self {
        Self {
            sockets: 16,
            socket_opens_per_minute: 60,
            sends_per_second: 10,
            send_burst: 100,
            resumes_per_minute: 20,
            resume_burst: 20,
        }
    }
}

impl PerUser {
    fn validate(&self) -> Result<(), ConfigError> {
        within("edge.per_user.sockets", self.sockets, 1..=10_000)?;
        within(
            "edge.per_user.socket_opens_per_minute",
            self.socket_opens_per_minute,
            1..=1_000_000,
        )?;
        within(
            "edge.per_user.sends_per_second",
            self.sends_per_second,
            1..=1_000_000,
        )?;
        within("edge.per_user.send_burst", self.send_burst, 1..=1_000_000)?;
        within(
            "edge.per_user.resumes_per_minute",
            self.resumes_per_minute,
            1..=1_000_000,
        )?;
        within(
            "edge.per_user.resume_burst",
            self.resume_burst,
            1..=1_000_000,
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_frame_bytes: 64 * 1024,
            idle_timeout_secs: 60,
            ping_interval_secs: 20,
            send_queue: 256,
            slow_client_timeout_secs: 10,
            max_inflight_sends: 64,
            max_connections: 100_000,
            heartbeat_interval_secs: 30,
            cursor_flush_secs: 1,
            inbox_check_secs: 30,
            max_concurrent_replays: 64,
            trusted_proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_reload_secs: 10,
            per_user: PerUser::default(),
            streams: StreamsConfig::default(),
        }
    }
}

impl Config {
    /// Whether the edge terminates TLS itself.
    pub fn tls(&self) -> bool {
        !self.tls_cert_file.is_empty()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid(what.into()))
            }
        };
        within(
            "edge.max_frame_bytes",
            self.max_frame_bytes,
            1024..=16 << 20,
        )?;
        within("edge.idle_timeout_secs", self.idle_timeout_secs, 2..=3600)?;
        check(
            self.ping_interval_secs >= 1 && self.ping_interval_secs < self.idle_timeout_secs,
            "edge.ping_interval_secs must be at least 1 and below idle_timeout_secs",
        )?;
        within("edge.send_queue", self.send_queue, 16..=65_536)?;
        within(
            "edge.slow_client_timeout_secs",
            self.slow_client_timeout_secs,
            1..=300,
        )?;
        within("edge.max_inflight_sends", self.max_inflight_sends, 1..=1024)?;
        check(
            self.max_connections >= 1,
            "edge.max_connections must be at least 1",
        )?;
        within(
            "edge.heartbeat_interval_secs",
            self.heartbeat_interval_secs,
            1..=1200,
        )?;
        within("edge.cursor_flush_secs", self.cursor_flush_secs, 1..=60)?;
        within("edge.inbox_check_secs", self.inbox_check_secs, 1..=3600)?;
        within(
            "edge.max_concurrent_replays",
            self.max_concurrent_replays,
            1..=10_000,
        )?;
        for proxy in &self.trusted_proxies {
            if network(proxy).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "edge.trusted_proxies: {proxy:?} is not an address or network (10.0.0.7, 10.0.0.0/8)"
                )));
            }
        }
        check(
            axum::http::HeaderName::try_from(self.client_ip_header.as_str()).is_ok(),
            "edge.client_ip_header is not a header name",
        )?;
        check(
            self.tls_cert_file.is_empty() == self.tls_key_file.is_empty(),
            "edge.tls_cert_file and edge.tls_key_file go together",
        )?;
        within("edge.tls_reload_secs", self.tls_reload_secs, 1..=86_400)?;
        self.per_user.validate()?;
        self.streams.validate()
    }

    /// The client's address for a request from `peer` with `headers`. From
    /// a trusted proxy: the header's addresses read from the right (each
    /// proxy appends the address it heard from), past the trusted proxies;
    /// the first other one is the client. Anything unreadable on the way
    /// ends the walk at the last trusted hop: an address further left may
    /// be the client's own invention.
    pub fn client_ip(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let trusted: Vec<ipnet::IpNet> = self
            .trusted_proxies
            .iter()
            .filter_map(|p| network(p))
            .collect();
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        let peer = peer.to_canonical();
        if !is_trusted(&peer) {
            return peer;
        }
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(self.client_ip_header.as_str()) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(&client) {
                return client;
            }
        }
        client
    }
}

/// An address (a network of one) or a network in CIDR form.
fn network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_names_it() {
        let mut config = Config::default();
        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().unwrap(),
        );
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(config.client_ip(proxy, &headers), proxy);
        config.trusted_proxies = vec!["10.0.0.0/8".into()];
        assert_eq!(
            config.client_ip(proxy, &headers),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        // Several trusted hops are walked past; an unreadable entry stops
        // the walk there instead of reaching a forged one further left.
        config.trusted_proxies = vec!["10.0.0.0/8".into()];
        let mut chain = axum::http::HeaderMap::new();
        chain.append(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        assert_eq!(
            config.client_ip(proxy, &chain),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let mut garbled = axum::http::HeaderMap::new();
        garbled.append("x-forwarded-for", "6.6.6.6, unknown".parse().unwrap());
        assert_eq!(config.client_ip(proxy, &garbled), proxy);
        let mut mapped = axum::http::HeaderMap::new();
        mapped.append("x-forwarded-for", "::ffff:203.0.113.9".parse().unwrap());
        assert_eq!(
            config.client_ip(proxy, &mapped),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(config.client_ip(stranger, &headers), stranger);
        config.trusted_proxies = vec!["10.1.2.3".into()];
        assert_eq!(
            config.client_ip(proxy, &axum::http::HeaderMap::new()),
            proxy,
            "no header: the proxy itself"
        );
        assert!(config.validate().is_ok());
        config.trusted_proxies = vec!["not-an-ip".into()];
        assert!(config.validate().is_err());
    }
}

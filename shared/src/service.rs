//! Running NATS micro service endpoints: each request is handled in its own
//! task (bounded per endpoint), answered with [`crate::rpc::respond`], and
//! shutdown stops taking requests, then waits for the ones in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, endpoint::Endpoint};
use futures::StreamExt;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::rpc::{self, RpcError};

/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `work` every `period` (the first time at once) until `shutdown`;
/// a round in progress finishes first.
pub async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => work().await,
        }
    }
}

/// Hands every message of the durable pull consumer `config` on `stream`
/// to `handle`, one at a time, until `shutdown`; the consumer (and its
/// pull) is made again a second after it fails. `handle` acks.
pub async fn consume<F, Fut>(
    stream: &async_nats::jetstream::stream::Stream,
    config: async_nats::jetstream::consumer::pull::Config,
    shutdown: &CancellationToken,
    mut handle: F,
) where
    F: FnMut(async_nats::jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    consume_batches(stream, config, shutdown, 1, |batch| {
        let handled = batch.into_iter().next().map(&mut handle);
        async move {
            if let Some(handled) = handled {
                handled.await;
            }
        }
    })
    .await;
}

/// Like [`consume`], but hands over what has arrived together, up to
/// `max` messages in stream order, once the previous batch is handled
/// (the consumer's `max_ack_pending` bounds how many can be waiting).
pub async fn consume_batches<F, Fut>(
    stream: &async_nats::jetstream::stream::Stream,
    config: async_nats::jetstream::consumer::pull::Config,
    shutdown: &CancellationToken,
    max: usize,
    mut handle: F,
) where
    F: FnMut(Vec<async_nats::jetstream::Message>) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = config.durable_name.clone().unwrap_or_default();
    let pause = || async {
        tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        }
    };
    loop {
        let messages = match stream.get_or_create_consumer(&name, config.clone()).await {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut chunks = match messages {
            Ok(messages) => messages.ready_chunks(max.max(1)),
            Err(e) => {
                tracing::warn!(error = %e, consumer = %name, "cannot pull from the consumer");
                if pause().await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = chunks.next() => next,
            };
            let Some(chunk) = next else { break };
            let mut batch = Vec::with_capacity(chunk.len());
            for message in chunk {
                match message {
                    Ok(message) => batch.push(message),
                    Err(e) => tracing::debug!(error = %e, consumer = %name, "consumer error"),
                }
            }
            if !batch.is_empty() {
                handle(batch).await;
            }
        }
    }
}

/// Serves `endpoint` until `shutdown`: at most `concurrency` requests at once.
pub async fn serve<Resp, F, Fut>(
    mut endpoint: Endpoint,
    concurrency: usize,
    shutdown: CancellationToken,
    handler: F,
) where
    Resp: Message + 'static,
    F: Fn(Arc<Request>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let handler = Arc::new(handler);
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => break,
            request = endpoint.next() => match request {
                Some(request) => Arc::new(request),
                None => break,
            },
        };
        if is_stream_delivery(&request) {
            tracing::warn!(
                subject = %request.message.subject,
                "a JetStream delivery reached an endpoint (a consumer delivering to it): ignored"
            );
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        tracker.spawn(async move {
            let result = handler(request.clone()).await;
            rpc::respond(&request, result).await;
            drop(permit);
        });
    }
    if let Err(e) = endpoint.stop().await {
        tracing::debug!(error = %e, "stopping endpoint");
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after shutdown timeout");
    }
}

/// A stream's message that a push consumer delivers to an endpoint's
/// subject (anyone who may create consumers can name any delivery subject):
/// its reply is the consumer's ack subject. Never a call, so never served.
fn is_stream_delivery(request: &Request) -> bool {
    request
        .message
        .reply
        .as_ref()
        .is_some_and(|reply| reply.as_str().starts_with("$JS.ACK."))
}

/// Why a service could not start (or stopped with an error): one type for
/// every service, so the binary and the test harness treat them alike.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    /// The micro service or one of its endpoints could not be registered.
    #[error("nats service: {0}")]
    Service(String),
    /// Anything else the service needs at start (its signing keys, a bucket,
    /// a listening socket): what it was and why it failed.
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
}

impl StartError {
    pub fn setup(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Setup {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<async_nats::Error> for StartError {
    fn from(e: async_nats::Error) -> Self {
        Self::Service(e.to_string())
    }
}

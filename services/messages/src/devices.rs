//! Whose messages need a copy in their sender's own inbox.
//!
//! A message goes into the inbox of every member of its conversation, its
//! sender's included, so that the sender's other devices (and other
//! connections) get it too. A sender with one device, sending from its only
//! connection, needs no copy: the ack tells that device what it stored, and
//! a device made later starts at the end of the inbox and reads what came
//! before from the history (`shared::nats::start_device`). Leaving the copy
//! out halves the durable appends of a one-to-one message.
//!
//! The auth service owns the devices: it answers which users have several
//! (`im.v1.auth.devices.multiple`, asked for senders not known here) and
//! publishes `im.evt.v1.device.added` before it answers the login that made
//! a device. This service subscribes to it on the connection its endpoints
//! use and applies the events received before every decision. The new
//! device reads its history through that connection after the login is
//! answered, so (on one NATS server) the event arrives first, and a message
//! stored after that history read is decided after the event: it gets its
//! copy. In a cluster the event and the history call may take different
//! routes (the same bound as for blocks, `relations`). Answers are kept for
//! [`TTL`]; after a reconnect or a slow-consumer event (events may have been
//! missed) everything is asked again; when auth cannot answer in time,
//! every message gets its copy.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use prost::Message as _;
use shared::endpoint::endpoints::AuthMultipleDevices;
use shared::nats::ConnectionEvent;
use shared::proto::auth as auth_pb;
use shared::rpc::Caller;
use shared::subject;
use tokio::sync::broadcast;

/// How long an answer is trusted without an event.
const TTL: Duration = Duration::from_secs(60);
/// Users remembered before the cache is emptied.
const CAPACITY: usize = 100_000;
/// How long a batch waits for the answer before giving every sender its
/// copy (the auth service being slow must not hold the sends up).
const ASK_TIMEOUT: Duration = Duration::from_millis(250);

pub struct Devices {
    inner: Mutex<Inner>,
}

struct Inner {
    added: async_nats::Subscriber,
    connection: broadcast::Receiver<ConnectionEvent>,
    /// Whether a user has several devices, and since when that is known.
    known: HashMap<String, (bool, Instant)>,
    /// Bumped when the cache is emptied: an answer asked before is stale.
    epoch: u64,
}

impl Devices {
    pub async fn subscribe(
        client: &async_nats::Client,
        connection: broadcast::Receiver<ConnectionEvent>,
    ) -> Result<Self, async_nats::SubscribeError> {
        Ok(Self {
            inner: Mutex::new(Inner {
                added: client.subscribe(subject::event::DEVICE_ADDED).await?,
                connection,
                known: HashMap::new(),
                epoch: 0,
            }),
        })
    }

    /// Which of `users` have one device; none when that cannot be known.
    pub async fn single(&self, caller: &Caller, users: HashSet<String>) -> HashSet<String> {
        let now = Instant::now();
        let (mut single, unknown, epoch) = {
            let mut inner = self.lock();
            inner.apply_events();
            let mut single = HashSet::new();
            let mut unknown = Vec::new();
            for user in users {
                match inner.known.get(&user) {
                    Some(&(several, at)) if now.duration_since(at) < TTL => {
                        if !several {
                            single.insert(user);
                        }
                    }
                    _ => unknown.push(user),
                }
            }
            (single, unknown, inner.epoch)
        };
        if unknown.is_empty() {
            return single;
        }
        let request = auth_pb::MultipleDevicesRequest {
            user_ids: unknown.clone(),
        };
        let answer =
            tokio::time::timeout(ASK_TIMEOUT, caller.call_to::<AuthMultipleDevices>(&request))
                .await;
        let several: HashSet<String> = match answer {
            Ok(Ok(answer)) => answer.user_ids.into_iter().collect(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "devices unknown; these senders get their copy");
                return single;
            }
            Err(_) => {
                tracing::debug!("devices not known in time; these senders get their copy");
                return single;
            }
        };
        let mut inner = self.lock();
        inner.apply_events();
        if inner.epoch != epoch {
            // Events may have been missed while asking.
            return single;
        }
        if inner.known.len() + unknown.len() > CAPACITY {
            inner.known.clear();
        }
        for user in unknown {
            let entry_user = user.clone();
            // An event applied since `now` says more than the answer; an
            // older entry is replaced.
            let answer = (several.contains(&user), now);
            let entry = inner
                .known
                .entry(user)
                .and_modify(|e| {
                    if e.1 < now {
                        *e = answer;
                    }
                })
                .or_insert(answer);
            if !entry.0 {
                single.insert(entry_user);
            }
        }
        single
    }

    /// Applies the events received so far (called periodically, so the
    /// subscription never fills up while no one sends).
    pub fn drain(&self) {
        self.lock().apply_events();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        shared::sync::lock(&self.inner)
    }
}

impl Inner {
    fn apply_events(&mut self) {
        if shared::nats::events_missed(&mut self.connection) {
            self.known.clear();
            self.epoch += 1;
        }
        // Unconstrained: tokio's per-task budget must not make a queued
        // event look absent.
        while let Some(Some(event)) = tokio::task::unconstrained(self.added.next()).now_or_never() {
            match auth_pb::DeviceAdded::decode(event.payload.clone()) {
                // A first device changes nothing (and events of two logins
                // at once may come in either order: the count only says
                // "several" here, never "one").
                Ok(added) if added.devices <= 1 => {}
                Ok(added) => {
                    self.known.insert(added.user_id, (true, Instant::now()));
                }
                Err(_) => {
                    self.known.clear();
                    self.epoch += 1;
                }
            }
        }
    }
}

//! Watching the bucket: every instance follows every device key, keeps who
//! is online, records last-seen times, and tells each change to the user's
//! friends (so with N instances a friend hears a change N times; a presence
//! signal states a state, so a repeat changes nothing).

use super::*;

/// Sends each presence change to the devices of the user's friends (those
/// the user has not blocked), as a signal: friends see changes live, nobody
/// else does. Best effort, like every signal; a client that missed one asks
/// `im.v1.presence.query` (or the friend list) on reconnect.
pub(super) async fn tell_friends(
    state: Arc<State>,
    mut news: tokio::sync::mpsc::Receiver<pb::PresenceChanged>,
    shutdown: CancellationToken,
) {
    use shared::proto::{delivery, social};
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            change = news.recv() => match change { Some(c) => c, None => return },
        };
        let audience = state
            .caller
            .call_to::<FriendAudience>(&social::AudienceRequest {
                user_id: change.user_id.clone(),
            })
            .await;
        let friends = match audience {
            Ok(reply) => reply.user_ids,
            Err(e) => {
                tracing::debug!(error = %e, "presence change not told to friends");
                continue;
            }
        };
        for friend in friends {
            let signal = delivery::Signal {
                kind: Some(delivery::signal::Kind::Presence(change.clone())),
            };
            shared::inbox::signal(&state.nats.client, &friend, signal).await;
        }
    }
}

impl State {
    /// Applies one change of the bucket; announces a user's transitions.
    pub(super) async fn observe(&self, entry: kv::Entry) {
        let Some(rest) = entry.key.strip_prefix(presence_key::DEVICE_PREFIX) else {
            return;
        };
        let Some((user, device)) = rest.split_once('.') else {
            return;
        };
        let online = entry.operation == Operation::Put;
        let now = ids::now_ms();
        // When a user's last device leaves, store the last-seen time before
        // the user drops out of the online set, so no query in between sees
        // "offline, never seen".
        let last_device_leaves = !online
            && shared::sync::lock(&self.online)
                .get(user)
                .is_some_and(|d| d.len() == 1 && d.contains(device));
        if last_device_leaves
            && let Err(e) = self
                .kv
                .put(presence_key::seen(user), now.to_string().into())
                .await
        {
            tracing::warn!(error = %e, "cannot store last seen");
        }
        let changed = {
            let mut map = shared::sync::lock(&self.online);
            if online {
                let devices = map.entry(user.to_owned()).or_default();
                devices.insert(device.to_owned()) && devices.len() == 1
            } else {
                match map.get_mut(user) {
                    Some(devices) => {
                        let removed = devices.remove(device);
                        let now_empty = devices.is_empty();
                        if now_empty {
                            map.remove(user);
                        }
                        removed && now_empty
                    }
                    None => false,
                }
            }
        };
        // Replayed history (delta > 0 while catching up) is state, not news.
        if !changed || entry.delta > 0 {
            return;
        }
        let event = pb::PresenceChanged {
            user_id: user.to_owned(),
            online,
            last_seen_ms: now,
        };
        if self.news.try_send(event.clone()).is_err() {
            tracing::warn!("presence fan-out queue full: a change is not told to friends");
        }
        let published = shared::nats::publish_event(
            &self.nats.jetstream,
            subject::event::PRESENCE_CHANGED,
            event.encode_to_vec().into(),
            &format!("presence:{user}:{}", entry.revision),
        )
        .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "presence event not stored");
        }
    }
}

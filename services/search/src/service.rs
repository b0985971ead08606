//! The search service: its endpoints, the feed of events into the index,
//! and the rebuild from the messages service.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use prost::Message as _;
use shared::endpoint::Server;
use shared::endpoint::endpoints::{
    FriendList, GroupMine, MessageExport, MessageSearchScope, MessageVisible, SearchConversations,
    SearchMessages, SearchReindex, SearchStatus,
};
use shared::ids::UserId;
use shared::proto::{group as gpb, message as pb, search as spb, social};
use shared::rpc::{Caller, Identity};
use shared::service::StartError;
use shared::{Nats, RpcError, subject};
use tokio_util::sync::CancellationToken;

use crate::index::{Change, Doc, Found, Index, Query, Rebuild, Window};
use crate::{CONSUMER, Config, text};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 50;
const MAX_QUERY_CHARS: usize = 200;
const MAX_NAME_QUERY_CHARS: usize = 100;
/// Pages of 200 friends read per name search at most.
const MAX_FRIEND_PAGES: usize = 25;
/// How deep one can page into results.
const MAX_OFFSET: u64 = 5_000;
/// Hits checked with the messages service per round, and rounds per page:
/// hits the caller may not read (recalled, deleted for itself) are
/// skipped, and a page stops after this many rounds.
const ROUND: usize = 100;
const ROUNDS: usize = 4;
const SNIPPET_CHARS: usize = 120;
/// Events applied in one write at most (and delivered unacknowledged).
const BATCH: usize = 256;

pub(crate) struct State {
    pub(crate) index: Index,
    caller: Caller,
    config: Config,
    rebuilding: AtomicBool,
    events: async_nats::jetstream::stream::Stream,
    shutdown: CancellationToken,
}

fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("natter search: the message index".into()),
        filter_subjects: vec![
            subject::event::MESSAGES_CREATED.into(),
            subject::event::MESSAGE_RECALLED.into(),
            subject::event::MESSAGE_TRANSCRIBED.into(),
        ],
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: BATCH as i64,
        ..Default::default()
    }
}

/// Runs the search service until `shutdown` is cancelled, on threads of
/// its own: SurrealDB does its work on the task that awaits it, and a
/// batch of index writes or a search over many candidates would otherwise
/// hold a thread the other services of the same process (`natter run` on
/// an edge box) need to answer sends in time.
pub async fn run(
    config: Config,
    nats: Nats,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("search".into())
        .spawn(move || {
            let outcome = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("search")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(serve(config, nats, shutdown)),
                Err(e) => Err(StartError::setup("the search service's threads", e)),
            };
            let _ = done.send(outcome);
        })
        .map_err(|e| StartError::setup("the search service's threads", e))?;
    result
        .await
        .unwrap_or_else(|_| Err(StartError::setup("the search service", "its thread ended")))
}

async fn serve(config: Config, nats: Nats, shutdown: CancellationToken) -> Result<(), StartError> {
    config.validate()?;
    tokio::task::spawn_blocking(text::warm_up)
        .await
        .map_err(|e| StartError::setup("the word dictionary", e))?;
    let index = Index::open(&config.path)
        .await
        .map_err(|e| StartError::setup("the search index", e))?;
    let events = shared::nats::events_stream(&nats.jetstream, &config.streams).await?;
    // The feed's consumer exists before a rebuild reads anything: what is
    // written meanwhile reaches the index through it.
    events
        .get_or_create_consumer(CONSUMER, consumer_config())
        .await
        .map_err(|e| StartError::setup("the search consumer", e))?;
    let state = Arc::new(State {
        index,
        caller: nats.caller(),
        config,
        rebuilding: AtomicBool::new(false),
        events: events.clone(),
        shutdown: shutdown.clone(),
    });
    let server = Server::start(
        &nats.client,
        crate::MICRO_NAME,
        "natter search: messages, groups and friends",
        state.clone(),
        shutdown.clone(),
    )
    .await?
    .serve::<SearchMessages, _, _>(32, State::messages)
    .serve::<SearchConversations, _, _>(32, State::conversations)
    .serve::<SearchStatus, _, _>(4, State::status)
    .serve::<SearchReindex, _, _>(1, State::reindex)
    .listen()
    .await?;
    let rebuild = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            if state.config.rebuild_when_empty {
                state.rebuild_if_needed(&shutdown).await;
            }
        }
    };
    tracing::info!("search service ready");
    tokio::join!(server.run(), feed(state, events, shutdown), rebuild);
    tracing::info!("search service stopped");
    Ok(())
}

/// Applies the events to the index in stream order, what arrived together
/// in one write.
async fn feed(
    state: Arc<State>,
    events: async_nats::jetstream::stream::Stream,
    shutdown: CancellationToken,
) {
    shared::service::consume_batches(&events, consumer_config(), &shutdown, BATCH, |batch| {
        state.apply(batch)
    })
    .await;
}

/// The words of a message body, and its kind (`None`: nothing to index).
pub(crate) fn words(body: Option<&pb::MessageBody>) -> Option<(&'static str, String)> {
    use pb::message_body::Kind;
    Some(match body?.kind.as_ref()? {
        Kind::Text(t) => ("text", t.text.clone()),
        Kind::File(f) => ("file", f.name.clone()),
        Kind::Voice(v) => ("voice", v.transcript.clone()),
        Kind::Location(l) => ("location", format!("{} {}", l.title, l.address)),
        Kind::Image(_) | Kind::Video(_) | Kind::System(_) | Kind::Recalled(_) => return None,
    })
}

/// What the index holds of a message (`None`: nothing to find it by).
pub(crate) fn doc(message: &pb::Message) -> Option<Doc> {
    let (kind, words) = words(message.body.as_ref())?;
    Some(Doc {
        id: message.id.clone(),
        conversation_id: message.conversation_id.clone(),
        seq: message.seq,
        sender_id: message.sender_id.clone(),
        kind,
        ts_ms: message.server_ts_ms,
        terms: text::indexed_string(&words),
    })
}

fn is_recalled(message: &pb::Message) -> bool {
    matches!(
        message.body.as_ref().and_then(|b| b.kind.as_ref()),
        Some(pb::message_body::Kind::Recalled(_))
    )
}

/// What an event changes in the index (nothing for an event it does not
/// use or cannot read).
fn changes(event: &async_nats::jetstream::Message, out: &mut Vec<Change>) {
    match event.subject.as_str() {
        subject::event::MESSAGES_CREATED => {
            match pb::MessagesCreated::decode(event.payload.as_ref()) {
                Ok(created) => put_changes(&created.messages, out),
                Err(e) => tracing::warn!(error = %e, "undecodable messages.created skipped"),
            }
        }
        subject::event::MESSAGE_RECALLED => {
            match pb::MessageRecalled::decode(event.payload.as_ref()) {
                Ok(recalled) => out.push(Change::Recall(recalled.message_id)),
                Err(e) => tracing::warn!(error = %e, "undecodable message.recalled skipped"),
            }
        }
        subject::event::MESSAGE_TRANSCRIBED => {
            match pb::MessageTranscribed::decode(event.payload.as_ref()) {
                Ok(t) => out.push(Change::Transcribed {
                    terms: text::indexed_string(&t.transcript),
                    id: t.message_id,
                    conversation_id: t.conversation_id,
                }),
                Err(e) => tracing::warn!(error = %e, "undecodable message.transcribed skipped"),
            }
        }
        other => tracing::debug!(subject = other, "event not for the index"),
    }
}

/// Messages as they are: their words, or their recall.
fn put_changes(messages: &[pb::Message], out: &mut Vec<Change>) {
    for message in messages {
        if is_recalled(message) {
            out.push(Change::Recall(message.id.clone()));
        } else if let Some(doc) = doc(message) {
            out.push(Change::Put(doc));
        }
    }
}

impl State {
    /// Applies what arrived together in one write; it is all asked for
    /// again later when the index fails.
    async fn apply(&self, events: Vec<async_nats::jetstream::Message>) {
        let mut all = Vec::new();
        for event in &events {
            changes(event, &mut all);
        }
        match self.index.apply(&all).await {
            Ok(()) => {
                for event in &events {
                    let _ = event.ack().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, events = events.len(), "events not indexed; asked for again");
                for event in &events {
                    let _ = event
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                }
            }
        }
    }

    /// Indexes messages as they are: their words, or their recall.
    async fn put(&self, messages: &[pb::Message]) -> Result<(), crate::index::IndexError> {
        let mut all = Vec::new();
        put_changes(messages, &mut all);
        self.index.apply(&all).await
    }

    /// Rebuilds the index from the messages service when it holds nothing
    /// yet or a rebuild was cut short.
    async fn rebuild_if_needed(&self, shutdown: &CancellationToken) {
        let progress = match self.index.rebuild().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the index's rebuild state");
                return;
            }
        };
        if progress.done {
            return;
        }
        self.rebuild_from(progress, shutdown).await;
    }

    /// Reads every message from the messages service into the index, from
    /// where `progress` stands, logging how far it got.
    async fn rebuild_from(&self, progress: Rebuild, shutdown: &CancellationToken) {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        self.rebuild_claimed(progress, shutdown).await;
    }

    /// [`State::rebuild_from`] once `rebuilding` is claimed; lets it go.
    async fn rebuild_claimed(&self, mut progress: Rebuild, shutdown: &CancellationToken) {
        tracing::info!(from = %progress.after_id, "rebuilding the search index from the messages service");
        let mut pause = Duration::from_millis(500);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let page = self
                .caller
                .call_to::<MessageExport>(&pb::ExportRequest {
                    after_id: progress.after_id.clone(),
                    limit: self.config.rebuild_page,
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "rebuild: the messages service did not answer; trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            pause = Duration::from_millis(500);
            if let Err(e) = self.put(&page.messages).await {
                tracing::warn!(error = %e, "rebuild: the index refused a page; trying again");
                tokio::time::sleep(pause).await;
                continue;
            }
            progress.indexed += page.messages.len() as u64;
            if page.total > 0 {
                progress.total = page.total;
            }
            if let Some(last) = page.messages.last() {
                progress.after_id = last.id.clone();
            }
            progress.done = !page.more || page.messages.is_empty();
            if let Err(e) = self.index.set_rebuild(&progress).await {
                tracing::warn!(error = %e, "rebuild: its progress was not recorded");
            }
            tracing::info!(
                indexed = progress.indexed,
                total = progress.total,
                "rebuilding the search index: {}/{}",
                progress.indexed,
                progress.total
            );
            if progress.done {
                tracing::info!(messages = progress.indexed, "search index rebuilt");
                break;
            }
        }
        self.rebuilding.store(false, Ordering::SeqCst);
    }

    /// Empties the index and rebuilds it in the background.
    async fn reindex(
        self: Arc<Self>,
        _: (),
        _input: spb::ReindexRequest,
    ) -> Result<spb::IndexStatus, RpcError> {
        if self.rebuilding.swap(true, Ordering::SeqCst) {
            return Err(RpcError::conflict("the index is being rebuilt already"));
        }
        let cleared = async {
            self.index.clear().await?;
            self.index.set_rebuild(&Rebuild::default()).await
        }
        .await;
        if let Err(e) = cleared {
            self.rebuilding.store(false, Ordering::SeqCst);
            return Err(unavailable(e));
        }
        tracing::info!("search index emptied for a rebuild");
        let state = self.clone();
        tokio::spawn(async move {
            let shutdown = state.shutdown.clone();
            state.rebuild_claimed(Rebuild::default(), &shutdown).await;
        });
        self.status((), spb::IndexStatusRequest {}).await
    }

    /// Where the index stands.
    async fn status(
        self: Arc<Self>,
        _: (),
        _input: spb::IndexStatusRequest,
    ) -> Result<spb::IndexStatus, RpcError> {
        let messages = self.index.count().await.map_err(unavailable)?;
        let rebuild = self.index.rebuild().await.map_err(unavailable)?;
        let lag = match self.events.get_consumer::<pull::Config>(CONSUMER).await {
            Ok(mut consumer) => match consumer.info().await {
                Ok(info) => info.num_pending + info.num_ack_pending as u64,
                Err(_) => 0,
            },
            Err(_) => 0,
        };
        Ok(spb::IndexStatus {
            messages,
            lag,
            rebuilding: self.rebuilding.load(Ordering::SeqCst),
            rebuilt_messages: rebuild.indexed,
            rebuild_total: rebuild.total,
        })
    }

    /// The caller's messages that hold the words of a query.
    async fn messages(
        self: Arc<Self>,
        me: Identity,
        input: spb::SearchMessagesRequest,
    ) -> Result<spb::SearchMessagesResponse, RpcError> {
        let ask = Asked::check(&input)?;
        let scope = self
            .caller
            .call_to::<MessageSearchScope>(&pb::SearchScopeRequest {
                user_id: me.user_id.to_string(),
            })
            .await?;
        let mut windows: Vec<Window> = scope
            .windows
            .into_iter()
            .map(|w| Window {
                conversation_id: w.conversation_id,
                from: w.from_seq,
                to: w.to_seq,
            })
            .collect();
        if !input.conversation_id.is_empty() {
            windows.retain(|w| w.conversation_id == input.conversation_id);
        }
        let query = Query {
            terms: ask.terms.clone(),
            windows,
            sender_id: (!input.sender_id.is_empty()).then(|| input.sender_id.clone()),
            kind: (!input.kind.is_empty()).then(|| input.kind.clone()),
            before_ms: (input.before_ms > 0).then_some(input.before_ms),
            after_ms: (input.after_ms > 0).then_some(input.after_ms),
            by_time: ask.by_time,
        };
        // The index answers only within the caller's read windows; what is
        // left out after (recalled, deleted by the caller for itself) is
        // asked of the messages service, which owns it, a round at a time.
        let found = self.index.search(&query).await.map_err(unavailable)?;
        let mut hits = Vec::new();
        let mut at = (ask.offset as usize).min(found.len());
        for _ in 0..ROUNDS {
            let round = &found[at..(at + ROUND).min(found.len())];
            let refs: Vec<&Found> = round.iter().collect();
            let visible = self.visible(&me.user_id, &refs).await?;
            for f in round {
                at += 1;
                let Some(message) = visible.get(&f.key) else {
                    continue;
                };
                hits.push(hit(message.clone(), &ask.terms));
                if hits.len() == ask.limit as usize {
                    break;
                }
            }
            if hits.len() == ask.limit as usize || at >= found.len() || at as u64 >= MAX_OFFSET {
                break;
            }
        }
        let next = (at < found.len()).then_some(at as u64);
        Ok(spb::SearchMessagesResponse {
            hits,
            next_cursor: next
                .filter(|&n| n < MAX_OFFSET)
                .map(|n| format!("o{n}"))
                .unwrap_or_default(),
        })
    }

    /// Which of the index's hits the caller may read now (asked of the
    /// messages service, which owns them), by message id.
    async fn visible(
        &self,
        user: &UserId,
        found: &[&Found],
    ) -> Result<HashMap<String, pb::Message>, RpcError> {
        if found.is_empty() {
            return Ok(HashMap::new());
        }
        let reply = self
            .caller
            .call_to::<MessageVisible>(&pb::VisibleRequest {
                user_id: user.to_string(),
                refs: found
                    .iter()
                    .map(|f| pb::MessageRef {
                        conversation_id: f.conv.clone(),
                        seq: f.seq.max(0) as u64,
                    })
                    .collect(),
            })
            .await?;
        Ok(reply
            .messages
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect())
    }

    /// The caller's groups by name and friends (its one-to-one
    /// conversations) by nickname or username, pinyin too. Both lists are
    /// asked of their owners as the caller: what it finds is what it has.
    async fn conversations(
        self: Arc<Self>,
        me: Identity,
        input: spb::SearchConversationsRequest,
    ) -> Result<spb::SearchConversationsResponse, RpcError> {
        let typed = input.q.trim();
        let chars = typed.chars().count();
        if chars == 0 || chars > MAX_NAME_QUERY_CHARS {
            return Err(RpcError::bad_request(format!(
                "q must have 1..={MAX_NAME_QUERY_CHARS} characters"
            )));
        }
        let limit = match input.limit {
            0 => DEFAULT_LIMIT,
            1..=MAX_LIMIT => input.limit,
            _ => {
                return Err(RpcError::bad_request(format!(
                    "limit must be within 1..={MAX_LIMIT}"
                )));
            }
        } as usize;
        let mut hits = Vec::new();
        let groups = self
            .caller
            .call_as::<GroupMine>(&me, &gpb::MyGroupsRequest {})
            .await?;
        hits.extend(
            groups
                .groups
                .into_iter()
                .filter(|g| text::name_matches(&g.name, typed))
                .take(limit)
                .map(|g| spb::ConversationHit {
                    conversation_id: g.conversation_id.clone(),
                    group: Some(g),
                    peer: None,
                }),
        );
        let mut friends = Vec::new();
        let mut after = String::new();
        for _ in 0..MAX_FRIEND_PAGES {
            let page = self
                .caller
                .call_as::<FriendList>(
                    &me,
                    &social::ListFriendsRequest {
                        limit: 200,
                        after_user_id: after.clone(),
                    },
                )
                .await?;
            let before = after.clone();
            for friend in page.friends {
                let Some(profile) = friend.profile else {
                    continue;
                };
                after = profile.user_id.clone();
                let named = text::name_matches(&profile.nickname, typed)
                    || text::name_matches(&profile.username, typed);
                if named && friends.len() < limit {
                    friends.push(profile);
                }
            }
            if !page.has_more || friends.len() >= limit || after == before {
                break;
            }
        }
        hits.extend(friends.into_iter().map(|p| spb::ConversationHit {
            conversation_id: shared::ids::direct_conversation(me.user_id.as_str(), &p.user_id),
            group: None,
            peer: Some(p),
        }));
        Ok(spb::SearchConversationsResponse { hits })
    }
}

/// A checked search request.
struct Asked {
    terms: Vec<String>,
    limit: u32,
    offset: u64,
    by_time: bool,
}

impl Asked {
    fn check(input: &spb::SearchMessagesRequest) -> Result<Self, RpcError> {
        let q = input.q.trim();
        let chars = q.chars().count();
        if chars == 0 || chars > MAX_QUERY_CHARS {
            return Err(RpcError::bad_request(format!(
                "query must have 1..={MAX_QUERY_CHARS} characters"
            )));
        }
        let terms = text::query(q);
        if terms.is_empty() {
            return Err(RpcError::bad_request("the query has no words to look for"));
        }
        if terms.len() > 20 {
            return Err(RpcError::bad_request("at most 20 words in a query"));
        }
        let limit = match input.limit {
            0 => DEFAULT_LIMIT,
            1..=MAX_LIMIT => input.limit,
            _ => {
                return Err(RpcError::bad_request(format!(
                    "limit must be within 1..={MAX_LIMIT}"
                )));
            }
        };
        let by_time = match input.order.as_str() {
            "" | "relevance" => false,
            "time" => true,
            _ => return Err(RpcError::bad_request("order must be relevance or time")),
        };
        if !matches!(
            input.kind.as_str(),
            "" | "text" | "file" | "voice" | "location"
        ) {
            return Err(RpcError::bad_request(
                "kind must be text, file, voice or location",
            ));
        }
        if !input.sender_id.is_empty() {
            UserId::parse(input.sender_id.as_str())
                .map_err(|_| RpcError::bad_request("sender_id is not a user id"))?;
        }
        if input.conversation_id.len() > 200 {
            return Err(RpcError::bad_request("conversation_id is too long"));
        }
        if input.before_ms < 0 || input.after_ms < 0 {
            return Err(RpcError::bad_request(
                "before_ms and after_ms must not be negative",
            ));
        }
        let offset = if input.cursor.is_empty() {
            0
        } else {
            input
                .cursor
                .strip_prefix('o')
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n < MAX_OFFSET)
                .ok_or_else(|| RpcError::bad_request("cursor is not one this search gave"))?
        };
        Ok(Self {
            terms,
            limit,
            offset,
            by_time,
        })
    }
}

/// A hit: the message and its snippet with the matches marked. No score:
/// BM25's weights come from every conversation's words, so a score would
/// tell how common a word is where the caller cannot read.
fn hit(message: pb::Message, terms: &[String]) -> spb::MessageHit {
    let words = words(message.body.as_ref())
        .map(|(_, w)| w)
        .unwrap_or_default();
    let (snippet, marks) = text::snippet(&words, terms, SNIPPET_CHARS);
    spb::MessageHit {
        message: Some(message),
        snippet,
        highlights: marks
            .into_iter()
            .map(|(start, end)| spb::Highlight {
                start: start as u32,
                end: end as u32,
            })
            .collect(),
    }
}

fn unavailable(e: crate::index::IndexError) -> RpcError {
    tracing::error!(error = %e, "search index failed");
    RpcError::unavailable("search is unavailable right now: try again later")
}

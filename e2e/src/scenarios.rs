//! Scenarios shared by several test files.

use std::time::Duration;

use anyhow::Context as _;

use shared::proto::edge::{ServerFrame, server_frame};
use shared::proto::message::Message;

use crate::{Client, Format, System, User, text_of};

/// alice sends `n` messages to bob, both online; bob receives all of them in
/// order with seq 1..=n, and alice gets `n` acks with the same seqs.
pub async fn chat(system: &System, n: u64, format: Format) -> anyhow::Result<()> {
    let api = system.api();
    let alice = api.user("alice").await?;
    let bob = api.user("bob").await?;
    api.befriend(&alice, &bob).await?;
    let mut a = Client::connect(&system.ws_url(), &alice, format).await?;
    let mut b = Client::connect_live(&system.ws_url(), &bob, format).await?;

    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(
            a.send_text(&bob, &format!("m{i}"), &format!("message {i} 你好"))
                .await?,
        );
    }
    for (i, id) in ids.into_iter().enumerate() {
        let ack = a.ack_of(id).await?;
        assert_eq!(ack.seq, i as u64 + 1);
        assert_eq!(ack.client_msg_id, format!("m{}", i + 1));
        assert!(!ack.duplicate);
        assert!(ack.server_ts_ms > 0);
    }
    let received = b.messages(n as usize).await?;
    let mut last_cursor = 0;
    for (i, (cursor, message)) in received.iter().enumerate() {
        assert_eq!(
            message.seq,
            i as u64 + 1,
            "bob got seq {} at position {i}",
            message.seq
        );
        assert_eq!(text_of(message), format!("message {} 你好", i + 1));
        assert_eq!(message.sender_id, alice.user_id);
        assert!(*cursor > last_cursor, "cursors increase");
        last_cursor = *cursor;
    }
    b.expect_no_more_pushes().await?;
    Ok(())
}

/// What a reader got: the messages with their cursors, then any other frames.
pub type Received = (Vec<(u64, Message)>, Vec<ServerFrame>);

/// Reads `n` pushed messages on a task of its own (so the client keeps
/// answering the edge's pings), then whatever else arrives within 500 ms.
pub fn spawn_reader(
    mut client: Client,
    n: usize,
) -> tokio::task::JoinHandle<anyhow::Result<Received>> {
    tokio::spawn(async move {
        let received = client.messages(n).await?;
        let extra = client.drain(Duration::from_millis(500)).await?;
        Ok((received, extra))
    })
}

/// True when no push (nor a large group's message) is among `frames`.
pub fn no_pushes(frames: &[ServerFrame]) -> bool {
    frames.iter().all(|f| {
        !matches!(
            f.kind,
            Some(server_frame::Kind::Push(_) | server_frame::Kind::GroupMessage(_))
        )
    })
}

/// A sender that sends `n` messages one after another, as a real client
/// does: each is retried with the same `client_msg_id` after an error whose
/// code is in `retry_on`, until it is acked with seq = its number. Returns
/// the number of retries; the watch channel counts acked messages.
pub fn spawn_reliable_sender(
    ws_url: String,
    from: User,
    to: User,
    n: u64,
    retry_on: &'static [&'static str],
) -> (
    tokio::task::JoinHandle<anyhow::Result<u64>>,
    tokio::sync::watch::Receiver<u64>,
) {
    let (progress_tx, progress) = tokio::sync::watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut client = Client::connect(&ws_url, &from, Format::Json).await?;
        let mut retries = 0;
        for i in 1..=n {
            loop {
                let id = client
                    .send_text(&to, &format!("m{i}"), &format!("reliable {i}"))
                    .await?;
                match client.reply(id).await?.kind {
                    Some(server_frame::Kind::Ack(ack)) => {
                        anyhow::ensure!(ack.seq == i, "message {i} acked with seq {}", ack.seq);
                        break;
                    }
                    Some(server_frame::Kind::Error(e)) if retry_on.contains(&e.code.as_str()) => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => anyhow::bail!("unexpected answer to message {i}: {other:?}"),
                }
            }
            let _ = progress_tx.send(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(retries)
    });
    (task, progress)
}

/// A sender that keeps up to `window` sends in flight (so the edge batches
/// them with other connections' sends), as a pipelining client does: after
/// an error whose code is in `retry_on` it reads the answers still due and
/// sends again in order from the first failed message, with the same
/// `client_msg_id`s. Every ack must carry seq = the message's number.
/// Returns the number of failed answers; the watch channel counts the
/// messages acked in order.
pub fn spawn_pipelined_sender(
    ws_url: String,
    from: User,
    to: User,
    n: u64,
    window: usize,
    retry_on: &'static [&'static str],
) -> (
    tokio::task::JoinHandle<anyhow::Result<u64>>,
    tokio::sync::watch::Receiver<u64>,
) {
    let (progress_tx, progress) = tokio::sync::watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut client = Client::connect(&ws_url, &from, Format::Binary).await?;
        let mut failures = 0;
        let mut next = 1;
        let mut in_flight = std::collections::VecDeque::new();
        let mut acked = 0;
        while acked < n {
            while in_flight.len() < window && next <= n {
                let id = client
                    .send_text(&to, &format!("m{next}"), &format!("pipelined {next}"))
                    .await?;
                in_flight.push_back((next, id));
                next += 1;
            }
            let Some((i, id)) = in_flight.pop_front() else {
                anyhow::bail!("nothing in flight before message {}", acked + 1);
            };
            match client.reply(id).await?.kind {
                Some(server_frame::Kind::Ack(ack)) => {
                    anyhow::ensure!(ack.seq == i, "message {i} acked with seq {}", ack.seq);
                    acked = i;
                    let _ = progress_tx.send(i);
                }
                Some(server_frame::Kind::Error(e)) if retry_on.contains(&e.code.as_str()) => {
                    failures += 1;
                    // The answers still due: an ack must still match its
                    // number (it was stored in order); all go again from i.
                    for (j, id) in in_flight.drain(..) {
                        if let Some(server_frame::Kind::Ack(ack)) = client.reply(id).await?.kind {
                            anyhow::ensure!(ack.seq == j, "message {j} acked with seq {}", ack.seq);
                        }
                    }
                    next = i;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => anyhow::bail!("unexpected answer to message {i}: {other:?}"),
            }
        }
        Ok(failures)
    });
    (task, progress)
}

/// alice streams `n` messages to bob with a [`spawn_reliable_sender`] while
/// bob reads with a [`spawn_reader`]; something can go wrong in between.
pub struct Stream {
    reader: tokio::task::JoinHandle<anyhow::Result<Received>>,
    sender: tokio::task::JoinHandle<anyhow::Result<u64>>,
    /// How many messages were acked so far.
    pub progress: tokio::sync::watch::Receiver<u64>,
    n: u64,
}

impl Stream {
    pub async fn start(
        system: &System,
        from: User,
        to: User,
        n: u64,
        retry_on: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let reader = Client::connect_live(&system.ws_url(), &to, Format::Binary).await?;
        let reader = spawn_reader(reader, n as usize);
        let (sender, progress) = spawn_reliable_sender(system.ws_url(), from, to, n, retry_on);
        Ok(Self {
            reader,
            sender,
            progress,
            n,
        })
    }

    /// Waits until a third of the messages are acked.
    pub async fn a_third_in(&mut self) -> anyhow::Result<()> {
        a_third_of(&mut self.progress, self.n).await
    }

    /// Waits for both ends and checks that every acked message arrived
    /// exactly once, in order. Returns how many sends were retried.
    pub async fn finish(self) -> anyhow::Result<u64> {
        let retries = self.sender.await??;
        let (received, extra) = self.reader.await??;
        let seqs: Vec<u64> = received.iter().map(|(_, m)| m.seq).collect();
        anyhow::ensure!(
            seqs == (1..=self.n).collect::<Vec<_>>(),
            "every acked message exactly once, in order; got {seqs:?}"
        );
        anyhow::ensure!(no_pushes(&extra), "no duplicates: {extra:?}");
        Ok(retries)
    }
}

/// Senders with many sends in flight each (their edge batches them with the
/// others'), one per pair of `users` (sender, reader), each streaming `n`
/// messages with a [`spawn_pipelined_sender`] to its reader; something can
/// go wrong in between.
pub struct BatchedStreams {
    readers: Vec<tokio::task::JoinHandle<anyhow::Result<Received>>>,
    senders: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    progress: tokio::sync::watch::Receiver<u64>,
    n: u64,
}

impl BatchedStreams {
    pub async fn start(
        system: &System,
        users: &[User],
        n: u64,
        window: usize,
        retry_on: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let mut readers = Vec::new();
        let mut senders = Vec::new();
        let mut progress = Vec::new();
        for pair in users.chunks_exact(2) {
            let reader = Client::connect_live(&system.ws_url(), &pair[1], Format::Json).await?;
            readers.push(spawn_reader(reader, n as usize));
            let (sender, acked) = spawn_pipelined_sender(
                system.ws_url(),
                pair[0].clone(),
                pair[1].clone(),
                n,
                window,
                retry_on,
            );
            senders.push(sender);
            progress.push(acked);
        }
        let progress = progress.into_iter().next().context("no pair of users")?;
        Ok(Self {
            readers,
            senders,
            progress,
            n,
        })
    }

    /// Waits until the first pair has a third of its messages acked.
    pub async fn a_third_in(&mut self) -> anyhow::Result<()> {
        a_third_of(&mut self.progress, self.n).await
    }

    /// How many of the first pair's messages are acked so far.
    pub fn acked(&self) -> u64 {
        *self.progress.borrow()
    }

    /// How many messages each pair streams.
    pub fn messages_per_pair(&self) -> u64 {
        self.n
    }

    /// Waits for every end and checks that each reader got every message
    /// exactly once, in seq order, with its own text. Returns how many
    /// answers were failures.
    pub async fn finish(self) -> anyhow::Result<u64> {
        let mut failures = 0;
        for sender in self.senders {
            failures += sender.await??;
        }
        for (pair, reader) in self.readers.into_iter().enumerate() {
            let (received, extra) = reader.await??;
            let got: Vec<(u64, String)> = received
                .iter()
                .map(|(_, m)| (m.seq, text_of(m).to_owned()))
                .collect();
            let expected: Vec<(u64, String)> = (1..=self.n)
                .map(|i| (i, format!("pipelined {i}")))
                .collect();
            anyhow::ensure!(got == expected, "pair {pair}: got {got:?}");
            anyhow::ensure!(no_pushes(&extra), "pair {pair}: a duplicate: {extra:?}");
        }
        Ok(failures)
    }
}

/// Waits until a sender's progress reaches a third of its `n` messages.
async fn a_third_of(
    progress: &mut tokio::sync::watch::Receiver<u64>,
    n: u64,
) -> anyhow::Result<()> {
    let third = n / 3;
    progress.wait_for(|acked| *acked >= third).await?;
    Ok(())
}

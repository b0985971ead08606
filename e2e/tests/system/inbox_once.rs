//! An inbox entry is stored once, whoever appends it again and when
//! (`shared::inbox`, `Once::Entry`): two `Inboxes` on one real nats-server
//! play two instances of the messages service.

use shared::inbox::{Append, Inboxes, Once};
use shared::proto::delivery::InboxEntry;
use shared::proto::message::Message;

async fn instance(url: &str) -> anyhow::Result<(Inboxes, async_nats::jetstream::stream::Stream)> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = shared::nats::inbox_stream(&js, &Default::default()).await?;
    Ok((Inboxes::new(client, js, stream.clone()), stream))
}

fn entry(id: &str) -> InboxEntry {
    InboxEntry {
        event: Some(shared::proto::delivery::inbox_entry::Event::Message(
            Message {
                id: id.into(),
                ..Default::default()
            },
        )),
    }
}

/// Appends message `id`'s entry to `user`'s inbox, as its first attempt or
/// as a later one; returns its sequence.
async fn append(inboxes: &Inboxes, user: &str, id: &str, first: bool) -> anyhow::Result<u64> {
    append_at(inboxes, user, id, first, shared::ids::now_ms()).await
}

/// [`append`] of a message stored at `since_ms`.
async fn append_at(
    inboxes: &Inboxes,
    user: &str,
    id: &str,
    first: bool,
    since_ms: i64,
) -> anyhow::Result<u64> {
    let append = Append {
        user: user.into(),
        entry: 0,
        once: Once::Entry {
            id: format!("{id}:{user}"),
            since_ms,
            first,
        },
    };
    let mut results = inboxes.deliver_many(&[entry(id)], &[append]).await;
    Ok(results.pop().expect("one result")?)
}

/// The message ids in `user`'s inbox, in order.
async fn ids(
    stream: &async_nats::jetstream::stream::Stream,
    user: &str,
) -> anyhow::Result<Vec<String>> {
    use prost::Message as _;
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let next = stream
            .direct_get_next_for_subject(shared::subject::inbox(user), Some(after + 1))
            .await;
        let message = match next {
            Ok(message) => message,
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                return Ok(ids);
            }
            Err(e) => return Err(e.into()),
        };
        after = message.sequence;
        match InboxEntry::decode(message.payload)?.event {
            Some(shared::proto::delivery::inbox_entry::Event::Message(m)) => ids.push(m.id),
            other => anyhow::bail!("unexpected entry {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_entry_appended_again_by_either_instance_is_stored_once() -> anyhow::Result<()> {
    let server = shared::testing::NatsServer::start();
    let (a, stream) = instance(&server.url()).await?;
    let (b, _) = instance(&server.url()).await?;

    // A retry finds the first attempt's entry, in the same instance or
    // another, and answers with its sequence.
    let m1 = append(&a, "u", "m1", true).await?;
    assert_eq!(append(&a, "u", "m1", false).await?, m1);
    assert_eq!(append(&b, "u", "m1", false).await?, m1);

    // Another instance appends (a sweep of m2, then its own m3): the first
    // attempt of A's next entry meets a moved chain and goes after them.
    let m2 = append(&b, "u", "m2", false).await?;
    let m3 = append(&b, "u", "m3", true).await?;
    let m4 = append(&a, "u", "m4", true).await?;
    assert!(m1 < m2 && m2 < m3 && m3 < m4, "{m1} {m2} {m3} {m4}");

    // A's walk saw m2 and m3: a late first attempt of m3 on A (as when both
    // instances fan out one message) finds B's entry instead of adding one.
    assert_eq!(append(&a, "u", "m3", true).await?, m3);

    // B still believes the inbox ends at m3; its retry of m4 walks and finds
    // A's entry.
    assert_eq!(append(&b, "u", "m4", false).await?, m4);

    // An entry of a message stored a while ago is found by its time too.
    let old = Append {
        user: "u".into(),
        entry: 0,
        once: Once::Entry {
            id: "m1:u".into(),
            since_ms: shared::ids::now_ms() - 30_000,
            first: false,
        },
    };
    let found = b
        .deliver_many(&[entry("m1")], &[old])
        .await
        .pop()
        .expect("one result")?;
    assert_eq!(found, m1);

    // A walk remembers what it saw from its start on: an entry of an older
    // message, stored before that, is walked for on its first attempt. (B
    // appends m5; A walks for a message two minutes younger, which starts
    // after m5; then m5's late first attempt on A.)
    let now = shared::ids::now_ms();
    let m5 = append_at(&b, "u", "m5", false, now).await?;
    let m6 = append_at(&a, "u", "m6", false, now + 120_000).await?;
    assert_eq!(append_at(&a, "u", "m5", true, now).await?, m5);
    assert!(m5 < m6);

    assert_eq!(
        ids(&stream, "u").await?,
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );
    // Other users' inboxes are theirs: the same message goes into each once.
    assert_eq!(append(&a, "v", "m1", true).await?, m6 + 1);
    assert_eq!(append(&b, "v", "m1", false).await?, m6 + 1);
    assert_eq!(ids(&stream, "v").await?, ["m1"]);
    Ok(())
}

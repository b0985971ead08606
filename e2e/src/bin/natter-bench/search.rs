//! Search: how closely the index follows a one-to-one load, how fast it
//! takes in a large history, how quickly a ranked page comes back for a
//! user with 50 conversations over all of it, the index's size on disk and
//! the search service's memory.
//!
//! Every service runs in its own process (split mode), so the search
//! service's RSS is its own. Messages go in as the edge sends them (the
//! messages service's batch call, with each sender's identity), which is
//! faster than a million WebSocket sends and loads the index the same way:
//! each batch becomes one `messages.created` event. The texts are made of
//! words drawn with Zipf's law from an English and a Chinese vocabulary
//! (Chinese without spaces, as people write it).

use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::StreamExt;
use serde_json::{Value, json};
use shared::endpoint::SEND_BATCH_MAX_ITEMS;
use shared::endpoint::endpoints::{MessageSendBatch, SearchStatus};
use shared::proto::message as pb;
use shared::proto::search as spb;
use shared::rpc::Caller;

use crate::Plan;
use crate::report::{percentile, round};
use crate::target::{External, rss_bytes, settings};
use e2e::{Api, Mode, Service, System, User};

/// The user whose searches are timed has this many one-to-one chats.
const MY_CONVERSATIONS: usize = 50;

const CHINESE: &[&str] = &[
    "明天",
    "开会",
    "项目",
    "报告",
    "午饭",
    "周末",
    "电影",
    "火车",
    "时间",
    "问题",
    "我们",
    "今天",
    "工作",
    "公司",
    "客户",
    "需要",
    "已经",
    "可以",
    "讨论",
    "安排",
    "方案",
    "预算",
    "合同",
    "会议室",
    "经理",
    "同事",
    "下午",
    "上午",
    "晚上",
    "地址",
    "电话",
    "文件",
    "发送",
    "确认",
    "修改",
    "计划",
    "市场",
    "产品",
    "设计",
    "测试",
    "上线",
    "服务器",
    "数据",
    "用户",
    "系统",
    "版本",
    "更新",
    "反馈",
    "北京",
    "上海",
    "深圳",
    "杭州",
    "出差",
    "机票",
    "酒店",
    "签证",
    "护照",
    "天气",
    "下雨",
    "咖啡",
];

/// A small deterministic generator (xorshift), so every run indexes the
/// same texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Words and their cumulative Zipf weights.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    /// `n` made-up English words (syllables), Zipf-distributed.
    fn english(n: usize) -> Self {
        const SYLLABLES: &[&str] = &[
            "ka", "lo", "mi", "ter", "sun", "ra", "ve", "pol", "dan", "ix", "ber", "co", "nu",
            "shi", "ga", "mor", "te", "len", "qua", "zo",
        ];
        let words = (0..n)
            .map(|i| {
                let mut w = String::new();
                let mut k = i + 1;
                while k > 0 {
                    w.push_str(SYLLABLES[k % SYLLABLES.len()]);
                    k /= SYLLABLES.len();
                }
                w
            })
            .collect();
        Self::zipf(words)
    }

    fn chinese() -> Self {
        Self::zipf(CHINESE.iter().map(|w| (*w).to_owned()).collect())
    }

    fn zipf(words: Vec<String>) -> Self {
        let mut sum = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                sum += 1.0 / rank as f64;
                sum
            })
            .collect();
        Self { words, cumulative }
    }

    fn draw(&self, rng: &mut Rng) -> &str {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let x = (rng.next() % 1_000_000) as f64 / 1_000_000.0 * total;
        let i = self.cumulative.partition_point(|c| *c < x);
        &self.words[i.min(self.words.len() - 1)]
    }
}

/// The texts: 3-12 English words, or 2-8 Chinese words run together, or a mix.
struct Texts {
    rng: Rng,
    english: Vocabulary,
    chinese: Vocabulary,
}

impl Texts {
    fn new() -> Self {
        Self {
            rng: Rng(0x5eed_cafe),
            english: Vocabulary::english(5000),
            chinese: Vocabulary::chinese(),
        }
    }

    fn next(&mut self) -> String {
        let kind = self.rng.below(10);
        let mut text = String::new();
        if kind < 6 {
            let n = 3 + self.rng.below(10);
            for i in 0..n {
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(self.english.draw(&mut self.rng));
            }
        } else {
            let n = 2 + self.rng.below(7);
            for _ in 0..n {
                text.push_str(self.chinese.draw(&mut self.rng));
            }
            if kind == 9 {
                text.push(' ');
                text.push_str(self.english.draw(&mut self.rng));
            }
        }
        text
    }
}

/// A chat and who writes in it.
struct Chat {
    a: usize,
    b: usize,
}

pub async fn run(external: Option<&External>, plan: &Plan) -> anyhow::Result<Value> {
    if external.is_some() {
        return Ok(json!({ "skipped": "needs its own system (the search process and its files)" }));
    }
    let total = plan.search_messages;
    let rate = plan.search_rate;
    let load_secs = if plan.quick { 3 } else { 30 };
    // Enough other users that the history spreads over ~2,000 chats in
    // full mode (~60 messages each in quick mode).
    let others = if plan.quick { 10 } else { 63 };
    let system = System::start_with(Mode::Split, settings(plan)).await?;
    let api = system.api();

    // Users and friendships.
    let mut users: Vec<User> = Vec::new();
    for i in 0..1 + MY_CONVERSATIONS + others {
        users.push(api.user(&crate::target::unique(&format!("s{i}"))).await?);
    }
    let mut chats: Vec<Chat> = (1..=MY_CONVERSATIONS).map(|b| Chat { a: 0, b }).collect();
    let first_other = 1 + MY_CONVERSATIONS;
    for a in first_other..users.len() {
        for b in a + 1..users.len() {
            chats.push(Chat { a, b });
        }
    }
    let befriended =
        futures::stream::iter(chats.iter().map(|c| api.befriend(&users[c.a], &users[c.b])))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    for result in befriended {
        result?;
    }

    let nats = system
        .nats_options(natter::nats_users::ALL_IN_ONE)?
        .connect(system.nats.url())
        .await?;
    let caller = Caller::new(nats, Duration::from_secs(30));
    let mut texts = Texts::new();
    let mut rng = Rng(0xfeed_beef);
    let mut sent = 0usize;
    let mut batch = |n: usize, sent: &mut usize| -> pb::SendBatchRequest {
        let items = (0..n)
            .map(|_| {
                let chat = &chats[rng.below(chats.len())];
                let (from, to) = if rng.below(2) == 0 {
                    (chat.a, chat.b)
                } else {
                    (chat.b, chat.a)
                };
                *sent += 1;
                pb::SendItem {
                    user_id: users[from].user_id.clone(),
                    device_id: users[from].device_id.clone(),
                    send: Some(pb::SendRequest {
                        to_user_id: users[to].user_id.clone(),
                        client_msg_id: format!("search-{sent}"),
                        body: Some(pb::MessageBody {
                            kind: Some(pb::message_body::Kind::Text(pb::Text {
                                text: texts.next(),
                            })),
                        }),
                        ..Default::default()
                    }),
                    sole_connection: false,
                }
            })
            .collect();
        pb::SendBatchRequest { items }
    };

    // 1. A steady one-to-one load: how far behind the index falls.
    let tick = Duration::from_millis(50);
    let per_tick = (rate as usize / 20).max(1);
    let ticks = load_secs * 20;
    let started = Instant::now();
    let mut max_lag = 0u64;
    let mut lags = Vec::new();
    for i in 0..ticks {
        let request = batch(per_tick, &mut sent);
        check(caller.call_to::<MessageSendBatch>(&request).await?)?;
        if i % 5 == 0 {
            let status = caller
                .call_to::<SearchStatus>(&spb::IndexStatusRequest {})
                .await?;
            max_lag = max_lag.max(status.lag);
            lags.push(status.lag as f64);
        }
        let next = started + tick * (i as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let load_elapsed = started.elapsed().as_secs_f64();
    let caught_up = drained(&caller, Duration::from_secs(300)).await?;
    let load_sent = sent;

    // 2. The rest of the history as fast as the messages service takes it;
    // the index's rate is what it indexed until it caught up.
    let fill_started = Instant::now();
    let remaining = total.saturating_sub(sent);
    let mut requests = Vec::new();
    while sent < load_sent + remaining {
        let n = SEND_BATCH_MAX_ITEMS.min(load_sent + remaining - sent);
        requests.push(batch(n, &mut sent));
    }
    let mut answers = futures::stream::iter(requests.into_iter().map(|r| {
        let caller = caller.clone();
        async move { caller.call_to::<MessageSendBatch>(&r).await }
    }))
    .buffer_unordered(4);
    while let Some(answer) = answers.next().await {
        check(answer?)?;
    }
    let stored_in = fill_started.elapsed().as_secs_f64();
    drained(&caller, Duration::from_secs(3600)).await?;
    let indexed_in = fill_started.elapsed().as_secs_f64();
    let status = caller
        .call_to::<SearchStatus>(&spb::IndexStatusRequest {})
        .await?;

    // 3. Searches by the user with 50 chats: a ranked top-20 page, words
    // common to rare, one and two words, English and Chinese.
    let me = api.login(&users[0].username, &users[0].password).await?;
    let queries = query_mix(&texts);
    let rounds = if plan.quick { 2 } else { 10 };
    let mut all = Vec::new();
    let mut by_query = Vec::new();
    for q in &queries {
        let mut times = Vec::new();
        let mut hits = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            hits = search(&api, &me, q, "relevance").await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        by_query.push(json!({ "q": q, "hits": hits, "p50_ms": round(percentile(&times, 50.0)) }));
        all.extend(times);
    }
    all.sort_by(f64::total_cmp);
    let mut newest = Vec::new();
    for q in &queries {
        let t = Instant::now();
        search(&api, &me, q, "time").await?;
        newest.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    newest.sort_by(f64::total_cmp);

    let index_bytes = dir_bytes(&system.data_dir().join("search"));
    let rss = system.pid_of(Service::Search).and_then(rss_bytes);
    system.stop().await;

    let (p50, p99) = (percentile(&all, 50.0), percentile(&all, 99.0));
    println!(
        "\nsearch: {} messages over {} chats; load {rate}/s for {load_s:.0} s: lag max {max_lag} events, \
         caught up {caught:.1} s after; fill stored {stored:.0}/s, indexed {indexed:.0}/s; \
         ranked top-20 for 50 chats p50 {p50:.1} ms p99 {p99:.1} ms (by time p99 {tp99:.1} ms); \
         index {per:.0} B/message; search RSS {rss}",
        status.messages,
        chats.len(),
        load_s = load_elapsed,
        caught = caught_up.as_secs_f64(),
        stored = remaining as f64 / stored_in,
        indexed = remaining as f64 / indexed_in,
        tp99 = percentile(&newest, 99.0),
        per = index_bytes as f64 / status.messages.max(1) as f64,
        rss = rss.map_or("?".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
    );
    Ok(json!({
        "messages": status.messages,
        "chats": chats.len(),
        "my_chats": MY_CONVERSATIONS,
        "load": {
            "rate_per_s": rate,
            "messages": load_sent,
            "secs": round(load_elapsed),
            "lag_max_events": max_lag,
            "lag_p50_events": percentile(&{ lags.sort_by(f64::total_cmp); lags }, 50.0),
            "caught_up_after_s": round(caught_up.as_secs_f64()),
        },
        "fill": {
            "messages": remaining,
            "stored_per_s": round(remaining as f64 / stored_in),
            "indexed_per_s": round(remaining as f64 / indexed_in),
        },
        "query": {
            "rounds": rounds,
            "ranked_top20_p50_ms": round(p50),
            "ranked_top20_p99_ms": round(p99),
            "by_time_p50_ms": round(percentile(&newest, 50.0)),
            "by_time_p99_ms": round(percentile(&newest, 99.0)),
            "queries": by_query,
        },
        "index_bytes": index_bytes,
        "index_bytes_per_message": round(index_bytes as f64 / status.messages.max(1) as f64),
        "search_rss_bytes": rss,
    }))
}

/// Every item of a batch was stored.
fn check(answer: pb::SendBatchResponse) -> anyhow::Result<()> {
    for result in answer.results {
        if let Some(pb::send_result::Result::Error(e)) = result.result {
            anyhow::bail!("a send failed: {} {}", e.code, e.message);
        }
    }
    Ok(())
}

/// Waits until the index has applied every event; how long that took.
async fn drained(caller: &Caller, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let status = caller
            .call_to::<SearchStatus>(&spb::IndexStatusRequest {})
            .await?;
        if status.lag == 0 {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < limit,
            "the index is still {} events behind",
            status.lag
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queries from common to rare words of both vocabularies.
fn query_mix(texts: &Texts) -> Vec<String> {
    let en = &texts.english.words;
    let zh = &texts.chinese.words;
    vec![
        en[0].clone(),
        en[2].clone(),
        en[20].clone(),
        en[200].clone(),
        en[2000].clone(),
        format!("{} {}", en[1], en[5]),
        format!("{} {}", en[10], en[300]),
        zh[0].clone(),
        zh[5].clone(),
        zh[40].clone(),
        format!("{}{}", zh[1], zh[3]),
        format!("{} {}", zh[2], en[3]),
    ]
}

/// One ranked (or newest-first) page of 20: how many hits it had.
async fn search(api: &Api, me: &User, q: &str, order: &str) -> anyhow::Result<usize> {
    let path = format!(
        "/v1/search/messages?q={}&limit=20&order={order}",
        urlencoding(q)
    );
    let (status, body) = api.get(&path, Some(&me.token)).await?;
    ensure!(status.is_success(), "search {q}: {status} {body}");
    Ok(body["hits"].as_array().map_or(0, Vec::len))
}

fn urlencoding(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_common_words_more_often() {
        let v = Vocabulary::english(100);
        let mut rng = Rng(1);
        let mut counts = vec![0usize; 100];
        for _ in 0..10_000 {
            let w = v.draw(&mut rng);
            counts[v.words.iter().position(|x| x == w).unwrap()] += 1;
        }
        assert!(counts[0] > counts[9] * 5, "{counts:?}");
        assert!(
            v.words
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                == 100
        );
    }

    #[test]
    fn urlencoding_keeps_what_is_safe() {
        assert_eq!(urlencoding("ab 明"), "ab%20%E6%98%8E");
    }
}

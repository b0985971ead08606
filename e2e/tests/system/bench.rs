//! The benchmark itself: a quick run with small sizes drives every scenario
//! end to end (own nats-server and natter, loopback only) and writes a
//! complete report. Only that it ran and measured is asserted, never how
//! fast: figures come from `just bench`, not from tests.

use std::process::Command;

use serde_json::Value;

fn positive(report: &Value, pointer: &str) -> f64 {
    let value = report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {report}"));
    assert!(value > 0.0, "{pointer} = {value}");
    value
}

#[test]
fn a_quick_run_measures_every_scenario() {
    let out = tempfile::tempdir().expect("temporary dir");
    let path = out.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args(["--mode", "quick", "--pairs", "2", "--group-sizes", "12"])
        // Enough idle connections (about 7 MB) that their memory stands out
        // from what the process gives back meanwhile on a loaded machine:
        // with 300 (1 MB) a run measured no growth at all.
        .args(["--large-group-members", "10", "--idle", "2000"])
        .arg("--latencies")
        .arg(out.path().join("latencies"))
        .arg("--out")
        .arg(&path)
        .output()
        .expect("natter-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "natter-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for heading in [
        "raw NATS",
        "one-to-one",
        "group fan-out",
        "offline drain",
        "idle connections",
        "floor",
        "files:",
        "photos:",
        "speech:",
        "search:",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }

    let report: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("report written")).expect("JSON");
    assert_eq!(report["mode"], "quick");
    assert_eq!(
        report["machine"]["cores"].as_u64(),
        std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u64)
    );
    assert!(
        report["versions"]["nats_server"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
    positive(&report, "/results/footprint/start_to_ready_ms");
    positive(&report, "/results/footprint/natter_idle_rss_bytes");
    positive(&report, "/results/baseline/request_reply_per_sec");
    positive(&report, "/results/baseline/message_path_3_appends_per_sec");
    // The NATS shape alone, open loop at the quick mode's rate (200/s).
    let model = &report["results"]["baseline"]["model_open_loop"][0];
    assert_eq!(model["rate_per_sec"].as_u64(), Some(200), "{model}");
    // (The model fails, and leaves no figures, unless every message's push came.)
    positive(model, "/send_to_push/p99_ms");
    let direct = &report["results"]["direct"]["runs"][0];
    assert_eq!(direct["pairs"].as_u64(), Some(2));
    positive(direct, "/saturation/delivered_per_sec");
    positive(direct, "/saturation/ratio_to_request_reply");
    positive(direct, "/saturation/cost/cpu_ms_per_1000_messages");
    positive(direct, "/saturation/cost/nats_messages_in_per_message");
    // Storage writes are measured from the kernel's accounting of natter's
    // writes, which can be 0 in a two-second phase (pages written back
    // later, or a data dir on tmpfs): the figure must be there, not positive.
    assert!(
        direct
            .pointer("/saturation/cost/storage_pages_per_message")
            .is_some_and(Value::is_number),
        "no storage pages figure in {direct}"
    );
    let open = &direct["open_loop"][0];
    assert_eq!(open["rate_per_sec"].as_u64(), Some(200));
    positive(open, "/send_to_receive/p99_ms");
    positive(open, "/delivered");
    // Every message the phase delivered is in its latencies file, in the
    // order of their scheduled times.
    let file = open["latencies_file"]
        .as_str()
        .expect("latencies file named");
    let text = std::fs::read_to_string(file).expect("latencies written");
    let rows: Vec<(u64, u64)> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (at, latency) = line.split_once('\t').expect("two columns");
            (
                at.parse().expect("a scheduled time"),
                latency.parse().expect("a latency"),
            )
        })
        .collect();
    assert_eq!(Some(rows.len() as u64), open["delivered"].as_u64());
    assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "not in order");
    let group = &report["results"]["groups"]["groups"][0];
    assert_eq!(
        (group["members"].as_u64(), group["read_fanout"].as_bool()),
        (Some(12), Some(true))
    );
    positive(group, "/send_to_last_member_p99_ms");
    positive(&report, "/results/offline/connect_to_last_ms");
    let idle = &report["results"]["idle"]["rounds"][0];
    assert_eq!(idle["connections"].as_u64(), Some(2000));
    positive(idle, "/natter_rss_per_connection_bytes");
    assert_eq!(
        report["results"]["idle"]["floor"]["connections"].as_u64(),
        Some(2000)
    );
    positive(&report, "/results/idle/floor/rss_per_connection_bytes");
    let files = &report["results"]["files"];
    assert_eq!(files["size_bytes"].as_u64(), Some(8 * 1024 * 1024));
    positive(files, "/upload_mb_per_s");
    positive(files, "/download_mb_per_s");
    positive(files, "/rss_before_bytes");
    assert_eq!(files["photos"]["count"].as_u64(), Some(2));
    positive(files, "/photos/per_second_through_edge");
    positive(files, "/photos/per_second_one_core");
    let speech = &report["results"]["speech"];
    assert_eq!(speech["count"].as_u64(), Some(2));
    positive(speech, "/engine_alone_ms_p50");
    positive(speech, "/send_to_transcript_ms_p50");
    assert!(
        speech["words_missed_max"]
            .as_f64()
            .is_some_and(|missed| missed <= 0.2),
        "{speech}"
    );
    let search = &report["results"]["search"];
    // Everything sent was indexed, and a page came back with hits.
    assert_eq!(search["messages"].as_u64(), Some(20_000), "{search}");
    positive(search, "/fill/indexed_per_s");
    positive(search, "/query/ranked_top20_p99_ms");
    positive(search, "/index_bytes_per_message");
    positive(search, "/search_rss_bytes");
    let first = &search["query"]["queries"][0];
    assert_eq!(first["hits"].as_u64(), Some(20), "{first}");
}

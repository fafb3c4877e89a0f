//! What encryption at rest costs the journal: the same groups of events
//! committed (fsync) to a sealed journal and, as the peer in the same run,
//! to a plain one, in alternating rounds on the same disk.
//!
//! ```sh
//! cargo run --release -p trygg-gateway --example seal_bench            # 200 000 events
//! cargo run --release -p trygg-gateway --example seal_bench -- 50000 64  # events, group size
//! ```
//!
//! Prints events/s per journal, the sealed/plain ratio, bytes per record on
//! disk, and the cost of sealing and opening one record without I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trygg_gateway::journal::{Group, Journal, NewEvent};
use trygg_gateway::seal::Sealer;
use trygg_protocol::{DeviceEvent, EventKind};

fn group(start: u64, n: u64) -> Group {
    Group {
        events: (start..start + n)
            .map(|seq| NewEvent {
                device: format!("motion-{}", seq % 16),
                event: DeviceEvent {
                    seq: seq / 16 + 1,
                    kind: if seq % 100 == 0 {
                        EventKind::ButtonPress
                    } else {
                        EventKind::Temperature
                    },
                    ts: Some(1_795_397_244),
                    battery: Some(87),
                    value: Some(21.5),
                },
                resident: Some("r-7f3a".into()),
                room: Some("living_room".into()),
            })
            .collect(),
        ..Default::default()
    }
}

/// Commits `events` in groups of `size`; returns the time taken.
fn fill(journal: &mut Journal, from: u64, events: u64, size: u64) -> Duration {
    let t = Instant::now();
    let mut seq = from;
    while seq < from + events {
        let n = size.min(from + events - seq);
        journal.apply(&group(seq, n)).expect("commit");
        seq += n;
    }
    t.elapsed()
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(200_000);
    let size = args.get(1).copied().unwrap_or(64).max(1);
    let rounds = 4u64;
    let dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("temp dir");
    let sealer = Arc::new(Sealer::new(&[0x42; 32]));
    let plain_path = dir.path().join("plain.redb");
    let sealed_path = dir.path().join("sealed.redb");
    let mut plain = Journal::open(&plain_path).expect("plain journal");
    let mut sealed = Journal::open_sealed(&sealed_path, sealer.clone()).expect("sealed journal");
    println!(
        "journal commit, {events} events in groups of {size}, {rounds} alternating rounds, in {}",
        dir.path().display()
    );
    let per_round = events / rounds;
    let (mut t_plain, mut t_sealed) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        let from = 1 + r * per_round * 16;
        t_plain += fill(&mut plain, from, per_round, size);
        t_sealed += fill(&mut sealed, from, per_round, size);
    }
    let done = per_round * rounds;
    let rate = |t: Duration| done as f64 / t.as_secs_f64();
    let bytes = |j: &Journal| -> u64 { j.reader().pending_bytes().expect("bytes").iter().sum() };
    println!(
        "plain : {:>9.0} events/s  {:>6.1} bytes/record",
        rate(t_plain),
        bytes(&plain) as f64 / done as f64
    );
    println!(
        "sealed: {:>9.0} events/s  {:>6.1} bytes/record",
        rate(t_sealed),
        bytes(&sealed) as f64 / done as f64
    );
    println!(
        "sealed/plain throughput: {:.2}",
        rate(t_sealed) / rate(t_plain)
    );

    // Sealing alone, without I/O.
    let record = br#"{"lane":"telemetry","seq":123456,"device":"motion-3","device_seq":7716,"kind":"temperature","ts":1795397244,"committed_ms":1795397244317,"battery":87,"value":21.5,"resident":"r-7f3a","room":"living_room"}"#;
    let n = 200_000;
    let t = Instant::now();
    let mut total = 0usize;
    for _ in 0..n {
        let s = sealer.seal("lane_telemetry", record);
        total += sealer.open("lane_telemetry", &s).expect("opens").len();
    }
    let per = t.elapsed() / n;
    assert_eq!(total, record.len() * n as usize);
    println!(
        "seal + open of one {}-byte record: {} ns",
        record.len(),
        per.as_nanos()
    );
}

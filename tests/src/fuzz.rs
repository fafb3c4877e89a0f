//! The bodies of Trygg's fuzz targets: one function per decoder that reads
//! bytes from outside the process.
//!
//! Each takes the raw input and must return without panicking, whatever the
//! bytes: a panic here is a bug in the decoder (or in a property below that
//! the code promises). They live in this crate, not in `tests/fuzz`, so that
//! a stable `cargo test` (`tests/tests/fuzz_corpus.rs`) replays every
//! committed corpus file through the very same code the nightly libFuzzer
//! build runs (`tests/fuzz/fuzz_targets/*.rs` only call these).
//!
//! Inputs are the bytes as they arrive: an MQTT payload, a config file. The
//! one target that needs two inputs, [`device_classify`], reads the topic
//! from the first line and the payload from the rest, so its corpus stays
//! readable.

use std::path::Path;
use std::time::{Duration, Instant};

use trygg_protocol::topic::{is_valid_device_id, DeviceTopic};
use trygg_protocol::{DeviceEvent, Heartbeat, Lane, Receipt, MAX_DEVICE_PAYLOAD, SCHEMA_VERSION};

/// A target's body: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by name: what the corpus replay test and the README list.
pub const TARGETS: &[(&str, Target)] = &[
    ("device_classify", device_classify),
    ("device_event", device_event),
    ("device_heartbeat", device_heartbeat),
    ("device_receipt", device_receipt),
    ("device_topic", device_topic),
    ("uplink_batch", uplink_batch),
    ("uplink_receipt", uplink_receipt),
    ("gateway_config", gateway_config),
    ("bridge_config", bridge_config),
    ("sim_config", sim_config),
];

/// A message from the gateway's local broker: `topic\npayload`, classified
/// against the default device register.
pub fn device_classify(data: &[u8]) {
    let (topic, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // MQTT topics are UTF-8; the broker refuses anything else.
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    let config = default_gateway_config();
    let register = default_register();
    match trygg_gateway::ingest::classify(topic, payload, register) {
        trygg_gateway::ingest::Incoming::Event(e) => {
            let id = DeviceTopic::parse(topic).map(DeviceTopic::device_id);
            assert_eq!(id, Some(e.device.as_str()), "event of another device");
            assert!(config.device(&e.device).is_some(), "unregistered device");
        }
        trygg_gateway::ingest::Incoming::Heartbeat { device, .. } => {
            assert!(config.device(&device).is_some(), "unregistered device");
        }
        trygg_gateway::ingest::Incoming::Rejected(r) => {
            // The dead letter is built for every rejection, so it must not
            // panic either, and keeps at most 4 KiB of the payload.
            let d = r.dead_letter(topic, payload, 0);
            assert_eq!(d.payload_len, payload.len());
            assert!(
                d.payload.len() <= 3 * MAX_DEVICE_PAYLOAD,
                "lossy text too long"
            );
        }
    }
}

fn default_register() -> &'static trygg_gateway::register::Register {
    static REGISTER: std::sync::OnceLock<trygg_gateway::register::Register> =
        std::sync::OnceLock::new();
    REGISTER
        .get_or_init(|| trygg_gateway::register::Register::from_config(default_gateway_config()))
}

fn default_gateway_config() -> &'static trygg_gateway::Config {
    static CONFIG: std::sync::OnceLock<trygg_gateway::Config> = std::sync::OnceLock::new();
    CONFIG.get_or_init(trygg_gateway::Config::default_config)
}

/// A device event payload: decode, and what decodes re-encodes to itself.
/// Also `probe_seq`, which the gateway runs on every payload that fails.
pub fn device_event(data: &[u8]) {
    let probed = trygg_protocol::wire::probe_seq(data);
    let Ok(event) = DeviceEvent::decode(data) else {
        return;
    };
    assert_eq!(probed, Some(event.seq), "probe_seq disagrees with decode");
    assert!(event.kind.device_may_send());
    assert!(event.battery.is_none_or(|b| b <= 100));
    assert!(event.value.is_none_or(f32::is_finite));
    let mut buf = [0u8; MAX_DEVICE_PAYLOAD];
    let n = event.encode(&mut buf).expect("a decoded event encodes");
    let again = DeviceEvent::decode(&buf[..n]).expect("an encoded event decodes");
    assert_eq!(again, event, "round trip changed the event");
}

/// A device heartbeat payload: decode, and round trip.
pub fn device_heartbeat(data: &[u8]) {
    let Ok(hb) = Heartbeat::decode(data) else {
        return;
    };
    assert_eq!(hb.v, SCHEMA_VERSION);
    assert!(hb.battery.is_none_or(|b| b <= 100));
    let mut buf = [0u8; 128];
    let n = hb.encode(&mut buf).expect("a decoded heartbeat encodes");
    assert_eq!(
        Heartbeat::decode(&buf[..n]),
        Ok(hb),
        "round trip changed it"
    );
}

/// A receipt payload, as a device decodes what the gateway sends it.
pub fn device_receipt(data: &[u8]) {
    let Ok(receipt) = Receipt::decode(data) else {
        return;
    };
    assert_eq!(receipt.v, SCHEMA_VERSION);
    // serde-json-core hands out strings still escaped (it has no buffer to
    // unescape into), so re-encoding escapes them again: only a reason
    // that needs no escaping comes back as it was.
    let mut buf = vec![0u8; 8 * MAX_DEVICE_PAYLOAD];
    let n = receipt.encode(&mut buf).expect("a decoded receipt encodes");
    let plain = receipt
        .reason
        .is_none_or(|r| !r.chars().any(|c| c == '\\' || c == '"' || c.is_control()));
    if plain {
        assert_eq!(
            Receipt::decode(&buf[..n]),
            Ok(receipt),
            "round trip changed it"
        );
    }
}

/// An MQTT topic at the gateway: parse, and rebuild what parsed.
pub fn device_topic(data: &[u8]) {
    let Ok(topic) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parsed) = DeviceTopic::parse(topic) else {
        return;
    };
    let id = parsed.device_id();
    assert!(is_valid_device_id(id));
    let leaf = match parsed {
        DeviceTopic::Event(_) => "evt",
        DeviceTopic::Heartbeat(_) => "hb",
        DeviceTopic::Receipt(_) => "ack",
    };
    let rebuilt = trygg_protocol::topic::device_topic(id, leaf);
    assert_eq!(rebuilt.as_str(), topic, "rebuilt topic differs");
}

/// An uplink batch at the bridge, from gateway `gw-1`: check it and, when it
/// passes, ingest it twice into a fresh ledger. The second time every
/// record is a duplicate: nothing stored twice, no second alarm.
pub fn uplink_batch(data: &[u8]) {
    use trygg_bridge::ingest::{check_batch, ingest, Ledger};

    let Ok(batch) = check_batch("gw-1", data) else {
        return;
    };
    let mut ledger = Ledger::default();
    let first = ingest(&mut ledger, &batch, 0);
    assert_eq!(first.receipt.batch, batch.batch);
    assert_eq!(
        first.events.len() + first.duplicates.len(),
        batch.records.len(),
        "every record is either stored or a duplicate"
    );
    let mut receipted: Vec<(Lane, u64)> = first
        .receipt
        .committed
        .iter()
        .flat_map(|r| {
            assert!(r.first <= r.last, "empty receipt range {r:?}");
            // A range is at most as long as the batch, so this is bounded.
            assert!(r.last - r.first < batch.records.len() as u64);
            (r.first..=r.last).map(move |s| (r.lane, s))
        })
        .collect();
    let mut sent: Vec<(Lane, u64)> = batch.records.iter().map(|r| (r.lane, r.seq)).collect();
    receipted.sort_unstable();
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(
        receipted, sent,
        "the receipt names exactly the batch's records"
    );

    let again = ingest(&mut ledger, &batch, 1);
    assert!(again.events.is_empty(), "a record stored twice");
    assert!(again.alarms.is_empty(), "a second alarm for a redelivery");
    assert!(again.gaps.is_empty() && again.regressions.is_empty());
    assert!(again.clears.is_empty(), "a redelivery closed an alarm");
    assert_eq!(again.duplicates.len(), batch.records.len());
    assert_eq!(again.receipt, first.receipt);
}

/// An uplink receipt at the gateway, as its uplink loop handles one: parse,
/// then apply it to the bookkeeping with a full window in flight.
pub fn uplink_receipt(data: &[u8]) {
    use trygg_gateway::uplink::UplinkState;

    let Ok(receipt) = serde_json::from_slice::<trygg_uplink::UplinkReceipt>(data) else {
        return;
    };
    let config = default_gateway_config();
    let now = Instant::now();
    let mut state = UplinkState::new(
        config.uplink.window,
        Duration::from_secs(config.uplink.receipt_timeout_s),
    );
    state.on_connected();
    let mut ids = Vec::new();
    for (i, lane) in Lane::ALL
        .iter()
        .cycle()
        .take(config.uplink.window)
        .enumerate()
    {
        ids.push(state.on_sent(&[(*lane, i as u64 + 1)], now));
    }
    let before = state.in_flight();
    let ranges = state.on_receipt(&receipt);
    assert_eq!(ranges, receipt.committed, "the receipt's ranges, as sent");
    let freed = usize::from(ids.contains(&receipt.batch));
    assert_eq!(state.in_flight(), before - freed);
    let _ = state.sendable();
    assert!(!state.on_tick(now), "a receipt made a batch overdue");
}

/// The gateway's config file: parse and validate (`from_toml` does both),
/// and a valid config survives serialisation (the end-to-end tests write
/// configs for child processes that way).
pub fn gateway_config(data: &[u8]) {
    // `Config::load` reads the file with `read_to_string`: UTF-8 or nothing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = trygg_gateway::Config::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    config.validate().expect("from_toml validated it");
    let written = toml::to_string(&config).expect("a valid config serialises");
    let reread = trygg_gateway::Config::from_toml(&written, Path::new("written.toml"))
        .unwrap_or_else(|e| panic!("a written config reads back: {e}\n{written}"));
    assert_eq!(format!("{reread:?}"), format!("{config:?}"));
}

/// The bridge's config file: laid over the embedded defaults, then validated.
pub fn bridge_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = trygg_bridge::config::Config::from_toml_str(text) {
        let _ = config.validate();
    }
}

/// The simulator's config file: parse and validate; a valid config's pace
/// turns into the waits the simulated home sleeps (`home.rs`: the mean
/// times a factor in 0.5..1.5, then `Duration::from_secs_f64`).
pub fn sim_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = trygg_sim::config::SimConfig::from_toml_str(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let home = &config.home;
    for factor in [0.5, 1.5] {
        assert!(
            Duration::try_from_secs_f64(home.telemetry_every_s * factor).is_ok(),
            "valid telemetry_every_s = {} is no wait",
            home.telemetry_every_s
        );
        if home.alarm_every_s > 0.0 {
            assert!(
                Duration::try_from_secs_f64(home.alarm_every_s * factor).is_ok(),
                "valid alarm_every_s = {} is no wait",
                home.alarm_every_s
            );
        }
    }
}

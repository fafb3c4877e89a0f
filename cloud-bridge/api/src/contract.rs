//! Gateway <-> backend messages (JSON over MQTT v5, TLS).
//!
//! ```text
//! trygg/v1/gw/{gateway_id}/batch    gateway -> backend   Batch, QoS 1
//! trygg/v1/gw/{gateway_id}/receipt  backend -> gateway   UplinkReceipt, QoS 1, after commit
//! trygg/v1/gw/{gateway_id}/status   gateway -> backend   "online" / "offline" (last will), retained
//! ```
//!
//! Every record carries its lane and a per-gateway, per-lane sequence
//! number assigned when the gateway committed it. The backend deduplicates
//! by event id (gateway, device, device sequence) and detects gaps per lane.

use serde::{Deserialize, Serialize};
use trygg_protocol::{EventKind, Lane};

pub const SCHEMA_VERSION: u16 = 1;
pub const BATCH_FILTER: &str = "trygg/v1/gw/+/batch";
pub const STATUS_FILTER: &str = "trygg/v1/gw/+/status";
pub const HEARTBEAT_FILTER: &str = "trygg/v1/gw/+/heartbeat";
/// The backend's own status, retained: `online` once the cloud-bridge is
/// subscribed to the gateways' batches (so nothing published from then on
/// finds no one), `offline` as its last will and on a clean stop. Gateways
/// send batches only while it says `online`.
pub const BRIDGE_STATUS_TOPIC: &str = "trygg/v1/bridge/status";
/// The largest batch payload the backend reads, in bytes.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

pub fn batch_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/batch")
}

pub fn receipt_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/receipt")
}

pub fn status_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/status")
}

/// A gateway's sign of life while it has nothing to send (QoS 0, not
/// retained); payload: the gateway's clock, Unix milliseconds.
pub fn heartbeat_topic(gateway: &str) -> String {
    format!("trygg/v1/gw/{gateway}/heartbeat")
}

/// Which gateway a `trygg/v1/gw/{id}/{leaf}` topic belongs to.
pub fn gateway_of_topic<'a>(topic: &'a str, leaf: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix("trygg/v1/gw/")?;
    let (id, l) = rest.split_once('/')?;
    (l == leaf && trygg_protocol::topic::is_valid_device_id(id)).then_some(id)
}

/// The id that makes an event unique across the whole service.
pub fn event_id(gateway: &str, device: &str, device_seq: u64) -> String {
    format!("{gateway}/{device}/{device_seq}")
}

/// One journal record on its way up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub lane: Lane,
    /// Per gateway and lane, assigned at commit, starting at 1.
    pub seq: u64,
    pub device: String,
    pub device_seq: u64,
    pub kind: EventKind,
    /// The device's clock, Unix seconds, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// When the gateway committed the event, Unix milliseconds.
    pub committed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
    /// Pseudonymous resident id from the gateway's device register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// For an event the gateway raises itself (`device` is then the
    /// gateway's own id and `device_seq` its own counter): the device it is
    /// about, if any. `device_silent` names the silent device here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Records going up, in lane order (alarms first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub v: u16,
    pub gateway: String,
    /// Per gateway process, to match a receipt to what was sent.
    pub batch: u64,
    pub records: Vec<Record>,
}

/// A closed range of lane sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub lane: Lane,
    pub first: u64,
    pub last: u64,
}

/// Sent by the cloud-bridge after it has committed a batch: every range is
/// durable at the backend and may leave the gateway's journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkReceipt {
    pub v: u16,
    pub batch: u64,
    pub committed: Vec<SeqRange>,
}

/// Collapses `(lane, seq)` pairs into as few ranges as possible.
pub fn ranges_of(mut seqs: Vec<(Lane, u64)>) -> Vec<SeqRange> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut out: Vec<SeqRange> = Vec::new();
    for (lane, seq) in seqs {
        match out.last_mut() {
            Some(r) if r.lane == lane && r.last + 1 == seq => r.last = seq,
            _ => out.push(SeqRange {
                lane,
                first: seq,
                last: seq,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_collapse_consecutive_sequences_per_lane() {
        let r = ranges_of(vec![
            (Lane::Telemetry, 3),
            (Lane::Alarm, 1),
            (Lane::Alarm, 2),
            (Lane::Telemetry, 5),
            (Lane::Telemetry, 4),
            (Lane::Alarm, 2),
        ]);
        assert_eq!(
            r,
            vec![
                SeqRange {
                    lane: Lane::Alarm,
                    first: 1,
                    last: 2
                },
                SeqRange {
                    lane: Lane::Telemetry,
                    first: 3,
                    last: 5
                },
            ]
        );
    }

    #[test]
    fn gateway_is_read_from_its_topics_only() {
        assert_eq!(
            gateway_of_topic("trygg/v1/gw/gw-1/batch", "batch"),
            Some("gw-1")
        );
        assert_eq!(gateway_of_topic("trygg/v1/gw/gw-1/receipt", "batch"), None);
        assert_eq!(gateway_of_topic("trygg/v1/gw/a b/batch", "batch"), None);
    }

    #[test]
    fn batch_round_trips_through_json() {
        let b = Batch {
            v: SCHEMA_VERSION,
            gateway: "gw-1".into(),
            batch: 7,
            records: vec![Record {
                lane: Lane::Alarm,
                seq: 1,
                device: "button-1".into(),
                device_seq: 42,
                kind: EventKind::ButtonPress,
                ts: None,
                committed_ms: 1,
                battery: Some(90),
                value: None,
                resident: Some("r-1".into()),
                room: None,
                subject: None,
            }],
        };
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""kind":"button_press""#) && json.contains(r#""lane":"alarm""#));
        assert_eq!(serde_json::from_str::<Batch>(&json).unwrap(), b);
    }
}

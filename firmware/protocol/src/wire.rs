//! JSON payloads of the device protocol, encoded and decoded without
//! allocation (serde-json-core), so a microcontroller and the gateway share
//! one decoder.
//!
//! An event:    `{"v":1,"seq":42,"kind":"button_press","ts":1763860000,"battery":87}`
//! A receipt:   `{"v":1,"seq":42,"status":"committed"}`
//! A heartbeat: `{"v":1,"battery":87,"rssi":-61}`
//!
//! `(device_id, seq)` is an event's idempotency key: a device re-sends an
//! event with the same `seq` until it has a receipt, and the gateway commits
//! it once.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::{EventKind, MAX_DEVICE_PAYLOAD, SCHEMA_VERSION};

/// An event as a device reports it. The device id is in the topic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceEvent {
    /// The device's sequence number: never repeats for one device.
    pub seq: u64,
    pub kind: EventKind,
    /// The device's clock, Unix seconds, if it has one.
    pub ts: Option<u64>,
    /// Battery level in percent.
    pub battery: Option<u8>,
    /// A measured value, for kinds that carry one (temperature in °C).
    pub value: Option<f32>,
}

/// Why a device payload was refused. Each is final: re-sending the same
/// bytes gives the same answer.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeError {
    TooLarge { len: usize },
    Malformed(serde_json_core::de::Error),
    WrongSchemaVersion { got: u16 },
    MissingField(&'static str),
    UnknownKind(heapless::String<32>),
    InvalidValue(&'static str),
}

impl DecodeError {
    /// A short, stable name for metrics labels and dead-letter records.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed(_) => "malformed_json",
            DecodeError::WrongSchemaVersion { .. } => "wrong_schema_version",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::InvalidValue(_) => "invalid_value",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len } => {
                write!(
                    f,
                    "payload of {len} bytes is over the limit of {MAX_DEVICE_PAYLOAD} bytes"
                )
            }
            DecodeError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            DecodeError::WrongSchemaVersion { got } => {
                write!(
                    f,
                    "schema version {got} is not supported (this gateway reads v{SCHEMA_VERSION})"
                )
            }
            DecodeError::MissingField(name) => write!(f, "missing field `{name}`"),
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind `{k}`"),
            DecodeError::InvalidValue(what) => write!(f, "invalid value: {what}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// The event as it is on the wire: every field optional, so that a missing
/// one gets a precise reason rather than a parser's guess.
#[derive(Deserialize)]
struct RawEvent<'a> {
    v: Option<u16>,
    seq: Option<u64>,
    #[serde(borrow)]
    kind: Option<&'a str>,
    ts: Option<u64>,
    battery: Option<u8>,
    value: Option<f32>,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: Option<u16>,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

fn check_battery(battery: Option<u8>) -> Result<(), DecodeError> {
    match battery {
        Some(b) if b > 100 => Err(DecodeError::InvalidValue("battery must be 0 to 100")),
        _ => Ok(()),
    }
}

/// The `seq` of a payload that failed to decode, if it can be read at all,
/// so the gateway can answer with a `rejected` receipt and the device stops
/// re-sending it.
pub fn probe_seq(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > MAX_DEVICE_PAYLOAD {
        return None;
    }
    serde_json_core::from_slice::<SeqOnly>(bytes)
        .ok()
        .and_then(|(s, _)| s.seq)
}

fn check_version(bytes: &[u8]) -> Result<(), DecodeError> {
    // The version is read on its own first, so that a future schema's
    // different shape is reported as a version mismatch, not as junk.
    let (probe, _) =
        serde_json_core::from_slice::<VersionOnly>(bytes).map_err(DecodeError::Malformed)?;
    match probe.v {
        None => Err(DecodeError::MissingField("v")),
        Some(SCHEMA_VERSION) => Ok(()),
        Some(got) => Err(DecodeError::WrongSchemaVersion { got }),
    }
}

impl DeviceEvent {
    /// Decodes and validates a device event payload.
    pub fn decode(bytes: &[u8]) -> Result<DeviceEvent, DecodeError> {
        if bytes.len() > MAX_DEVICE_PAYLOAD {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        check_version(bytes)?;
        let (raw, _) =
            serde_json_core::from_slice::<RawEvent>(bytes).map_err(DecodeError::Malformed)?;
        let _ = raw.v;
        let seq = raw.seq.ok_or(DecodeError::MissingField("seq"))?;
        let kind_name = raw.kind.ok_or(DecodeError::MissingField("kind"))?;
        let kind = EventKind::from_wire(kind_name).ok_or_else(|| {
            let mut s = heapless::String::new();
            for c in kind_name.chars().take(32) {
                if s.push(c).is_err() {
                    break;
                }
            }
            DecodeError::UnknownKind(s)
        })?;
        if !kind.device_may_send() {
            return Err(DecodeError::InvalidValue(
                "this kind is raised by the gateway or the backend, not by devices",
            ));
        }
        check_battery(raw.battery)?;
        if let Some(v) = raw.value {
            if !v.is_finite() {
                return Err(DecodeError::InvalidValue("value must be a finite number"));
            }
        }
        Ok(DeviceEvent {
            seq,
            kind,
            ts: raw.ts,
            battery: raw.battery,
            value: raw.value,
        })
    }

    /// Encodes the event into `buf`, returning the number of bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, serde_json_core::ser::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            v: u16,
            seq: u64,
            kind: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            ts: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            battery: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<f32>,
        }
        serde_json_core::to_slice(
            &Wire {
                v: SCHEMA_VERSION,
                seq: self.seq,
                kind: self.kind.wire(),
                ts: self.ts,
                battery: self.battery,
                value: self.value,
            },
            buf,
        )
    }
}

/// What the gateway answers on `trygg/v1/dev/{id}/ack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// The event is committed to the gateway's journal (fsync done).
    Committed,
    /// The event was committed earlier; this was a re-send.
    Duplicate,
    /// The event was refused for good; `reason` says why. Do not re-send.
    Rejected,
}

/// A receipt from the gateway to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt<'a> {
    pub v: u16,
    pub seq: u64,
    pub status: ReceiptStatus,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> Receipt<'a> {
    pub fn new(seq: u64, status: ReceiptStatus, reason: Option<&'a str>) -> Self {
        Receipt {
            v: SCHEMA_VERSION,
            seq,
            status,
            reason,
        }
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Receipt<'a>, DecodeError> {
        if bytes.len() > MAX_DEVICE_PAYLOAD {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        check_version(bytes)?;
        serde_json_core::from_slice::<Receipt>(bytes)
            .map(|(r, _)| r)
            .map_err(DecodeError::Malformed)
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, serde_json_core::ser::Error> {
        serde_json_core::to_slice(self, buf)
    }
}

/// A device's sign of life on `trygg/v1/dev/{id}/hb`. Not journaled: the
/// gateway keeps the last one in memory for supervision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i16>,
}

impl Heartbeat {
    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, DecodeError> {
        if bytes.len() > MAX_DEVICE_PAYLOAD {
            return Err(DecodeError::TooLarge { len: bytes.len() });
        }
        check_version(bytes)?;
        let (h, _) =
            serde_json_core::from_slice::<Heartbeat>(bytes).map_err(DecodeError::Malformed)?;
        check_battery(h.battery)?;
        Ok(h)
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, serde_json_core::ser::Error> {
        serde_json_core::to_slice(self, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<DeviceEvent, DecodeError> {
        DeviceEvent::decode(s.as_bytes())
    }

    #[test]
    fn decodes_a_full_event() {
        let e = decode(r#"{"v":1,"seq":42,"kind":"button_press","ts":1763860000,"battery":87}"#)
            .unwrap();
        assert_eq!(e.seq, 42);
        assert_eq!(e.kind, EventKind::ButtonPress);
        assert_eq!(e.ts, Some(1763860000));
        assert_eq!(e.battery, Some(87));
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let e =
            decode(r#"{"v":1,"seq":1,"kind":"motion","room":"kitchen","extra":[1,2]}"#).unwrap();
        assert_eq!(e.kind, EventKind::Motion);
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let e = DeviceEvent {
            seq: 7,
            kind: EventKind::Temperature,
            ts: None,
            battery: Some(50),
            value: Some(21.5),
        };
        let mut buf = [0u8; 128];
        let n = e.encode(&mut buf).unwrap();
        assert_eq!(DeviceEvent::decode(&buf[..n]).unwrap(), e);
    }

    #[test]
    fn malformed_json_is_rejected() {
        assert_eq!(
            decode(r#"{"v":1,"seq":"#).unwrap_err().code(),
            "malformed_json"
        );
        assert_eq!(decode("not json").unwrap_err().code(), "malformed_json");
    }

    #[test]
    fn wrong_schema_version_is_rejected_before_the_shape_is_checked() {
        assert_eq!(
            decode(r#"{"v":2,"whatever":true}"#).unwrap_err(),
            DecodeError::WrongSchemaVersion { got: 2 }
        );
    }

    #[test]
    fn each_missing_field_is_named() {
        assert_eq!(
            decode(r#"{"seq":1,"kind":"fall"}"#).unwrap_err(),
            DecodeError::MissingField("v")
        );
        assert_eq!(
            decode(r#"{"v":1,"kind":"fall"}"#).unwrap_err(),
            DecodeError::MissingField("seq")
        );
        assert_eq!(
            decode(r#"{"v":1,"seq":1}"#).unwrap_err(),
            DecodeError::MissingField("kind")
        );
    }

    #[test]
    fn unknown_kind_is_named() {
        let err = decode(r#"{"v":1,"seq":1,"kind":"teleport"}"#).unwrap_err();
        assert_eq!(err.code(), "unknown_kind");
        assert!(err.to_string().contains("teleport"));
    }

    #[test]
    fn oversized_payload_is_rejected_without_parsing() {
        let big = [b' '; MAX_DEVICE_PAYLOAD + 1];
        assert_eq!(
            DeviceEvent::decode(&big).unwrap_err(),
            DecodeError::TooLarge {
                len: MAX_DEVICE_PAYLOAD + 1
            }
        );
    }

    #[test]
    fn battery_over_100_is_invalid() {
        assert_eq!(
            decode(r#"{"v":1,"seq":1,"kind":"fall","battery":150}"#)
                .unwrap_err()
                .code(),
            "invalid_value"
        );
    }

    #[test]
    fn devices_may_not_claim_system_kinds() {
        assert_eq!(
            decode(r#"{"v":1,"seq":1,"kind":"sequence_gap"}"#)
                .unwrap_err()
                .code(),
            "invalid_value"
        );
        assert_eq!(
            decode(r#"{"v":1,"seq":1,"kind":"device_silent"}"#)
                .unwrap_err()
                .code(),
            "invalid_value"
        );
    }

    #[test]
    fn seq_of_a_refused_payload_is_found_when_readable() {
        assert_eq!(
            probe_seq(br#"{"v":1,"seq":77,"kind":"teleport"}"#),
            Some(77)
        );
        assert_eq!(probe_seq(br#"{"v":9,"seq":78}"#), Some(78));
        assert_eq!(probe_seq(b"{broken"), None);
    }

    #[test]
    fn heartbeat_battery_over_100_is_invalid() {
        assert_eq!(
            Heartbeat::decode(br#"{"v":1,"battery":200}"#)
                .unwrap_err()
                .code(),
            "invalid_value"
        );
    }

    #[test]
    fn receipt_round_trips() {
        let r = Receipt::new(9, ReceiptStatus::Rejected, Some("unknown device"));
        let mut buf = [0u8; 128];
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(Receipt::decode(&buf[..n]).unwrap(), r);
    }

    #[test]
    fn heartbeat_round_trips() {
        let h = Heartbeat {
            v: 1,
            battery: Some(80),
            rssi: Some(-60),
        };
        let mut buf = [0u8; 64];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(Heartbeat::decode(&buf[..n]).unwrap(), h);
    }
}

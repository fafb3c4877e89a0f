//! What a device message is, decided without I/O: an event of a known
//! device, a heartbeat, or a rejection with its reason.

use trygg_protocol::topic::DeviceTopic;
use trygg_protocol::{DeviceEvent, Heartbeat, MAX_DEVICE_PAYLOAD};

use crate::journal::{DeadLetter, NewEvent};
use crate::register::Register;

/// A device message, classified.
#[derive(Debug)]
pub enum Incoming {
    Event(NewEvent),
    Heartbeat {
        device: String,
        heartbeat: Heartbeat,
    },
    Rejected(Rejection),
}

/// A refused message: why, and whom to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The device to send a `rejected` receipt to, when the payload named a
    /// sequence number we can answer.
    pub device: Option<String>,
    pub seq: Option<u64>,
    /// A stable name for metrics: `malformed_json`, `unknown_device`, ...
    pub code: &'static str,
    pub reason: String,
}

impl Rejection {
    pub fn dead_letter(&self, topic: &str, payload: &[u8], at_ms: u64) -> DeadLetter {
        let shown = &payload[..payload.len().min(MAX_DEVICE_PAYLOAD)];
        DeadLetter {
            id: 0,
            at_ms,
            topic: topic.chars().take(256).collect(),
            reason_code: self.code.to_string(),
            reason: self.reason.clone(),
            payload: String::from_utf8_lossy(shown).into_owned(),
            payload_len: payload.len(),
        }
    }
}

fn reject(device: Option<&str>, seq: Option<u64>, code: &'static str, reason: String) -> Incoming {
    Incoming::Rejected(Rejection {
        device: device.map(str::to_string),
        seq,
        code,
        reason,
    })
}

/// Classifies one message from the local broker against the device
/// register as it is now.
pub fn classify(topic: &str, payload: &[u8], register: &Register) -> Incoming {
    let Some(parsed) = DeviceTopic::parse(topic) else {
        return reject(
            None,
            None,
            "bad_topic",
            format!(
                "topic `{}` is not a device topic",
                topic.chars().take(128).collect::<String>()
            ),
        );
    };
    let device_id = parsed.device_id();
    match parsed {
        DeviceTopic::Receipt(_) => reject(
            None,
            None,
            "bad_topic",
            "receipts are sent by the gateway, not to it".into(),
        ),
        DeviceTopic::Heartbeat(id) => {
            if register.get(id).is_none() {
                return reject(
                    None,
                    None,
                    "unknown_device",
                    format!("device `{id}` is not in this gateway's register"),
                );
            }
            match Heartbeat::decode(payload) {
                Ok(heartbeat) => Incoming::Heartbeat {
                    device: id.to_string(),
                    heartbeat,
                },
                Err(e) => reject(None, None, e.code(), e.to_string()),
            }
        }
        DeviceTopic::Event(_) => {
            let event = match DeviceEvent::decode(payload) {
                Ok(e) => e,
                Err(e) => {
                    let seq = trygg_protocol::wire::probe_seq(payload);
                    return reject(Some(device_id), seq, e.code(), e.to_string());
                }
            };
            let Some(device) = register.get(device_id) else {
                return reject(
                    Some(device_id),
                    Some(event.seq),
                    "unknown_device",
                    format!(
                        "device `{device_id}` is not in this gateway's register; pair it first"
                    ),
                );
            };
            Incoming::Event(NewEvent {
                device: device.id.clone(),
                event,
                resident: device.resident.clone(),
                room: device.room.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trygg_protocol::EventKind;

    fn config() -> Register {
        Register::from_config(&crate::config::Config::default_config())
    }

    fn code(i: Incoming) -> &'static str {
        match i {
            Incoming::Rejected(r) => r.code,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn known_device_event_is_accepted_with_its_register_entry() {
        match classify(
            "trygg/v1/dev/button-1/evt",
            br#"{"v":1,"seq":3,"kind":"button_press"}"#,
            &config(),
        ) {
            Incoming::Event(e) => {
                assert_eq!(e.event.kind, EventKind::ButtonPress);
                assert_eq!(e.resident.as_deref(), Some("r-7f3a"));
                assert_eq!(e.room.as_deref(), Some("bedroom"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_device_is_rejected_with_a_receipt_address() {
        match classify(
            "trygg/v1/dev/stranger/evt",
            br#"{"v":1,"seq":3,"kind":"fall"}"#,
            &config(),
        ) {
            Incoming::Rejected(r) => {
                assert_eq!(r.code, "unknown_device");
                assert_eq!((r.device.as_deref(), r.seq), (Some("stranger"), Some(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_bad_payload_has_its_own_reason() {
        let c = config();
        let t = "trygg/v1/dev/button-1/evt";
        assert_eq!(code(classify(t, b"{nope", &c)), "malformed_json");
        assert_eq!(
            code(classify(t, br#"{"v":9,"seq":1,"kind":"fall"}"#, &c)),
            "wrong_schema_version"
        );
        assert_eq!(
            code(classify(t, br#"{"v":1,"kind":"fall"}"#, &c)),
            "missing_field"
        );
        assert_eq!(code(classify(t, &vec![b' '; 5000], &c)), "too_large");
        assert_eq!(
            code(classify("trygg/v1/dev/a b/evt", b"{}", &c)),
            "bad_topic"
        );
    }

    #[test]
    fn undecodable_event_with_a_readable_seq_gets_a_rejected_receipt_address() {
        match classify(
            "trygg/v1/dev/button-1/evt",
            br#"{"v":1,"seq":12,"kind":"teleport"}"#,
            &config(),
        ) {
            Incoming::Rejected(r) => assert_eq!(
                (r.code, r.device.as_deref(), r.seq),
                ("unknown_kind", Some("button-1"), Some(12))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dead_letter_keeps_at_most_4_kib_of_payload_and_its_true_length() {
        let r = Rejection {
            device: None,
            seq: None,
            code: "too_large",
            reason: "big".into(),
        };
        let d = r.dead_letter("t", &vec![b'x'; 10_000], 5);
        assert_eq!((d.payload.len(), d.payload_len), (4096, 10_000));
    }
}

//! MQTT topics of the device protocol.
//!
//! ```text
//! trygg/v1/dev/{device_id}/evt   device -> gateway   an event (QoS 1)
//! trygg/v1/dev/{device_id}/hb    device -> gateway   a heartbeat (QoS 0 or 1)
//! trygg/v1/dev/{device_id}/ack   gateway -> device   a receipt, sent after commit (QoS 1)
//! ```

use crate::MAX_DEVICE_ID;

pub const PREFIX: &str = "trygg/v1/dev/";
/// What the gateway subscribes to for events.
pub const EVENTS_FILTER: &str = "trygg/v1/dev/+/evt";
/// What the gateway subscribes to for heartbeats.
pub const HEARTBEATS_FILTER: &str = "trygg/v1/dev/+/hb";

/// What a device topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    Event(&'a str),
    Heartbeat(&'a str),
    Receipt(&'a str),
}

impl<'a> DeviceTopic<'a> {
    /// Parses a device topic; `None` for anything else, including a device
    /// id that is empty, too long, or has characters outside `[A-Za-z0-9_-]`.
    pub fn parse(topic: &'a str) -> Option<DeviceTopic<'a>> {
        let rest = topic.strip_prefix(PREFIX)?;
        let (id, leaf) = rest.split_once('/')?;
        if !is_valid_device_id(id) {
            return None;
        }
        match leaf {
            "evt" => Some(DeviceTopic::Event(id)),
            "hb" => Some(DeviceTopic::Heartbeat(id)),
            "ack" => Some(DeviceTopic::Receipt(id)),
            _ => None,
        }
    }

    pub fn device_id(self) -> &'a str {
        match self {
            DeviceTopic::Event(id) | DeviceTopic::Heartbeat(id) | DeviceTopic::Receipt(id) => id,
        }
    }
}

/// A device id is 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes `trygg/v1/dev/{device_id}/{leaf}` into a fixed buffer.
pub fn device_topic(device_id: &str, leaf: &str) -> heapless::String<96> {
    let mut s = heapless::String::new();
    // 13 + 64 + 1 + 3 bytes always fit in 96 for a valid id.
    let _ = s.push_str(PREFIX);
    let _ = s.push_str(device_id);
    let _ = s.push('/');
    let _ = s.push_str(leaf);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_leaf() {
        assert_eq!(
            DeviceTopic::parse("trygg/v1/dev/button-1/evt"),
            Some(DeviceTopic::Event("button-1"))
        );
        assert_eq!(
            DeviceTopic::parse("trygg/v1/dev/b_2/hb"),
            Some(DeviceTopic::Heartbeat("b_2"))
        );
        assert_eq!(
            DeviceTopic::parse("trygg/v1/dev/b/ack"),
            Some(DeviceTopic::Receipt("b"))
        );
    }

    #[test]
    fn rejects_foreign_or_malformed_topics() {
        assert_eq!(DeviceTopic::parse("trygg/v2/dev/b/evt"), None);
        assert_eq!(DeviceTopic::parse("trygg/v1/dev//evt"), None);
        assert_eq!(DeviceTopic::parse("trygg/v1/dev/a b/evt"), None);
        assert_eq!(DeviceTopic::parse("trygg/v1/dev/a/evt/x"), None);
        let long =
            "trygg/v1/dev/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/evt";
        assert_eq!(DeviceTopic::parse(long), None);
    }

    #[test]
    fn builds_topics() {
        assert_eq!(
            device_topic("button-1", "ack").as_str(),
            "trygg/v1/dev/button-1/ack"
        );
    }
}

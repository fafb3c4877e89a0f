//! The device's link to the gateway's broker over rumqttc: the firmware's
//! [`Transport`] (publish side) and a task that polls the connection and
//! turns what arrives into [`LinkEvent`]s (receive side).
//!
//! Topics (docs/protocol.md, section 2): events on
//! `trygg/v1/dev/{id}/evt` at QoS 1, heartbeats on `.../hb` at QoS 0;
//! receipts arrive on `.../ack` and settings on `.../cfg`, both subscribed
//! at QoS 1.
//!
//! The transport never waits: [`Transport::publish`] is rumqttc's
//! `try_publish`, and a full request queue is an error, which the firmware
//! treats as "not now" and retries after its own interval. So the queue
//! and its retry are the firmware's, as on a device, not the client's.
//! The session is clean: what matters survives in the device's queue, not
//! in the broker.

use std::time::Duration;

use rumqttc::{AsyncClient, ClientError, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use trygg_firmware::{Leaf, Transport};
use trygg_protocol::topic;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    pub device_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// Publishes the client may hold before `try_publish` refuses.
    pub queue: usize,
    /// QoS 1 publishes in flight at once.
    pub inflight: u16,
    /// Whether heartbeats go out. A device that is told to stay silent
    /// (some tests) has them dropped here; the firmware always sends them.
    pub heartbeats: bool,
    /// The device's key (its MQTT password). With one, the device connects
    /// as the gateway's brokers require: client id = username = device id.
    pub key: Option<String>,
}

impl LinkOptions {
    pub fn new(device_id: &str, host: &str, port: u16) -> Self {
        LinkOptions {
            device_id: device_id.to_string(),
            host: host.to_string(),
            port,
            keep_alive: Duration::from_secs(5),
            queue: 4096,
            inflight: 200,
            heartbeats: true,
            key: None,
        }
    }
}

/// What the connection reports to the device loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected and subscribed to receipts and settings: send.
    Connected,
    /// The connection is gone (rumqttc reconnects by itself).
    Disconnected { reason: String },
    /// A message on `.../ack`.
    Receipt(Vec<u8>),
    /// A message on `.../cfg`.
    Config(Vec<u8>),
}

/// The firmware's transport over rumqttc.
pub struct MqttTransport {
    client: AsyncClient,
    evt_topic: String,
    hb_topic: String,
    heartbeats: bool,
}

impl Transport for MqttTransport {
    type Error = ClientError;

    fn publish(&mut self, leaf: Leaf, payload: &[u8]) -> Result<(), ClientError> {
        match leaf {
            Leaf::Event => {
                self.client
                    .try_publish(&self.evt_topic, QoS::AtLeastOnce, false, payload.to_vec())
            }
            Leaf::Heartbeat if !self.heartbeats => Ok(()),
            Leaf::Heartbeat => {
                self.client
                    .try_publish(&self.hb_topic, QoS::AtMostOnce, false, payload.to_vec())
            }
        }
    }
}

impl MqttTransport {
    /// The client, e.g. to disconnect at shutdown.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }
}

/// Connects (in the background: it retries until the broker answers) and
/// returns the transport for the device and the link's events. The
/// connection task ends when the receiver is dropped.
///
/// Must be called within a tokio runtime.
pub fn connect(o: &LinkOptions) -> (MqttTransport, mpsc::UnboundedReceiver<LinkEvent>) {
    let client_id = match &o.key {
        Some(_) => o.device_id.clone(),
        None => format!("dev-{}-{}", o.device_id, rand::random::<u32>()),
    };
    let mut opts = MqttOptions::new(client_id, o.host.clone(), o.port);
    if let Some(key) = &o.key {
        opts.set_credentials(o.device_id.clone(), key.clone());
    }
    opts.set_keep_alive(o.keep_alive)
        .set_clean_session(true)
        .set_inflight(o.inflight);
    let (client, mut eventloop) = AsyncClient::new(opts, o.queue);
    eventloop.network_options.set_tcp_nodelay(true);
    let ack = topic::device_topic(&o.device_id, "ack").to_string();
    let cfg = topic::device_topic(&o.device_id, "cfg").to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = client.clone();
    let device_id = o.device_id.clone();
    tokio::spawn(async move {
        let mut up = false;
        loop {
            let polled = tokio::select! {
                _ = tx.closed() => break,
                p = eventloop.poll() => p,
            };
            let event = match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let filters =
                        [&ack, &cfg].map(|t| SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce));
                    // Refused only if the request queue is full or closed;
                    // the next reconnect subscribes again.
                    let _ = sub.try_subscribe_many(filters);
                    None
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    up = true;
                    tracing::debug!(device = %device_id, "link up");
                    Some(LinkEvent::Connected)
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack => {
                    Some(LinkEvent::Receipt(p.payload.to_vec()))
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cfg => {
                    Some(LinkEvent::Config(p.payload.to_vec()))
                }
                Ok(_) => None,
                Err(e) => {
                    let was_up = std::mem::replace(&mut up, false);
                    // rumqttc reconnects at the next poll: not in a tight loop.
                    let pause = tokio::time::sleep(Duration::from_millis(200));
                    let event = was_up.then(|| {
                        tracing::debug!(device = %device_id, error = %e, "link down");
                        LinkEvent::Disconnected {
                            reason: e.to_string(),
                        }
                    });
                    if let Some(ev) = event {
                        if tx.send(ev).is_err() {
                            break;
                        }
                    }
                    pause.await;
                    continue;
                }
            };
            if let Some(ev) = event {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    let transport = MqttTransport {
        client,
        evt_topic: topic::device_topic(&o.device_id, "evt").to_string(),
        hb_topic: topic::device_topic(&o.device_id, "hb").to_string(),
        heartbeats: o.heartbeats,
    };
    (transport, rx)
}

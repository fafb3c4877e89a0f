//! The uplink shell: an MQTT v5 client that takes gateways' batches from
//! the broker, has the store commit them, and receipts them.
//!
//! For each batch, in this order and never another:
//!
//! 1. the store commits it (fsync), grouped with whatever else waits;
//! 2. the bridge publishes the `UplinkReceipt` (QoS 1) to the gateway;
//! 3. the bridge acks the batch's MQTT publish (manual acks).
//!
//! A crash before 1 loses nothing: the broker has not been acked and the
//! gateway still holds the records. A crash between 1 and 3 makes the
//! batch come again, and the store recognises every record as a duplicate.
//!
//! A payload the bridge cannot ingest is committed as a dead letter and
//! then acked: redelivering it would never make it better.
//!
//! Acks leave in the order the publishes arrived (MQTT requires it, and
//! rumqttd drops a connection that acks out of order): one task awaits each
//! commit in arrival order. The store commits in that order anyway, so
//! waiting in line costs nothing.
//!
//! The session is persistent (`clean_start = false`, client id
//! `trygg-bridge`), so batches published while the bridge was away wait in
//! the broker. Subscriptions are made again on every ConnAck all the same,
//! in case the broker forgot the session.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use trygg_uplink::backoff::Backoff;
use trygg_uplink::contract::{self, MAX_BATCH_BYTES};
use trygg_uplink::metrics::Metrics;
use trygg_uplink::mqtt_url::MqttUrl;

use crate::ingest;
use crate::store::{Done, Op, StoreWriter};

pub const CLIENT_ID: &str = "trygg-bridge";
/// How long shutdown waits for batches already taken to be committed,
/// receipted and acked.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Final: the configuration's TLS files are unusable.
    #[error("uplink TLS: {0}")]
    Tls(#[from] trygg_uplink::tls::TlsError),
    /// Final: nothing can be committed any more.
    #[error("uplink: the store writer has stopped")]
    StoreStopped,
}

pub struct UplinkSettings {
    pub url: MqttUrl,
    /// Every gateway heard from is named here, for supervision.
    pub seen: tokio::sync::mpsc::UnboundedSender<String>,
    /// The CA the broker's certificate must chain to (mqtts:// only).
    pub ca_file: Option<std::path::PathBuf>,
    /// The bridge's own client certificate and key (from the gateway CA):
    /// presented to the broker on mqtts://.
    pub identity: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
    /// The broker's largest payload, so the client reads what it may send.
    pub max_payload: usize,
    /// Publishes to make (gateway settings); retained ones are made again
    /// after every (re)subscribe.
    pub outbox: tokio::sync::mpsc::UnboundedReceiver<crate::settings::Outgoing>,
    /// Where gateways' answers to their settings are kept.
    pub store: crate::store::Store,
    /// Gateways decommissioned, for supervision to forget.
    pub forget: tokio::sync::mpsc::UnboundedSender<String>,
}

/// Runs until `cancel`, then finishes what it took and disconnects.
/// `subscribed` fires after the first SubAck.
pub async fn run(
    settings: UplinkSettings,
    writer: StoreWriter,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    subscribed: oneshot::Sender<()>,
) -> Result<(), UplinkError> {
    let mut opts = MqttOptions::new(CLIENT_ID, settings.url.host.clone(), settings.url.port);
    opts.set_keep_alive(Duration::from_secs(10))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(7 * 24 * 3600))
        .set_manual_acks(true)
        .set_max_packet_size(Some((settings.max_payload + 64 * 1024) as u32))
        .set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
            contract::BRIDGE_STATUS_TOPIC,
            "offline",
            QoS::AtLeastOnce,
            true,
            None,
        ));
    if settings.url.tls {
        let ca = settings
            .ca_file
            .as_deref()
            .expect("validate() requires a CA for mqtts://");
        let tls = match settings.identity {
            Some((certs, key)) => trygg_uplink::tls::client_config_with_cert(ca, certs, key)?,
            None => trygg_uplink::tls::client_config(ca)?,
        };
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    opts.set_network_options(network);
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let tracker = TaskTracker::new();
    let (ordered_tx, ordered_rx) = tokio::sync::mpsc::unbounded_channel::<Taken>();
    tracker.spawn(answer_in_order(ordered_rx, client.clone(), metrics.clone()));

    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut subscribed = Some(subscribed);
    let url = settings.url.to_string();
    // Said again every few seconds while subscribed: a last will of an
    // earlier connection, delivered late, must not leave gateways waiting.
    let mut announce = tokio::time::interval(Duration::from_secs(5));
    let mut listening = false;
    // The latest retained publish per topic, made again after a reconnect
    // (an external broker may have lost them). Every gateway's settings.
    let mut retained: std::collections::HashMap<String, crate::settings::Outgoing> = settings
        .store
        .all_gateway_settings()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read gateway settings to publish");
            Vec::new()
        })
        .iter()
        .map(|r| {
            let o = crate::settings::Outgoing::config(r);
            (o.topic.clone(), o)
        })
        .collect();
    let mut outbox = settings.outbox;
    let publish_now = |client: &AsyncClient, o: &crate::settings::Outgoing| {
        if let Err(e) = client.try_publish(
            o.topic.clone(),
            QoS::AtLeastOnce,
            o.retain,
            o.payload.clone(),
        ) {
            tracing::warn!(topic = %o.topic, error = %e, "publish could not be queued; made again at the next reconnect");
        }
    };

    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = announce.tick(), if listening => {
                let _ = client.try_publish(contract::BRIDGE_STATUS_TOPIC, QoS::AtLeastOnce, true, "online");
                continue;
            }
            Some(out) = outbox.recv() => {
                if listening {
                    publish_now(&client, &out);
                }
                if out.retain {
                    retained.insert(out.topic.clone(), out);
                }
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                metrics.inc("uplink_connects_total", "");
                tracing::info!(broker = %url, session_present = ack.session_present, "uplink connected");
                let filters = [
                    contract::BATCH_FILTER,
                    contract::STATUS_FILTER,
                    contract::HEARTBEAT_FILTER,
                    trygg_uplink::remote_config::CONFIG_RESULT_FILTER,
                    trygg_uplink::remote_config::DECOMMISSION_FILTER,
                ];
                let subs =
                    filters.map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f, QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(subs) {
                    tracing::warn!(error = %e, "uplink subscribe could not be queued");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::info!(reasons = ?ack.return_codes, "uplink subscribed");
                // Now a batch published finds us: tell the gateways.
                listening = true;
                if let Err(e) = client.try_publish(
                    contract::BRIDGE_STATUS_TOPIC,
                    QoS::AtLeastOnce,
                    true,
                    "online",
                ) {
                    tracing::warn!(error = %e, "bridge status could not be queued");
                }
                for o in retained.values() {
                    publish_now(&client, o);
                }
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let reply = take(
                    publish,
                    &ordered_tx,
                    &writer,
                    &metrics,
                    &settings.seen,
                    &settings.store,
                    &settings.forget,
                )
                .await?;
                if let Some(reply) = reply {
                    publish_now(&client, &reply);
                }
            }
            Ok(_) => {}
            Err(e) => {
                listening = false;
                metrics.inc("uplink_connection_errors_total", "");
                let delay = backoff.next_delay();
                tracing::warn!(broker = %url, error = %e, retry_ms = delay.as_millis() as u64, "uplink connection lost");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    // Stop taking input, but keep the connection turning until what was
    // taken is committed, receipted and acked. Publishes arriving now are
    // left unacked; the broker keeps them for the next start.
    drop(ordered_tx);
    tracker.close();
    let deadline = tokio::time::sleep(DRAIN_DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tracker.wait() => break,
            _ = &mut deadline => {
                tracing::warn!(pending = tracker.len(), "uplink shutdown deadline passed with batches in flight");
                break;
            }
            event = eventloop.poll() => if event.is_err() { break },
        }
    }
    // Flush the receipts and acks queued above, then say goodbye.
    let _ = client.try_publish(
        contract::BRIDGE_STATUS_TOPIC,
        QoS::AtLeastOnce,
        true,
        "offline",
    );
    let _ = client.try_disconnect();
    let flush = async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    tracing::info!("uplink stopped");
    Ok(())
}

/// A publish taken, waiting for its turn to be answered.
struct Taken {
    publish: Publish,
    topic: String,
    /// The store's answer; `None` for a publish that needs only its ack.
    answer: Option<oneshot::Receiver<Result<Done, crate::store::StoreError>>>,
}

/// Answers taken publishes strictly in arrival order: receipt, then ack.
async fn answer_in_order(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Taken>,
    client: AsyncClient,
    metrics: Arc<Metrics>,
) {
    while let Some(Taken {
        publish,
        topic,
        answer,
    }) = rx.recv().await
    {
        let Some(answer) = answer else {
            let _ = client.ack(&publish).await;
            continue;
        };
        match answer.await {
            Ok(Ok(Done::Ingested { ingested, .. })) => {
                let receipt = serde_json::to_vec(&ingested.receipt).expect("receipts serialize");
                let gw = ingested.gateway.as_str();
                if let Err(e) = client
                    .publish(
                        contract::receipt_topic(gw),
                        QoS::AtLeastOnce,
                        false,
                        receipt,
                    )
                    .await
                {
                    tracing::warn!(gateway = gw, error = %e, "receipt could not be queued; the gateway will send again");
                }
                metrics.inc("batches_committed_total", "");
                tracing::debug!(
                    gateway = gw,
                    batch = ingested.receipt.batch,
                    stored = ingested.events.len(),
                    "batch committed and receipted"
                );
                let _ = client.ack(&publish).await;
            }
            Ok(Ok(_)) => {
                let _ = client.ack(&publish).await;
            }
            // Not acked: the broker redelivers it on the next session, and the
            // gateway sends it again for want of a receipt. (Later acks still
            // go out: MQTT 5 lets a receiver leave a publish unacknowledged.)
            Ok(Err(e)) => {
                tracing::error!(topic = %topic, error = %e, "batch not committed; left unacked")
            }
            Err(_) => tracing::error!(topic = %topic, "store writer stopped; batch left unacked"),
        }
    }
}

/// Takes one publish: queues its commit now (keeping arrival order) and
/// hands it to [`answer_in_order`], so the next publish can join the same
/// group commit.
async fn take(
    publish: Publish,
    ordered: &tokio::sync::mpsc::UnboundedSender<Taken>,
    writer: &StoreWriter,
    metrics: &Arc<Metrics>,
    seen: &tokio::sync::mpsc::UnboundedSender<String>,
    store: &crate::store::Store,
    forget: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<Option<crate::settings::Outgoing>, UplinkError> {
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    if let Some(gw) = contract::gateway_of_topic(&topic, "decommission") {
        let reply = decommission(gw, &publish.payload, store, forget, metrics).await;
        let _ = ordered.send(Taken {
            publish,
            topic,
            answer: None,
        });
        return Ok(Some(reply));
    }
    if let Some(gw) = contract::gateway_of_topic(&topic, "config-result") {
        let _ = seen.send(gw.to_string());
        match serde_json::from_slice::<trygg_uplink::remote_config::ConfigResult>(&publish.payload)
        {
            Ok(result) => {
                let (store, gw) = (store.clone(), gw.to_string());
                let answered = tokio::task::spawn_blocking(move || {
                    store
                        .gateway_settings_answered(&gw, &result, crate::store::now_ms())
                        .map(|r| (gw, result, r))
                })
                .await;
                match answered {
                    Ok(Ok((gw, result, _))) if result.applied => {
                        metrics.inc("gateway_settings_answers_total", "outcome=\"applied\"");
                        tracing::info!(gateway = %gw, version = result.version, "gateway applied its settings");
                    }
                    Ok(Ok((gw, result, _))) => {
                        metrics.inc("gateway_settings_answers_total", "outcome=\"refused\"");
                        tracing::warn!(gateway = %gw, version = result.version, error = ?result.error, "gateway refused its settings; nothing of them was applied");
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "a gateway's settings answer could not be stored")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a gateway's settings answer could not be stored")
                    }
                }
            }
            Err(e) => {
                metrics.inc("gateway_settings_answers_total", "outcome=\"unreadable\"");
                tracing::warn!(gateway = gw, error = %e, "a gateway's settings answer cannot be read; ignored");
            }
        }
        let _ = ordered.send(Taken {
            publish,
            topic,
            answer: None,
        });
        return Ok(None);
    }
    if let Some(gw) = contract::gateway_of_topic(&topic, "heartbeat") {
        let _ = seen.send(gw.to_string());
        let _ = ordered.send(Taken {
            publish,
            topic,
            answer: None,
        });
        return Ok(None);
    }
    if let Some(gw) = contract::gateway_of_topic(&topic, "status") {
        let status = String::from_utf8_lossy(&publish.payload);
        let online = status.trim() == "online";
        // A retained "online" may be old news; it still starts the clock,
        // and the period decides.
        if online {
            let _ = seen.send(gw.to_string());
        }
        metrics.set(
            "gateway_online",
            &format!("gateway=\"{gw}\""),
            if online { 1.0 } else { 0.0 },
        );
        tracing::info!(gateway = gw, status = %status.trim(), "gateway status");
        let _ = ordered.send(Taken {
            publish,
            topic,
            answer: None,
        });
        return Ok(None);
    }
    let checked = match contract::gateway_of_topic(&topic, "batch") {
        Some(gw) => {
            let _ = seen.send(gw.to_string());
            ingest::check_batch(gw, &publish.payload)
        }
        None => Err(ingest::Rejected {
            reason: "unknown_topic",
            message: format!("no batch topic: {topic:?}"),
        }),
    };
    let op = match checked {
        Ok(batch) => Op::Ingest(batch),
        Err(rejected) => {
            metrics.inc(
                "batches_rejected_total",
                &format!("reason=\"{}\"", rejected.reason),
            );
            tracing::warn!(topic = %topic, reason = rejected.reason, bytes = publish.payload.len(), message = %rejected.message, "batch rejected");
            Op::DeadLetter {
                reason: rejected.reason,
                message: rejected.message,
                topic: topic.clone(),
                payload: publish.payload[..publish.payload.len().min(MAX_BATCH_BYTES)].to_vec(),
            }
        }
    };
    let answer = writer
        .enqueue(op)
        .await
        .map_err(|_| UplinkError::StoreStopped)?;
    let _ = ordered.send(Taken {
        publish,
        topic,
        answer: Some(answer),
    });
    Ok(None)
}

/// A gateway asks to be taken off the service: recorded (durable, audited),
/// its supervision ended; answered with what came of it.
async fn decommission(
    gw: &str,
    payload: &[u8],
    store: &crate::store::Store,
    forget: &tokio::sync::mpsc::UnboundedSender<String>,
    metrics: &Arc<Metrics>,
) -> crate::settings::Outgoing {
    use trygg_uplink::remote_config::{Decommission, DecommissionResult};
    let failed = |why: String| DecommissionResult {
        v: 1,
        done: false,
        error: Some(why),
    };
    let result = match serde_json::from_slice::<Decommission>(payload) {
        Err(e) => failed(format!("unreadable request: {e}")),
        Ok(ask) => {
            let (store, g) = (store.clone(), gw.to_string());
            let done = tokio::task::spawn_blocking(move || {
                let now = crate::store::now_ms();
                store.decommission_gateway(&g, ask.pending, now)?;
                // Its certificate goes with it: refused from its next
                // connection (this one stays up for the answer).
                store
                    .revoke_gateway(
                        &g,
                        &format!("gateway/{g}"),
                        "decommissioned at its own request",
                        "",
                        now,
                    )
                    .map(|_| ())
            })
            .await;
            match done {
                Ok(Ok(())) => {
                    let _ = forget.send(gw.to_string());
                    metrics.inc("gateways_decommissioned_total", "");
                    tracing::warn!(gateway = gw, pending = ask.pending, "gateway decommissioned at its request: no longer supervised; it wipes itself");
                    DecommissionResult {
                        v: 1,
                        done: true,
                        error: None,
                    }
                }
                Ok(Err(e)) => failed(format!("the backend could not record it: {e}")),
                Err(e) => failed(format!("the backend could not record it: {e}")),
            }
        }
    };
    crate::settings::Outgoing {
        topic: trygg_uplink::remote_config::decommission_result_topic(gw),
        payload: serde_json::to_vec(&result).expect("serializes"),
        retain: false,
    }
}

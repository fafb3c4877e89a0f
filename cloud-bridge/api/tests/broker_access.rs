//! The embedded broker's access control (Trygg's rumqttd patch): an
//! authenticator for CONNECT, an authorizer for every publish, subscribe
//! and will topic, client-certificate identities from a caller's own
//! rustls config, and TLS handshakes that cannot hold up other clients.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use trygg_uplink::broker::{
    Access, AccessRequest, Authenticator, Authorizer, BrokerSettings, EmbeddedBroker, MqttVersion,
};

fn settings() -> BrokerSettings {
    BrokerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        version: MqttVersion::V4,
        tls: None,
        max_payload: 64 * 1024,
        max_inflight: 100,
        log_segment_bytes: BrokerSettings::SMALL_LOG.0,
        log_segments: BrokerSettings::SMALL_LOG.1,
        tls_config: None,
        authenticator: None,
        authorizer: None,
    }
}

/// `watcher` may do anything; any other client only its own `own/{id}/...`.
fn own_topics_only() -> Authorizer {
    Arc::new(|r: &AccessRequest| {
        r.client_id == "watcher" || r.topic.starts_with(&format!("own/{}/", r.client_id))
    })
}

fn options(id: &str, broker: &EmbeddedBroker) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// Polls until ConnAck; `Err` with the error if the connection fails first.
async fn connected(eventloop: &mut EventLoop) -> Result<(), String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Err(_) => return Err("no ConnAck within 5 s".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                return if ack.code == rumqttc::ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("{:?}", ack.code))
                };
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Drives the loop until it fails (the broker closed it) or `within` passes.
async fn closed_within(eventloop: &mut EventLoop, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A watcher subscribed to `#`; returns the topics it receives.
async fn watcher(broker: &EmbeddedBroker) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (client, mut eventloop) = AsyncClient::new(options("watcher", broker), 64);
    connected(&mut eventloop).await.expect("watcher connects");
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = tx.send(p.topic.clone());
            }
        }
    });
    // The subscription is in place once a publish of its own comes back.
    rx
}

#[tokio::test]
async fn a_client_publishing_outside_its_topics_is_cut_off_and_nothing_is_routed() {
    let mut s = settings();
    s.authorizer = Some(own_topics_only());
    let broker = EmbeddedBroker::start(s).unwrap();
    let mut seen = watcher(&broker).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (dev, mut eventloop) = AsyncClient::new(options("dev-a", &broker), 64);
    connected(&mut eventloop).await.expect("dev-a connects");
    dev.publish("own/dev-a/evt", QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    dev.publish("own/dev-b/evt", QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    assert!(
        closed_within(&mut eventloop, Duration::from_secs(5)).await,
        "the broker must close a connection that publishes to another client's topic"
    );

    let first = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the allowed publish is routed")
        .unwrap();
    assert_eq!(first, "own/dev-a/evt");
    let more = tokio::time::timeout(Duration::from_millis(800), seen.recv()).await;
    assert!(
        more.is_err(),
        "the forged publish must not be routed: {more:?}"
    );
}

#[tokio::test]
async fn subscribing_to_another_clients_topics_and_a_foreign_will_are_refused() {
    let mut s = settings();
    s.authorizer = Some(own_topics_only());
    let broker = EmbeddedBroker::start(s).unwrap();

    let (dev, mut eventloop) = AsyncClient::new(options("dev-a", &broker), 64);
    connected(&mut eventloop).await.unwrap();
    dev.subscribe("own/dev-a/ack", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(!closed_within(&mut eventloop, Duration::from_millis(500)).await);
    dev.subscribe("own/#", QoS::AtLeastOnce).await.unwrap();
    assert!(closed_within(&mut eventloop, Duration::from_secs(5)).await);

    let mut o = options("dev-a", &broker);
    o.set_last_will(rumqttc::LastWill::new(
        "own/dev-b/status",
        "gone",
        QoS::AtLeastOnce,
        true,
    ));
    let (_c, mut eventloop) = AsyncClient::new(o, 64);
    assert!(connected(&mut eventloop).await.is_err());
}

#[tokio::test]
async fn the_authenticator_refuses_a_wrong_password_and_a_missing_login() {
    let mut s = settings();
    let check: Authenticator = Arc::new(|client, user, pass| client == user && pass == "right");
    s.authenticator = Some(check);
    let broker = EmbeddedBroker::start(s).unwrap();

    let mut o = options("dev-a", &broker);
    o.set_credentials("dev-a", "right");
    let (_c, mut eventloop) = AsyncClient::new(o, 64);
    connected(&mut eventloop).await.expect("right password");

    let mut o = options("dev-a", &broker);
    o.set_credentials("dev-a", "wrong");
    let (_c, mut eventloop) = AsyncClient::new(o, 64);
    assert!(connected(&mut eventloop).await.is_err(), "wrong password");

    let (_c, mut eventloop) = AsyncClient::new(options("dev-a", &broker), 64);
    assert!(connected(&mut eventloop).await.is_err(), "no login");
}

struct Pki {
    ca: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = p.self_signed(&key).unwrap();
        Pki {
            ca,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    fn leaf(&self, cn: &str, server: bool) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = if server {
            vec!["127.0.0.1".to_string()]
        } else {
            vec![]
        };
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

fn tls_options(
    id: &str,
    broker: &EmbeddedBroker,
    server_ca: &Pki,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> MqttOptions {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let mut o = options(id, broker);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )));
    o
}

#[tokio::test]
async fn client_certificates_name_the_peer_and_a_stalled_handshake_holds_up_nobody() {
    trygg_uplink::tls::install_crypto_provider();
    let server_ca = Pki::new("server CA");
    let client_ca = Pki::new("client CA");
    let foreign_ca = Pki::new("foreign CA");
    let (server_cert, server_key) = server_ca.leaf("broker", true);
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(client_ca.ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(client_roots))
        .build()
        .unwrap();
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();

    let mut s = settings();
    s.tls_config = Some(Arc::new(server));
    // A client may only publish under the name in its certificate.
    s.authorizer = Some(Arc::new(|r: &AccessRequest| {
        r.access == Access::Publish
            && r.peer_identity
                .is_some_and(|cn| r.topic == format!("gw/{cn}/batch"))
    }));
    let broker = EmbeddedBroker::start(s).unwrap();

    // A client that opens TCP and never says hello.
    let _stalled = tokio::net::TcpStream::connect(broker.addr).await.unwrap();

    let cert = client_ca.leaf("gw-1", false);
    let (client, mut eventloop) =
        AsyncClient::new(tls_options("gw-1", &broker, &server_ca, Some(cert)), 64);
    let started = std::time::Instant::now();
    connected(&mut eventloop)
        .await
        .expect("a client with a certificate from the client CA connects");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a stalled handshake held up another client for {:?}",
        started.elapsed()
    );
    client
        .publish("gw/gw-1/batch", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert!(!closed_within(&mut eventloop, Duration::from_millis(500)).await);
    client
        .publish("gw/gw-2/batch", QoS::AtLeastOnce, false, "forged")
        .await
        .unwrap();
    assert!(closed_within(&mut eventloop, Duration::from_secs(5)).await);

    let (_c, mut eventloop) = AsyncClient::new(tls_options("gw-1", &broker, &server_ca, None), 64);
    assert!(
        connected(&mut eventloop).await.is_err(),
        "no client certificate"
    );
    let foreign = foreign_ca.leaf("gw-1", false);
    let (_c, mut eventloop) =
        AsyncClient::new(tls_options("gw-1", &broker, &server_ca, Some(foreign)), 64);
    assert!(
        connected(&mut eventloop).await.is_err(),
        "a certificate from another CA"
    );
}

//! `trygg-sim demo`: the backend, a gateway and a simulated home in one
//! process, on embedded defaults, with real brokers, real TLS and real
//! files on disk.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use trygg_uplink::mqtt_url::MqttUrl;

use crate::config::SimConfig;
use crate::home::SimHome;

/// Where a running demo can be reached.
#[derive(Clone, Debug)]
pub struct DemoReady {
    pub device_broker: MqttUrl,
    /// The simulator's own broker, where `trygg-sim press` asks a
    /// simulated button to be pressed.
    pub control_broker: MqttUrl,
    pub api: SocketAddr,
    /// The staff console (log in with the demo users printed at start).
    pub console: SocketAddr,
    pub backend_broker: MqttUrl,
    pub gateway_api: SocketAddr,
    pub data_dir: PathBuf,
}

impl DemoReady {
    /// The one line that says the demo is up (scripts and tests parse it).
    pub fn line(&self) -> String {
        format!(
            "trygg demo ready: device-broker={} control-broker={} api=http://{} backend-broker={} gateway-api=http://{} data={} console=http://{}",
            self.device_broker,
            self.control_broker,
            self.api,
            self.backend_broker,
            self.gateway_api,
            self.data_dir.display(),
            self.console
        )
    }
}

/// The preferred port if it is free, else 0 (any free port).
fn port_or_any(preferred: u16) -> u16 {
    if preferred != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)).is_ok() {
        preferred
    } else {
        0
    }
}

/// Starts everything; returns once `shutdown` completes and all is stopped.
pub async fn run_demo(
    sim: SimConfig,
    ready_tx: Option<tokio::sync::oneshot::Sender<DemoReady>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let _temp;
    let data_dir = if sim.demo.data_dir.as_os_str().is_empty() {
        let t = tempfile::Builder::new().prefix("trygg-demo-").tempdir()?;
        let p = t.path().to_path_buf();
        _temp = Some(t);
        p
    } else {
        _temp = None;
        std::fs::create_dir_all(&sim.demo.data_dir)?;
        sim.demo.data_dir.clone()
    };
    let cancel = CancellationToken::new();

    // The staff console's users and register, before the backend opens
    // its store: no default password, one made for this run.
    let gw_defaults = trygg_gateway::Config::default_config();
    let logins = demo_register(&data_dir.join("backend"), &gw_defaults.gateway_id)?;

    // The backend.
    let defaults = trygg_bridge::Config::default();
    let bridge_config = trygg_bridge::Config {
        data_dir: data_dir.join("backend"),
        broker: trygg_bridge::config::BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..defaults.broker
        },
        api: trygg_bridge::config::ApiConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port_or_any(sim.demo.api_port))),
        },
        console: trygg_bridge::config::ConsoleConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port_or_any(sim.demo.console_port))),
            ..defaults.console
        },
        enrollment: trygg_bridge::config::EnrollmentConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..defaults.enrollment
        },
        ..defaults
    };
    let (btx, brx) = tokio::sync::oneshot::channel();
    let bridge = tokio::spawn(trygg_bridge::run(
        bridge_config,
        Some(btx),
        cancel.clone().cancelled_owned(),
    ));
    let backend = brx
        .await
        .context("the backend stopped before it was ready (see the log above)")?;
    let backend_broker = backend.broker.clone();

    // The gateway.
    let mut gw = gw_defaults;
    gw.data_dir = data_dir.join("gateway");
    gw.local_broker.listen = SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port_or_any(sim.demo.device_broker_port),
    ));
    gw.uplink.url = backend_broker.to_string();
    gw.uplink.ca_file = backend.ca_file.clone();
    gw.local_api.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    // Enrolled as a technician would (a one-time code, the key made on the
    // gateway's side); kept for the next run of the demo.
    crate::enroll::enroll_gateway(&backend, &mut gw, "Demo home", "trygg-sim demo").await?;
    // The technician page on loopback (accounts: `trygg-gateway technician
    // add` with this run's data dir).
    if let Some(t) = gw.technician.as_mut() {
        t.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    }
    let technician_login = demo_technician(&gw.data_dir)?;
    // The simulated devices' keys, paired with the gateway (the secret
    // they come from is kept with the demo's data, so that a register kept
    // from an earlier run still matches).
    crate::keys::init_from_file(&data_dir.join("sim-device-keys.secret"))
        .context("the simulated devices' key secret")?;
    crate::keys::with_keys(&mut gw.devices);
    let devices = gw.devices.clone();
    let (gtx, grx) = tokio::sync::oneshot::channel();
    let gateway = tokio::spawn(trygg_gateway::run(
        gw,
        Some(gtx),
        cancel.clone().cancelled_owned(),
    ));
    let gateway_ready = grx
        .await
        .context("the gateway stopped before it was ready (see the log above)")?;

    // The home, and the simulator's own broker where presses are asked for.
    // 1884 beside the usual 1883 when the demo runs on its usual ports.
    let control_port = if sim.demo.device_broker_port == 0 {
        0
    } else {
        port_or_any(1884)
    };
    let control = tokio::task::spawn_blocking(move || {
        trygg_uplink::broker::EmbeddedBroker::start(trygg_uplink::broker::BrokerSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, control_port)),
            version: trygg_uplink::broker::MqttVersion::V4,
            tls: None,
            max_payload: 64 * 1024,
            max_inflight: 100,
            log_segment_bytes: trygg_uplink::broker::BrokerSettings::SMALL_LOG.0,
            log_segments: trygg_uplink::broker::BrokerSettings::SMALL_LOG.1,
            tls_config: None,
            authenticator: None,
            authorizer: None,
        })
    })
    .await?
    .context("starting the simulator's control broker")?;
    let control = MqttUrl {
        host: Ipv4Addr::LOCALHOST.to_string(),
        port: control.addr.port(),
        tls: false,
    };
    let _home = SimHome::start(
        &devices,
        &gateway_ready.device_broker,
        &control,
        &sim.home,
        cancel.clone(),
    );

    let ready = DemoReady {
        device_broker: gateway_ready.device_broker.clone(),
        control_broker: control.clone(),
        api: backend.api,
        console: backend.console,
        backend_broker,
        gateway_api: gateway_ready.local_api,
        data_dir: data_dir.clone(),
    };
    println!("{}", ready.line());
    println!();
    println!("  A simulated home (resident r-7f3a) is sending events through the gateway to the backend.");
    println!(
        "  Staff console:    http://{}/  (Norwegian; English under the language switch)",
        ready.console
    );
    for (user, role, password) in &logins {
        match password {
            Some(p) => println!("                    {role}: user {user}, password {p}  (made for this run)"),
            None => println!("                    {role}: user {user} (made by an earlier run on this data dir; its password was printed then)"),
        }
    }
    if let Some(t) = &gateway_ready.technician {
        println!(
            "  Technician page:  https://{}/  (the gateway's own certificate: SHA256:{})",
            t.addr, t.fingerprint
        );
        match &technician_login {
            Some(p) => println!("                    user demo-tech, password {p}  (made for this run)"),
            None => println!("                    user demo-tech (made by an earlier run on this data dir; its password was printed then)"),
        }
    }
    println!(
        "  Open alarms:      curl -s 'http://{}/api/v1/alarms?state=open'",
        ready.api
    );
    println!(
        "  Live alarms:      curl -N http://{}/api/v1/stream",
        ready.api
    );
    println!(
        "  API description:  http://{}/api/v1/openapi.json",
        ready.api
    );
    println!(
        "  Press the button: trygg-sim press --device button-1 --broker {}",
        ready.control_broker
    );
    println!(
        "  Devices:          trygg-gateway device list --api {}   (each simulated device connects with its own key)",
        ready.gateway_api
    );
    println!(
        "  Acknowledge:      curl -s -X POST -H 'content-type: application/json' -d '{{\"by\":\"kari\"}}' http://{}/api/v1/alarms/ID/acknowledge",
        ready.api
    );
    println!(
        "  Close:            curl -s -X POST -H 'content-type: application/json' -d '{{\"by\":\"kari\",\"note\":\"visited, all well\"}}' http://{}/api/v1/alarms/ID/close",
        ready.api
    );
    println!("  Stop:             Ctrl-C");
    println!();
    if let Some(tx) = ready_tx {
        let _ = tx.send(ready.clone());
    }
    let feed = tokio::spawn(alarm_feed(ready.api, cancel.clone()));

    shutdown.await;
    println!("stopping: home, gateway (committing what it took), backend");
    cancel.cancel();
    let _ = feed.await;
    match tokio::time::timeout(Duration::from_secs(15), gateway).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gateway stopped with an error"),
        Err(_) => tracing::warn!("gateway did not stop within 15 s"),
        _ => {}
    }
    match tokio::time::timeout(Duration::from_secs(15), bridge).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "backend stopped with an error"),
        Err(_) => tracing::warn!("backend did not stop within 15 s"),
        _ => {}
    }
    println!("stopped");
    Ok(())
}

/// Makes the demo's console users (an operator and an administrator, with
/// random passwords) and registers the demo resident and gateway in unit
/// `demo`. Returns (user, role, password if made now).
/// A technician account `demo-tech` for the gateway's page, with a password
/// made for this run (printed), unless an earlier run made it.
fn demo_technician(gateway_dir: &std::path::Path) -> anyhow::Result<Option<String>> {
    use trygg_gateway::technician::accounts::AccountsFile;
    let file = AccountsFile::in_dir(gateway_dir);
    if file.load()?.get("demo-tech").is_some() {
        return Ok(None);
    }
    let password: String = (0..16)
        .map(|_| {
            const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
            CHARS[rand::random_range(0..CHARS.len())] as char
        })
        .collect();
    file.update(|a| a.add("demo-tech", &password, trygg_bridge::store::now_ms()))?;
    Ok(Some(password))
}

fn demo_register(
    backend_dir: &std::path::Path,
    gateway_id: &str,
) -> anyhow::Result<Vec<(String, &'static str, Option<String>)>> {
    use trygg_bridge::access::{Lang, NewUser, Resident, Role};
    std::fs::create_dir_all(backend_dir)?;
    let store = trygg_bridge::store::Store::open(&backend_dir.join("bridge.redb"))
        .context("opening the demo backend's store")?;
    let now = trygg_bridge::store::now_ms();
    let mut out = Vec::new();
    for (user, display, role, units, label) in [
        ("demo", "Demo operatør", Role::Operator, "demo", "operator"),
        (
            "demo-admin",
            "Demo administrator",
            Role::Administrator,
            "*",
            "administrator",
        ),
    ] {
        if store.user(user)?.is_some() {
            out.push((user.to_string(), label, None));
            continue;
        }
        let password: String = (0..16)
            .map(|_| {
                const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
                CHARS[rand::random_range(0..CHARS.len())] as char
            })
            .collect();
        store
            .create_user(
                NewUser {
                    username: user.into(),
                    display_name: display.into(),
                    role,
                    units: vec![units.into()],
                    groups: vec!["home-care".into()],
                    lang: Lang::Nb,
                    password: password.clone(),
                },
                "trygg-sim demo",
                now,
            )
            .map_err(|e| anyhow::anyhow!("creating demo user {user}: {e}"))?;
        out.push((user.to_string(), label, Some(password)));
    }
    if store.resident("r-7f3a")?.is_none() {
        store.put_resident(
            &Resident {
                id: "r-7f3a".into(),
                name: "Ingrid Demo (fiktiv)".into(),
                unit: "demo".into(),
                address: "Demoveien 1, 0000 Demo".into(),
                notes: "A made-up resident for the demo. / En oppdiktet beboer for demoen.".into(),
            },
            "trygg-sim demo",
            now,
        )?;
        store.set_gateway_unit(gateway_id, "demo", "trygg-sim demo", now)?;
    }
    Ok(out)
}

/// Prints new and changed alarms as the backend streams them.
async fn alarm_feed(api: SocketAddr, cancel: CancellationToken) {
    let client = reqwest::Client::new();
    let url = format!("http://{api}/api/v1/stream");
    loop {
        let resp =
            tokio::select! { _ = cancel.cancelled() => return, r = client.get(&url).send() => r };
        let Ok(resp) = resp else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! { _ = cancel.cancelled() => return, c = stream.next() => c };
            let Some(Ok(chunk)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                for line in message.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Some(text) = describe_change(data.trim()) {
                            println!("{text}");
                        }
                    }
                }
            }
        }
    }
}

fn describe_change(data: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    let change = v.get("change")?.as_str()?;
    let a = v.get("alarm")?;
    let s = |k: &str| a.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    let id = a.get("id").and_then(|x| x.as_u64()).unwrap_or(0);
    Some(format!(
        "[alarm #{id} {change}] {} {} | {} / {} | resident={} room={} device={}{}",
        s("severity").to_uppercase(),
        s("kind"),
        s("label_nb"),
        s("label_en"),
        s("resident"),
        s("room"),
        s("device"),
        match change {
            "acknowledged" => format!(" by {}", s("acknowledged_by")),
            "closed" => format!(" by {}: {}", s("closed_by"), s("note")),
            _ => String::new(),
        }
    ))
}

//! `trygg-gateway device ...` and `trygg-gateway test-alarm`: clients of
//! the running gateway's local API (`local_api.listen` of its config). The
//! gateway owns the register; these commands only ask it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

/// The running gateway's local API.
pub struct LocalApiClient {
    base: String,
    http: reqwest::Client,
}

/// What a request got back: the status and the JSON body.
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl LocalApiClient {
    pub fn new(addr: SocketAddr) -> LocalApiClient {
        LocalApiClient {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the gateway's local API at {}: is trygg-gateway running? start it with `trygg-gateway --config FILE` (or `sudo systemctl start trygg-gateway`), and give the same --config to this command",
                    self.base
                )
            } else {
                anyhow!("local API at {}: {e}", self.base)
            }
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }
}

/// The API's error as a message, or the answer's body when it succeeded.
fn ok(answer: Answer) -> anyhow::Result<Value> {
    if (200..300).contains(&answer.status) {
        return Ok(answer.body);
    }
    let message = answer.body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| answer.body.to_string());
    Err(anyhow!("{message} (HTTP {})", answer.status))
}

/// What a `device` command asks.
pub enum DeviceAsk {
    List,
    Show(String),
    Add(Value),
    Swap { old: String, new_id: String },
    Remove(String),
}

const ASK: Duration = Duration::from_secs(15);

/// Runs a `device` command against the gateway and prints the answer.
pub async fn device(api: &LocalApiClient, ask: DeviceAsk, as_json: bool) -> anyhow::Result<()> {
    use reqwest::Method;
    let now = now_ms();
    match ask {
        DeviceAsk::List => {
            let body = ok(api
                .request(Method::GET, "/api/v1/devices", None, ASK)
                .await?)?;
            let list = body["devices"].as_array().cloned().unwrap_or_default();
            if as_json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else if list.is_empty() {
                println!("no devices paired: add one with `trygg-gateway device add ID --type TYPE --room ROOM --resident PSEUDONYM`");
            } else {
                print!("{}", table(&list, now));
            }
        }
        DeviceAsk::Show(id) => {
            let d = ok(api
                .request(Method::GET, &format!("/api/v1/devices/{id}"), None, ASK)
                .await?)?;
            print_one(&d, as_json, now)?;
        }
        DeviceAsk::Add(device) => {
            let d = ok(api
                .request(Method::POST, "/api/v1/devices", Some(device), ASK)
                .await?)?;
            if !as_json {
                println!(
                    "paired {}: its events are taken from now on",
                    text(&d["id"])
                );
            }
            print_one(&d, as_json, now)?;
        }
        DeviceAsk::Swap { old, new_id } => {
            let d = ok(api
                .request(
                    Method::POST,
                    &format!("/api/v1/devices/{old}/swap"),
                    Some(json!({ "new_id": new_id })),
                    ASK,
                )
                .await?)?;
            if !as_json {
                println!("swapped {old} for {new_id}: every setting moved; events from {old} are refused from now on");
            }
            print_one(&d, as_json, now)?;
        }
        DeviceAsk::Remove(id) => {
            let body = ok(api
                .request(Method::DELETE, &format!("/api/v1/devices/{id}"), None, ASK)
                .await?)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!(
                    "removed {id}: its events are refused from now on (rejected unknown_device)"
                );
            }
        }
    }
    Ok(())
}

/// Raises a test alarm and waits for the backend's confirmation; an error
/// (non-zero exit) when it did not come within `timeout`.
/// What `trygg-gateway decommission` was asked.
pub struct DecommissionAsk {
    pub gateway_id: String,
    pub data_dir: std::path::PathBuf,
    pub yes: bool,
    pub force: bool,
    pub deliver_within_s: u64,
}

/// Runs a decommission on the running gateway and follows it until the
/// gateway has wiped itself (or says why it did not).
pub async fn decommission(api: &LocalApiClient, ask: DecommissionAsk) -> anyhow::Result<()> {
    let short = Duration::from_secs(10);
    let status = api
        .request(reqwest::Method::GET, "/api/v1/status", None, short)
        .await?;
    let p = &status.body["journal_pending"];
    let pending: u64 = ["alarm", "care", "telemetry"]
        .iter()
        .map(|k| p[k].as_u64().unwrap_or(0))
        .sum();
    println!(
        "This ends gateway {} for good: it delivers what it holds ({pending} events), the backend revokes it, and its journal, keys and settings are wiped.",
        ask.gateway_id
    );
    if ask.force {
        println!(
            "--force: the {pending} events it holds are NOT delivered (they are lost) and the backend is NOT asked to revoke it: revoke it there by hand (trygg-bridge gateway revoke {})",
            ask.gateway_id
        );
    }
    if !ask.yes {
        use std::io::Write;
        print!("Type the gateway id ({}) to go on: ", ask.gateway_id);
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() != ask.gateway_id {
            anyhow::bail!("not confirmed: nothing was done");
        }
    }
    let answer = api
        .request(
            reqwest::Method::POST,
            "/api/v1/decommission",
            Some(json!({
                "confirm": ask.gateway_id,
                "force": ask.force,
                "deliver_within_s": ask.deliver_within_s,
            })),
            short,
        )
        .await?;
    if answer.status != 202 {
        anyhow::bail!(
            "the gateway refused: {}",
            answer.body["error"].as_str().unwrap_or("no reason given")
        );
    }
    // Follow it until the gateway stops (it wipes on its way out).
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = match api
            .request(reqwest::Method::GET, "/api/v1/decommission", None, short)
            .await
        {
            Ok(a) => a.body,
            Err(_) => break,
        };
        let phase = now["decommission"]["phase"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let line = match phase.as_str() {
            "delivering" => {
                let p = &now["pending"];
                format!(
                    "delivering: {} alarms, {} care, {} telemetry events wait for the backend's receipt (uplink {})",
                    p["alarm"], p["care"], p["telemetry"],
                    if now["uplink_connected"].as_bool() == Some(true) { "connected" } else { "DOWN" }
                )
            }
            "revoking" => "asking the backend to revoke this gateway...".into(),
            "wiping" => "stopping and wiping...".into(),
            "failed" => anyhow::bail!(
                "decommission stopped, nothing was wiped: {}",
                now["decommission"]["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
            ),
            other => other.to_string(),
        };
        if line != last {
            println!("{line}");
            last = line;
        }
    }
    match crate::decommission::marker_in(&ask.data_dir) {
        Some(marker) => {
            println!(
                "done: gateway {} is decommissioned; {} is all that is left",
                ask.gateway_id,
                marker.display()
            );
            Ok(())
        }
        None => anyhow::bail!(
            "the gateway stopped, but {} has no DECOMMISSIONED note: see the gateway's log (journalctl -u trygg-gateway)",
            ask.data_dir.display()
        ),
    }
}

pub async fn test_alarm(
    api: &LocalApiClient,
    device: Option<String>,
    timeout: Duration,
    as_json: bool,
) -> anyhow::Result<()> {
    let answer = api
        .request(
            reqwest::Method::POST,
            "/api/v1/test-alarm",
            Some(json!({ "device": device, "timeout_s": timeout.as_secs() })),
            timeout + Duration::from_secs(15),
        )
        .await?;
    let who = device.as_deref().unwrap_or("the gateway itself");
    if answer.status == 504 {
        let b = &answer.body;
        if as_json {
            println!("{}", serde_json::to_string_pretty(b)?);
        }
        return Err(anyhow!(
            "test alarm for {who} is committed on the gateway (in {} ms) but not confirmed by the backend within {} s{}; it stays in the journal and goes up when the uplink is back (see `curl -s {}/api/v1/status`)",
            b["committed_after_ms"],
            timeout.as_secs(),
            if b["uplink_connected"] == false {
                ": the uplink is down"
            } else {
                " (uplink down or backend slow?)"
            },
            api.base
        ));
    }
    let b = ok(answer)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&b)?);
    } else {
        println!(
            "test alarm for {who} confirmed by the backend in {} ms (committed on the gateway in {} ms; {} lane seq {}). The backend records it as a test, not as a care alarm.",
            b["confirmed_after_ms"], b["committed_after_ms"], text(&b["lane"]), b["seq"]
        );
    }
    Ok(())
}

fn print_one(d: &Value, as_json: bool, now: u64) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(d)?);
        return Ok(());
    }
    let h = &d["health"];
    for (k, v) in [
        ("id", text(&d["id"])),
        ("type", text(&d["type"])),
        ("room", text(&d["room"])),
        ("resident", text(&d["resident"])),
        ("supervision", supervision(d)),
        ("state", text(&h["supervision"])),
        ("heartbeat", seconds_or_default(&d["heartbeat_s"])),
        ("pre-alarm", seconds_or_default(&d["pre_alarm_s"])),
        ("battery", battery(h)),
        ("signal", rssi(h)),
        ("last message", ago(&h["last_seen_ms"], now)),
        ("last heartbeat", ago(&h["last_heartbeat_ms"], now)),
    ] {
        println!("{k:<15} {v}");
    }
    Ok(())
}

/// The devices as a table, one line each, with their health.
pub fn table(list: &[Value], now: u64) -> String {
    let header = [
        "ID",
        "TYPE",
        "ROOM",
        "RESIDENT",
        "SUPERVISION",
        "STATE",
        "BATTERY",
        "SIGNAL",
        "LAST MESSAGE",
    ];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let h = &d["health"];
            vec![
                text(&d["id"]),
                text(&d["type"]),
                text(&d["room"]),
                text(&d["resident"]),
                supervision(d),
                text(&h["supervision"]),
                battery(h),
                rssi(h),
                ago(&h["last_seen_ms"], now),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn supervision(d: &Value) -> String {
    match d["supervision_s"].as_u64() {
        Some(s) => format!("{s} s"),
        None => "off".into(),
    }
}

/// A device setting sent on its cfg topic; unset, the device's own default.
fn seconds_or_default(v: &Value) -> String {
    v.as_u64()
        .map(|s| format!("{s} s"))
        .unwrap_or_else(|| "device default".into())
}

fn battery(h: &Value) -> String {
    h["battery"]
        .as_u64()
        .map(|b| format!("{b}%"))
        .unwrap_or_else(|| "-".into())
}

fn rssi(h: &Value) -> String {
    h["rssi"]
        .as_i64()
        .map(|r| format!("{r} dBm"))
        .unwrap_or_else(|| "-".into())
}

fn ago(v: &Value, now: u64) -> String {
    let Some(at) = v.as_u64() else {
        return "never (since start)".into();
    };
    let s = now.saturating_sub(at) / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The local API's address from the config, refusing port 0 (a running
/// gateway's real port is then unknown).
pub fn api_addr(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() == 0 {
        return Err(anyhow!(
            "local_api.listen in the config has port 0, so the running gateway's port is unknown: give it with --api ADDR (the gateway prints it in its ready line)"
        ));
    }
    Ok(listen)
}

/// Reads `--api` or the config's `local_api.listen`.
pub fn resolve(api: Option<&str>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    match api {
        Some(a) => a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("--api `{a}` is not an address like 127.0.0.1:9464")),
        None => api_addr(listen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_device_with_its_health_in_aligned_columns() {
        let list = vec![
            json!({"id": "button-1", "type": "safety_button", "room": "bedroom", "resident": "r-7f3a",
                   "supervision_s": 900, "health": {"battery": 87, "rssi": -61, "last_seen_ms": 95_000,
                   "supervision": "ok"}}),
            json!({"id": "smoke-1", "type": "smoke_detector", "room": null, "resident": null,
                   "supervision_s": null, "health": {"supervision": "off"}}),
        ];
        let t = table(&list, 100_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID        TYPE"), "{t}");
        assert!(
            lines[1].contains("87%")
                && lines[1].contains("-61 dBm")
                && lines[1].contains("5 s ago"),
            "{t}"
        );
        assert!(
            lines[2].contains("off") && lines[2].contains("never"),
            "{t}"
        );
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..col + 2], "ok", "{t}");
    }

    #[test]
    fn port_zero_in_the_config_asks_for_the_address() {
        let err = resolve(None, "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("--api"), "{err}");
        assert_eq!(
            resolve(Some("http://127.0.0.1:9/"), "127.0.0.1:0".parse().unwrap()).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }
}

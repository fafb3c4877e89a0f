//! The staff console in a real browser: the backend (with its console and a
//! short escalation chain), a gateway and a simulated button device run in
//! this process; `tests/browser/console.test.mjs` drives Debian's chromium
//! through playwright-core against them, as kari, ola (unit sentrum), per
//! (unit nord) and an administrator, and checks every page with axe-core
//! (WCAG 2.1 AA) in both languages.
//!
//! The two sides talk line by line: the script prints `PRESS n` when its
//! boards are ready; this side notes the time, answers `PRESSED n <epoch
//! ms>` and presses the button through the firmware, and the script
//! measures when the alarm appears. Each check the script passes is printed
//! (`CHECK ok ...`), as is each one skipped and why.
//!
//! Needs node, `npm ci` in tests/browser, and /usr/bin/chromium (Debian's
//! `chromium`); `scripts/test` installs them. Without them this test fails
//! when CI=true (or TRYGG_BROWSER_TESTS=required, as scripts/test sets),
//! and otherwise skips, saying so loudly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use trygg_bridge::access::{Lang, NewUser, Resident, Role};
use trygg_sim::device::spawn_device;
use trygg_tests::*;

/// The resident the gateway's default device register puts on button-1.
const RESIDENT_ID: &str = "r-7f3a";
const RESIDENT_NAME: &str = "Ingrid Hansen";
/// The escalation chain the test configures: home-care at once, the
/// response centre after this many seconds without an acknowledgement.
const ESCALATE_AFTER_S: u64 = 3;
const ESCALATE_TO: &str = "response-centre";
/// The whole browser run, Chromium's start included.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// Written past the test harness's capture: a skip or a check is seen in
/// every run, not only in a failing one.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "console_browser: {line}");
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("TRYGG_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Node, the npm packages and Chromium, or what is missing and how to get it.
fn browser_tools() -> Result<(), String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| {
            format!("node is not installed ({e}): install Node.js 18 or newer (Debian: apt-get install nodejs npm)")
        })?;
    if !node.status.success() {
        return Err("`node --version` failed".into());
    }
    let dir = browser_dir();
    let installed = |dir: &Path| {
        dir.join("node_modules/playwright-core/package.json")
            .exists()
            && dir.join("node_modules/axe-core/axe.min.js").exists()
    };
    if !installed(&dir) {
        // What scripts/test does first; done here too for a developer who
        // runs this test alone.
        loud("tests/browser/node_modules is missing: running `npm ci` there");
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status();
        if !matches!(status, Ok(s) if s.success()) || !installed(&dir) {
            return Err(format!(
                "playwright-core and axe-core are not installed: run `npm ci` in {} ({status:?})",
                dir.display()
            ));
        }
    }
    let chromium = chromium();
    if !chromium.exists() {
        return Err(format!(
            "{} is missing: install Debian's Chromium with `sudo apt-get install -y chromium` (scripts/test does), or point TRYGG_CHROMIUM at a Chromium",
            chromium.display()
        ));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The bridge's config with its console on `console`, and the escalation
/// chain if this bridge knows `[escalation]` (it is `None` otherwise).
fn config(dir: &Path, console: std::net::SocketAddr) -> (trygg_bridge::Config, Option<u64>) {
    let base = format!(
        "data_dir = {:?}\n[broker]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [console]\nlisten = \"{console}\"\n[enrollment]\nlisten = \"127.0.0.1:0\"\n",
        dir.display().to_string()
    );
    let escalation = format!(
        "[escalation]\nchain = [\n  {{ group = \"home-care\", after_s = 0 }},\n  \
         {{ group = \"{ESCALATE_TO}\", after_s = {ESCALATE_AFTER_S} }},\n]\n"
    );
    match trygg_bridge::Config::from_toml_str(&format!("{base}{escalation}")) {
        Ok(c) => (c, Some(ESCALATE_AFTER_S)),
        Err(e) if e.to_string().contains("escalation") => {
            loud(&format!(
                "the bridge has no [escalation] config yet ({e}): escalation will be SKIPPED"
            ));
            let c = trygg_bridge::Config::from_toml_str(&base).unwrap_or_else(|e| {
                panic!("the bridge does not take a [console] config, so it has no console yet: {e}")
            });
            (c, None)
        }
        Err(e) => panic!("the test's bridge config is refused: {e}"),
    }
}

/// The users and the register, written to the store before the bridge
/// opens it (redb is one process's, and one opener's, at a time).
fn seed(data_dir: &Path, passwords: &serde_json::Map<String, serde_json::Value>) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = trygg_bridge::store::Store::open(&data_dir.join("bridge.redb")).unwrap();
    let users = [
        (
            "kari",
            "Kari Nordmann",
            Role::Operator,
            "sentrum",
            "home-care",
            Lang::Nb,
        ),
        (
            "ola",
            "Ola Berg",
            Role::Operator,
            "sentrum",
            ESCALATE_TO,
            Lang::En,
        ),
        (
            "per",
            "Per Lien",
            Role::Operator,
            "nord",
            "home-care",
            Lang::En,
        ),
        (
            "admin",
            "Anne Admin",
            Role::Administrator,
            "*",
            "",
            Lang::Nb,
        ),
    ];
    for (username, display, role, unit, group, lang) in users {
        store
            .create_user(
                NewUser {
                    username: username.into(),
                    display_name: display.into(),
                    role,
                    units: vec![unit.into()],
                    groups: if group.is_empty() {
                        vec![]
                    } else {
                        vec![group.into()]
                    },
                    lang,
                    password: passwords[username].as_str().unwrap().into(),
                },
                "test",
                now_ms(),
            )
            .unwrap();
    }
    store
        .put_resident(
            &Resident {
                id: RESIDENT_ID.into(),
                name: RESIDENT_NAME.into(),
                unit: "sentrum".into(),
                address: "Storgata 1, 0155 Oslo".into(),
                notes: "Key safe by the front door".into(),
            },
            "test",
            now_ms(),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_a_real_browser() {
    init_tracing();
    if let Err(missing) = browser_tools() {
        let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("TRYGG_BROWSER_TESTS").is_ok_and(|v| v == "required");
        if required {
            panic!("the browser tests cannot run: {missing}");
        }
        loud("==========================================================");
        loud(&format!(
            "SKIPPED: the browser tests did not run: {missing}"
        ));
        loud("(with CI=true this is a failure; scripts/test installs them)");
        loud("==========================================================");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    let stamp = now_ms();
    let passwords: serde_json::Map<String, serde_json::Value> = ["kari", "ola", "per", "admin"]
        .iter()
        .map(|u| (u.to_string(), format!("{u}-browser-{stamp}").into()))
        .collect();
    seed(&data, &passwords);
    let console = free_addr();
    let (config, escalation) = config(&data, console);
    let backend = start_backend_with(&data, move |c| *c = config).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);

    let started = std::time::Instant::now();
    let mut node = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(browser_dir())
        .env("TRYGG_CONSOLE_URL", format!("http://{console}"))
        .env(
            "TRYGG_USERS",
            serde_json::Value::Object(passwords).to_string(),
        )
        .env("TRYGG_RESIDENT_NAME", RESIDENT_NAME)
        .env(
            "TRYGG_ESCALATION",
            escalation
                .map(|s| serde_json::json!({ "group": ESCALATE_TO, "after_s": s }).to_string())
                .unwrap_or_default(),
        )
        .env("TRYGG_CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut to_node = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();

    let mut failures = Vec::new();
    let mut skips = Vec::new();
    let mut done = None;
    let talk = async {
        while let Some(line) = lines.next_line().await.expect("node's stdout") {
            if let Some(n) = line.strip_prefix("PRESS ") {
                let at = now_ms();
                to_node
                    .write_all(format!("PRESSED {n} {at}\n").as_bytes())
                    .await
                    .expect("node's stdin");
                to_node.flush().await.unwrap();
                let seq = button.press_button().await;
                assert!(seq.is_some(), "press {n}: the device raised no alarm");
                continue;
            }
            loud(&format!(
                "[{:5.1} s] {line}",
                started.elapsed().as_secs_f64()
            ));
            if let Some(rest) = line.strip_prefix("CHECK FAIL ") {
                failures.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("CHECK SKIPPED ") {
                skips.push(rest.to_string());
            } else if line.starts_with("DONE ") {
                done = Some(line.clone());
            }
        }
    };
    if tokio::time::timeout(BROWSER_TIMEOUT, talk).await.is_err() {
        failures.push(format!(
            "the browser run took over {} s",
            BROWSER_TIMEOUT.as_secs()
        ));
    }
    let status = tokio::time::timeout(Duration::from_secs(10), node.wait())
        .await
        .ok()
        .and_then(Result::ok);
    loud(&format!(
        "browser run: {:.1} s, {} skipped, {} failed",
        started.elapsed().as_secs_f64(),
        skips.len(),
        failures.len()
    ));

    gateway.stop.cancel();
    let _ = gateway.task.await;
    backend.stop.cancel();

    assert!(
        failures.is_empty(),
        "{} browser check(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert!(
        done.is_some(),
        "the browser script ended without its DONE line (exit {status:?})"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser script exited with {status:?}"
    );
}

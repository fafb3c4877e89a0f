//! The gateway's technician page in a real browser on a phone-sized
//! screen: a backend and a gateway run in this process, a technician is
//! made in the gateway's accounts file, and
//! `tests/browser/technician.test.mjs` drives Debian's chromium through
//! playwright-core: login, overview, pairing, removal with confirmation,
//! language switch, test alarm and logout, with axe-core (WCAG 2.1 AA) on
//! every page in both languages, no sideways scrolling at 360 px and touch
//! targets of at least 44 px. Each check is printed (`CHECK ok ...`).
//!
//! Needs node, `npm ci` in tests/browser and /usr/bin/chromium, as
//! `console_browser` does: without them this test fails when CI=true (or
//! TRYGG_BROWSER_TESTS=required) and otherwise skips, saying so loudly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use trygg_tests::*;

const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "technician_browser: {line}");
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
        .map_err(|e| format!("node is not installed ({e}): apt-get install nodejs npm"))?;
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
    if !chromium().exists() {
        return Err(format!(
            "{} is missing: apt-get install -y chromium, or point TRYGG_CHROMIUM at one",
            chromium().display()
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_technician_page_in_a_real_browser_on_a_phone() {
    init_tracing();
    if let Err(missing) = browser_tools() {
        let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("TRYGG_BROWSER_TESTS").is_ok_and(|v| v == "required");
        if required {
            panic!("the browser test cannot run: {missing}");
        }
        loud(&format!("SKIPPED: the browser test did not run: {missing}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    let password = "a browser technician's password";
    trygg_gateway::technician::accounts::AccountsFile::in_dir(&config.data_dir)
        .update(|a| a.add("tekniker", password, 1))
        .unwrap();
    let gateway = start_gateway(config).await;
    let page = gateway
        .ready
        .technician
        .clone()
        .expect("the page is served");

    let started = std::time::Instant::now();
    let mut node = tokio::process::Command::new("node")
        .arg("technician.test.mjs")
        .current_dir(browser_dir())
        .env("TRYGG_TECH_URL", format!("https://{}", page.addr))
        .env("TRYGG_TECH_USER", "tekniker")
        .env("TRYGG_TECH_PASSWORD", password)
        .env("TRYGG_CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut done = None;
    let talk = async {
        while let Some(line) = lines.next_line().await.expect("node's stdout") {
            loud(&format!(
                "[{:5.1} s] {line}",
                started.elapsed().as_secs_f64()
            ));
            if let Some(rest) = line.strip_prefix("CHECK FAIL ") {
                failures.push(rest.to_string());
            } else if line.starts_with("CHECK ok ") {
                passed += 1;
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
        "the script ended without its DONE line ({status:?})"
    );
    assert!(passed >= 10, "only {passed} checks passed");
    assert!(
        status.is_some_and(|s| s.success()),
        "the script exited with {status:?}"
    );
}

//! The demo as a person runs it: one command prints its ready line, a
//! simulated home sends events, `trygg-sim press` raises an alarm that the
//! backend's API shows, and Ctrl-C stops everything cleanly.

use std::path::Path;
use std::time::Duration;

use trygg_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_is_ready_takes_a_press_and_stops_cleanly_on_ctrl_c() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[demo]\ndata_dir = {:?}\ndevice_broker_port = 0\napi_port = 0\nconsole_port = 0\n[home]\ntelemetry_every_s = 0.5\nalarm_every_s = 0\nheartbeat_every_s = 5\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_trygg-sim-under-test"));
    let config_arg = config.to_str().unwrap();
    let demo =
        ChildService::start(exe, &["--config", config_arg, "demo"], "trygg demo ready:").await;
    assert!(
        demo.ready_line
            .starts_with("trygg demo ready: device-broker=mqtt://127.0.0.1:"),
        "{}",
        demo.ready_line
    );
    let broker = demo.field("control-broker");
    let api = Api::new(
        demo.field("api")
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    );

    // The home lives: telemetry reaches the backend without anyone's help.
    eventually(
        Duration::from_secs(20),
        "telemetry from the simulated home",
        || {
            let api = api.clone();
            async move { (!api.events("motion-1").await.is_empty()).then_some(()) }
        },
    )
    .await;

    // Another terminal presses the button.
    let press = tokio::process::Command::new(exe)
        .args(["press", "--device", "button-1", "--broker", &broker])
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&press.stdout);
    assert!(
        press.status.success(),
        "press failed: {said} {}",
        String::from_utf8_lossy(&press.stderr)
    );
    assert!(
        said.contains("button_press") && said.contains("committed it to disk"),
        "{said}"
    );

    let alarm = eventually(
        Duration::from_secs(10),
        "the press as an open alarm",
        || {
            let api = api.clone();
            async move {
                api.alarms("open")
                    .await
                    .into_iter()
                    .find(|a| a["device"] == "button-1")
            }
        },
    )
    .await;
    assert_eq!(alarm["kind"], "button_press");

    // The staff console: the operator printed at start logs in with the
    // password made for this run and sees the press, with the resident's
    // name from the register.
    let said = demo.stdout_so_far();
    let password = said
        .lines()
        .find(|l| l.contains("user demo,"))
        .and_then(|l| l.split("password ").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo prints the operator's login: {said}"))
        .to_string();
    let console = demo.field("console");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .post(format!("{console}/login"))
        .form(&[("username", "demo"), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "the printed password logs in");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let board = client
        .get(format!("{console}/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        board.contains(&format!("id=\"alarm-{}\"", alarm["id"])) && board.contains("Ingrid Demo"),
        "{board}"
    );

    // A press of a device the home does not have is refused with a reason.
    let wrong = tokio::process::Command::new(exe)
        .args(["press", "--device", "nobody-7", "--broker", &broker])
        .env("RUST_LOG", "error")
        .output()
        .await
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("no device `nobody-7`"));

    let status = demo.interrupt().await;
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");
}

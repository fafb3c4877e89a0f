//! The gateway's own I/O (button, LED, buzzer, mains-fail input) on a
//! machine without Raspberry Pi GPIO, as CI and every PC is: `auto` runs
//! without it and says so, `on` refuses to start with a clear message.
//! (The logic itself is tested with mock pins in `gateway/src/local_io.rs`;
//! the aarch64 build under qemu in `scripts/smoke-aarch64`.)

use std::time::Duration;

use trygg_gateway::config::GpioMode;
use trygg_tests::*;

fn has_pi_gpio() -> bool {
    ["/dev/gpiomem", "/dev/gpiomem0"]
        .iter()
        .any(|d| std::path::Path::new(d).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_gpio_auto_and_no_raspberry_pi_the_gateway_runs_with_its_local_io_off() {
    if has_pi_gpio() {
        return;
    }
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let mut config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    assert_eq!(config.local_io.gpio, GpioMode::Auto, "the default");
    config.local_io.gpio = GpioMode::Auto;
    let gateway = start_gateway(config).await;
    assert_eq!(gateway.local_api.metric("local_io_gpio", "").await, 0.0);
    assert_eq!(gateway.local_api.text("/healthz").await, "ok");
    // And it does its work: a device's alarm reaches the backend.
    let dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.publish(
        "trygg/v1/dev/button-1/evt",
        r#"{"v":1,"seq":1,"kind":"button_press"}"#,
    )
    .await;
    eventually(Duration::from_secs(15), "the alarm at the backend", || {
        let api = backend.api.clone();
        async move {
            api.alarms("open")
                .await
                .into_iter()
                .find(|a| a["device"] == "button-1")
        }
    })
    .await;
    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn with_gpio_on_and_no_raspberry_pi_the_gateway_refuses_to_start_and_says_why() {
    if has_pi_gpio() {
        return;
    }
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // No backend needed: the pins are checked before anything else.
    let mut config = gateway_config(
        dir.path(),
        &trygg_uplink::mqtt_url::MqttUrl::parse("mqtts://127.0.0.1:1").unwrap(),
        &dir.path().join("no-ca.pem"),
    );
    config.local_io.gpio = GpioMode::On;
    let err = trygg_gateway::run(config, None, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no Raspberry Pi GPIO here ("), "{err}");
    assert!(
        err.contains("local button, LED, buzzer and mains-fail input are off"),
        "{err}"
    );
    assert!(err.contains("local_io.gpio = \"on\""), "{err}");
    assert!(
        !dir.path().join("gateway.redb").exists(),
        "stopped before opening the journal"
    );
}

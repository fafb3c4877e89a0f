//! A simulated device runs the firmware: a press on its button *pin* goes
//! through the firmware's debounce (a bouncing contact is one press), its
//! queue on flash and its retry, and reaches the backend as exactly one
//! alarm, just as a press on a device in a home.

use std::time::Duration;

use trygg_protocol::{EventKind, ReceiptStatus};
use trygg_sim::device::spawn_device;
use trygg_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bouncing_button_press_reaches_the_backend_as_exactly_one_alarm() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let gateway = start_gateway(gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    ))
    .await;
    let button = spawn_device("button-1", &gateway.ready.device_broker, None);

    // A contact that bounces five times on the way in and out, 1 ms apart,
    // then is held for 200 ms.
    let pin = button.button_pin().clone();
    let contact = async move {
        for _ in 0..5 {
            pin.press();
            tokio::time::sleep(Duration::from_millis(1)).await;
            pin.release();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pin.press();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            pin.release();
            tokio::time::sleep(Duration::from_millis(1)).await;
            pin.press();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pin.release();
        // Let go long enough for the release to count (no hand is faster).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    contact.await;
    let seq = eventually(Duration::from_secs(5), "the firmware's alarm", || {
        let presses = button.presses();
        async move { presses.first().copied() }
    })
    .await;
    let (status, _) = button
        .wait_receipt(seq, Duration::from_secs(10))
        .await
        .expect("the gateway's receipt");
    assert_eq!(status, ReceiptStatus::Committed);

    let open = eventually(Duration::from_secs(10), "the alarm at the backend", || {
        let api = backend.api.clone();
        async move {
            let open = api.alarms("open").await;
            (!open.is_empty()).then_some(open)
        }
    })
    .await;
    // Nothing more arrives: the bouncing press was one event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(button.presses(), vec![seq]);
    assert_eq!(backend.api.alarms("open").await.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "button_press");
    assert_eq!(open[0]["device_seq"], seq);
    assert_eq!(backend.api.device_seqs("button-1").await, vec![seq]);

    // A second press the usual way, through the handle: one more event (a
    // repeat of the open alarm at the backend).
    let second = button.press_button().await.expect("a second alarm");
    assert!(second > seq);
    assert!(button.wait_all_receipted(Duration::from_secs(10)).await);
    let seqs = eventually(
        Duration::from_secs(10),
        "both events at the backend",
        || {
            let api = backend.api.clone();
            async move {
                let mut seqs = api.device_seqs("button-1").await;
                seqs.sort();
                (seqs.len() >= 2).then_some(seqs)
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seqs, vec![seq, second]);
    assert_eq!(backend.api.device_seqs("button-1").await.len(), 2);
    assert_eq!(button.presses(), vec![seq, second]);
    assert_eq!(
        button.log().sent.into_iter().collect::<Vec<_>>(),
        vec![
            (seq, EventKind::ButtonPress),
            (second, EventKind::ButtonPress)
        ]
    );

    gateway.stop.cancel();
    gateway.task.await.unwrap().unwrap();
}

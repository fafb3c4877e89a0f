//! The staff console over HTTP (docs/console.md): login and lock-out,
//! sessions, CSRF, unit and role boundaries in pages and in
//! /console/api, the acknowledge/close workflow with its audit entries,
//! escaping, and the live stream.
//!
//! Users, residents and alarms are put in the store before the bridge
//! starts (the bridge holds the store once running); live alarms arrive
//! as gateway batches over the bridge's MQTT/TLS uplink.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use trygg_bridge::access::{AuditEntry, AuditQuery, Lang, NewUser, Resident, Role};
use trygg_bridge::store::{Op, Store};
use trygg_protocol::EventKind;
use trygg_tests::*;
use trygg_uplink::contract::{Batch, Record};

const PASSWORD: &str = "correct horse battery";
const XSS_NAME: &str = "<script>alert('x')</script> Åse";

fn record(seq: u64, device: &str, kind: EventKind, resident: Option<&str>) -> Record {
    Record {
        lane: kind.lane(),
        seq,
        device: device.into(),
        device_seq: seq,
        kind,
        ts: None,
        committed_ms: 1,
        battery: None,
        value: None,
        resident: resident.map(String::from),
        room: Some("bedroom".into()),
        subject: None,
    }
}

/// Users, residents, gateway units and three alarms:
/// 1 button press of r-1 (unit sentrum), 2 fall of r-2 (unit nord),
/// 3 battery low on gw-1 (unit sentrum, technical).
fn seed(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = Store::open(&data_dir.join("bridge.redb")).unwrap();
    let user = |username: &str, name: &str, role: Role, unit: &str, lang: Lang| NewUser {
        username: username.into(),
        display_name: name.into(),
        role,
        units: vec![unit.into()],
        groups: vec!["home-care".into()],
        lang,
        password: PASSWORD.into(),
    };
    for u in [
        user("kari", "Kari Nordmann", Role::Operator, "sentrum", Lang::En),
        user("ola", "Ola Hansen", Role::Operator, "sentrum", Lang::Nb),
        user("nils", "Nils Nord", Role::Operator, "nord", Lang::En),
        user("tor", "Tor Tekniker", Role::Technician, "sentrum", Lang::En),
        user("lock", "Locked Out", Role::Operator, "sentrum", Lang::En),
    ] {
        store.create_user(u, "setup", 1).unwrap();
    }
    for (id, name, unit) in [("r-1", XSS_NAME, "sentrum"), ("r-2", "Per Nord", "nord")] {
        store
            .put_resident(
                &Resident {
                    id: id.into(),
                    name: name.into(),
                    unit: unit.into(),
                    address: "Storgata 1".into(),
                    notes: "Key safe 1234".into(),
                },
                "setup",
                1,
            )
            .unwrap();
    }
    store
        .set_gateway_unit("gw-1", "sentrum", "setup", 1)
        .unwrap();
    store
        .commit(
            vec![Op::Ingest(Batch {
                v: 1,
                gateway: "gw-1".into(),
                batch: 1,
                records: vec![
                    record(1, "button-1", EventKind::ButtonPress, Some("r-1")),
                    record(2, "fall-2", EventKind::Fall, Some("r-2")),
                    record(1, "button-3", EventKind::BatteryLow, None),
                ],
            })],
            1_000,
        )
        .unwrap();
    let alarms = store.alarms(None).unwrap();
    assert_eq!(alarms.len(), 3, "{alarms:?}");
}

struct Console {
    base: String,
    http: Client,
    backend: InProcessBackend,
    _dir: tempfile::TempDir,
}

async fn start() -> Console {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("backend");
    seed(&data);
    let backend = start_backend(&data).await;
    Console {
        base: format!("http://{}", backend.ready.console),
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        backend,
        _dir: dir,
    }
}

/// A logged-in user: the cookie and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Console {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login_raw(&self, user: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/login"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, user: &str) -> Session {
        let r = self.login_raw(user, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[LOCATION], "/");
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_string();
        assert!(cookie.starts_with("trygg_session="));
        let board = self.get_page(&cookie, "/").await;
        assert_eq!(board.0, StatusCode::OK);
        let csrf = board
            .1
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a csrf field on the board")
            .to_string();
        Session { cookie, csrf }
    }

    async fn get_page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post_form(
        &self,
        s: &Session,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let r = self
            .http
            .post(self.url(path))
            .header(COOKIE, &s.cookie)
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn api_get(&self, s: &Session, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .header(COOKIE, &s.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn api_post(&self, s: &Session, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header(COOKIE, &s.cookie)
            .header("X-CSRF-Token", &s.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn alarm(&self, id: u64) -> Value {
        self.backend.api.get(&format!("/api/v1/alarms/{id}")).await
    }

    /// Stops the bridge and opens its store, to read the audit log.
    async fn stop_and_open_store(&self) -> Store {
        self.backend.stop.cancel();
        let path = self._dir.path().join("backend").join("bridge.redb");
        eventually(
            Duration::from_secs(20),
            "the bridge to let go of its store",
            || {
                let path = path.clone();
                async move { Store::open(&path).ok() }
            },
        )
        .await
    }
}

fn audit(store: &Store, action: &str) -> Vec<AuditEntry> {
    store
        .audit(&AuditQuery {
            action: Some(action.into()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_right_wrong_and_locked_out() {
    let c = start().await;
    // The form, in English on request.
    let r = c.http.get(c.url("/login?lang=en")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    for needle in [
        r#"<html lang="en">"#,
        r#"id="login-form""#,
        r#"id="username""#,
        r#"id="password""#,
        r#"id="login-button""#,
    ] {
        assert!(html.contains(needle), "{needle} missing in {html}");
    }
    // Wrong: 401, the form again with one message, no cookie.
    let r = c.login_raw("kari", "wrong password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let wrong = r.text().await.unwrap();
    assert!(
        wrong.contains(r#"id="login-error""#) && wrong.contains(r#"role="alert""#),
        "{wrong}"
    );
    let r = c.login_raw("nobody", "x").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Right: 303 to / with the cookie (checked in login()).
    let s = c.login("kari").await;
    let (status, board) = c.get_page(&s.cookie, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        board.contains("Kari Nordmann"),
        "the user's name in the header"
    );
    // Five wrong in a row lock the user out: the right password is then
    // refused with the same message.
    for _ in 0..5 {
        assert_eq!(
            c.login_raw("lock", "guess guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = c.login_raw("lock", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let locked = r.text().await.unwrap();
    assert!(locked.contains(r#"id="login-error""#));
    // Logout needs the token, then ends the session.
    let (status, _) = c.post_form(&s, "/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = c
        .http
        .get(c.url("/"))
        .header(COOKIE, &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    let store = c.stop_and_open_store().await;
    let failed = audit(&store, "login_failed");
    assert!(failed.len() >= 7, "{failed:?}");
    assert!(failed
        .iter()
        .any(|a| a.actor == "lock" && a.outcome.contains("locked")));
    assert!(audit(&store, "login").iter().any(|a| a.actor == "kari"));
    assert!(audit(&store, "logout").iter().any(|a| a.actor == "kari"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_session_pages_redirect_and_the_api_says_401() {
    let c = start().await;
    for path in ["/", "/alarms/1"] {
        let r = c.http.get(c.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/login");
    }
    let r = c
        .http
        .get(c.url("/console/api/alarms"))
        .header(COOKIE, "trygg_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c
        .http
        .post(c.url("/console/api/alarms/1/acknowledge"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .http
        .post(c.url("/alarms/1/acknowledge"))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(c.alarm(1).await["state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_or_wrong_csrf_token_is_403_audited_and_changes_nothing() {
    let c = start().await;
    let s = c.login("kari").await;
    let (status, html) = c.post_form(&s, "/alarms/1/acknowledge", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    let (status, _) = c
        .post_form(
            &s,
            "/alarms/1/close",
            &[("csrf", "forged"), ("note", "x"), ("cause", "false")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let r = c
        .http
        .post(c.url("/console/api/alarms/1/acknowledge"))
        .header(COOKIE, &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (status, _) = c.post_form(&s, "/lang", &[("lang", "nb")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(c.alarm(1).await["state"], "open");
    let store = c.stop_and_open_store().await;
    let denied = audit(&store, "denied");
    assert_eq!(
        denied
            .iter()
            .filter(|a| a.actor == "kari" && a.outcome.contains("csrf"))
            .count(),
        4,
        "{denied:?}"
    );
    assert!(denied.iter().any(|a| a.target == "alarm/1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_sees_and_acts_on_their_own_units_alarms_only() {
    let c = start().await;
    let nils = c.login("nils").await; // unit nord: alarm 2 only
    let (status, v) = c.api_get(&nils, "/console/api/alarms").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<u64> = v["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2]);
    let (_, board) = c.get_page(&nils.cookie, "/").await;
    assert!(board.contains(r#"id="alarm-2""#) && !board.contains(r#"id="alarm-1""#));
    // Alarm 1 is sentrum's: 403 in the page, the API and its actions.
    let (status, _) = c.get_page(&nils.cookie, "/alarms/1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c.api_get(&nils, "/console/api/alarms/1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c
        .api_post(&nils, "/console/api/alarms/1/acknowledge", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c
        .post_form(&nils, "/alarms/1/acknowledge", &[("csrf", &nils.csrf)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c
        .api_post(
            &nils,
            "/console/api/alarms/1/close",
            json!({"note": "x", "cause": "false"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(c.alarm(1).await["state"], "open");
    // Kari (sentrum) sees 1 and 3, not 2.
    let kari = c.login("kari").await;
    let (_, v) = c.api_get(&kari, "/console/api/alarms?state=open").await;
    let mut ids: Vec<u64> = v["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 3]);
    let (_, v) = c
        .api_get(&kari, "/console/api/alarms?group=technical")
        .await;
    assert_eq!(v["alarms"][0]["id"], 3);
    assert_eq!(v["alarms"].as_array().unwrap().len(), 1);

    let store = c.stop_and_open_store().await;
    let denied: Vec<_> = audit(&store, "denied")
        .into_iter()
        .filter(|a| a.actor == "nils")
        .collect();
    assert!(
        denied.len() >= 5 && denied.iter().all(|a| a.target == "alarm/1"),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_technician_sees_technical_alarms_only() {
    let c = start().await;
    let tor = c.login("tor").await;
    let (_, v) = c.api_get(&tor, "/console/api/alarms").await;
    let ids: Vec<u64> = v["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3]);
    let (status, _) = c.get_page(&tor.cookie, "/alarms/1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, board) = c.get_page(&tor.cookie, "/").await;
    assert!(board.contains(r#"id="alarm-3""#) && !board.contains(r#"id="alarm-1""#));
    let (status, v) = c
        .api_post(&tor, "/console/api/alarms/3/acknowledge", json!({}))
        .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (StatusCode::OK, Some("acknowledged"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_second_operator_is_told_who_took_it_and_closing_needs_a_note() {
    let c = start().await;
    let kari = c.login("kari").await;
    let ola = c.login("ola").await;
    // Kari takes it from the board.
    let (status, _) = c
        .post_form(&kari, "/alarms/1/acknowledge", &[("csrf", &kari.csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let a = c.alarm(1).await;
    assert_eq!(
        (a["state"].as_str(), a["acknowledged_by"].as_str()),
        (Some("acknowledged"), Some("kari"))
    );
    // Ola is told, in his language (bokmål), who took it; nothing changes.
    let (status, html) = c
        .post_form(&ola, "/alarms/1/acknowledge", &[("csrf", &ola.csrf)])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        html.contains(r#"id="flash""#) && html.contains("Kari Nordmann"),
        "{html}"
    );
    assert!(html.contains("allerede tatt av"), "{html}");
    let (status, v) = c
        .api_post(&ola, "/console/api/alarms/1/acknowledge", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        v["error"].as_str().unwrap().contains("Kari Nordmann"),
        "{v}"
    );
    assert_eq!(c.alarm(1).await["acknowledged_by"], "kari");
    // Closing without a note: 422, the form again, the alarm unchanged.
    let (status, html) = c
        .post_form(
            &kari,
            "/alarms/1/close",
            &[("csrf", &kari.csrf), ("note", "  "), ("cause", "false")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(r#"id="close-error""#), "{html}");
    let (status, _) = c
        .api_post(
            &kari,
            "/console/api/alarms/1/close",
            json!({"cause": "false"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = c
        .post_form(
            &kari,
            "/alarms/1/close",
            &[("csrf", &kari.csrf), ("note", "ok"), ("cause", "maybe")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.alarm(1).await["state"], "acknowledged");
    // With a note and a cause: closed.
    let (status, _) = c
        .post_form(
            &kari,
            "/alarms/1/close",
            &[
                ("csrf", &kari.csrf),
                ("note", "pressed by mistake"),
                ("cause", "false"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let a = c.alarm(1).await;
    assert_eq!(a["state"], "closed");
    assert_eq!(a["closed_by"], "kari");
    assert_eq!(a["note"], "pressed by mistake");
    assert_eq!(a["cause"], "false");
    // Through the API as well (alarm 3).
    let (status, v) = c
        .api_post(
            &kari,
            "/console/api/alarms/3/close",
            json!({"note": "battery changed", "cause": "technical"}),
        )
        .await;
    assert_eq!(
        (status, v["state"].as_str()),
        (StatusCode::OK, Some("closed")),
        "{v}"
    );

    let store = c.stop_and_open_store().await;
    let acks = audit(&store, "acknowledge");
    assert!(
        acks.iter()
            .any(|a| a.actor == "kari" && a.target == "alarm/1" && a.outcome == "ok"),
        "{acks:?}"
    );
    assert_eq!(
        acks.iter()
            .filter(|a| a.actor == "ola" && a.outcome.starts_with("refused"))
            .count(),
        2,
        "{acks:?}"
    );
    let closes = audit(&store, "close");
    assert!(
        closes
            .iter()
            .any(|a| a.actor == "kari" && a.target == "alarm/1" && a.outcome.contains("false")),
        "{closes:?}"
    );
    assert!(
        closes
            .iter()
            .any(|a| a.actor == "kari" && a.target == "alarm/3"),
        "{closes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_residents_name_with_markup_comes_out_escaped_and_viewing_is_audited() {
    let c = start().await;
    let kari = c.login("kari").await;
    let (_, board) = c.get_page(&kari.cookie, "/").await;
    assert!(!board.contains("<script>alert"), "{board}");
    assert!(
        board.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Åse"),
        "{board}"
    );
    let (status, page) = c.get_page(&kari.cookie, "/alarms/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<script>alert") && page.contains("&lt;script&gt;"));
    assert!(page.contains("Key safe 1234") && page.contains(r#"id="close-form""#));
    let (_, v) = c.api_get(&kari, "/console/api/alarms/1").await;
    assert_eq!(
        v["resident_name"], XSS_NAME,
        "JSON carries the name as data"
    );
    let store = c.stop_and_open_store().await;
    let views = audit(&store, "view_resident");
    assert_eq!(
        views
            .iter()
            .filter(|a| a.actor == "kari" && a.target == "resident/r-1")
            .count(),
        2,
        "{views:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_malformed_input_get_a_message_and_change_nothing() {
    let c = start().await;
    let kari = c.login("kari").await;
    let big = "x".repeat(20 * 1024);
    let (status, html) = c
        .post_form(
            &kari,
            "/alarms/1/close",
            &[("csrf", &kari.csrf), ("note", &big), ("cause", "real")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(html.contains("16 KiB"), "{html}");
    let r = c
        .http
        .post(c.url("/alarms/1/acknowledge"))
        .header(COOKIE, &kari.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=%zz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .http
        .post(c.url("/console/api/alarms/1/close"))
        .header(COOKIE, &kari.cookie)
        .header("X-CSRF-Token", &kari.csrf)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (status, _) = c.get_page(&kari.cookie, "/alarms/notanumber").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(c.alarm(1).await["state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_language_is_kept_in_the_profile() {
    let c = start().await;
    let kari = c.login("kari").await;
    let (_, board) = c.get_page(&kari.cookie, "/").await;
    assert!(board.contains(r#"<html lang="en">"#) && board.contains("Care alarms"));
    let (status, _) = c
        .post_form(&kari, "/lang", &[("csrf", &kari.csrf), ("lang", "nb")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, board) = c.get_page(&kari.cookie, "/").await;
    assert!(
        board.contains(r#"<html lang="nb">"#) && board.contains("Omsorgsalarmer"),
        "{board}"
    );
    for id in ["board", "care-alarms", "technical-alarms", "announcer"] {
        assert!(board.contains(&format!(r#"id="{id}""#)), "#{id}");
    }
}

/// A new alarm reaches a user's board stream within a second, and only
/// the users who may see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_alarm_is_on_the_stream_within_a_second_for_its_unit_only() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let c = start().await;
    let kari = c.login("kari").await;
    let nils = c.login("nils").await;
    let open_stream = |s: &Session| {
        c.http
            .get(c.url("/stream"))
            .header(COOKIE, s.cookie.clone())
            .send()
    };
    let mut kari_stream = open_stream(&kari).await.unwrap();
    let mut nils_stream = open_stream(&nils).await.unwrap();
    assert_eq!(kari_stream.status(), StatusCode::OK);
    // The hello comment: subscribed.
    kari_stream.chunk().await.unwrap();
    nils_stream.chunk().await.unwrap();

    let tls =
        trygg_tests::enrolled_tls(&c.backend.ready, "gw-1", &c._dir.path().join("gw-1")).await;
    let mut opts = MqttOptions::new(
        "trygg-uplink-gw-1",
        c.backend.ready.broker.host.clone(),
        c.backend.ready.broker.port,
    );
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let batch = Batch {
        v: 1,
        gateway: "gw-1".into(),
        batch: 2,
        records: vec![record(3, "button-1", EventKind::Fall, Some("r-1"))],
    };
    let sent = Instant::now();
    client
        .publish(
            "trygg/v1/gw/gw-1/batch",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&batch).unwrap(),
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Some(chunk) = kari_stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: alarm")
                && text.contains(
                    "

",
                )
            {
                return text;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("the alarm on kari's stream");
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let data: Value = serde_json::from_str(
        event
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(data["kind"], "fall");
    assert_eq!(data["group"], "care");
    assert_eq!(data["change"], "new");
    assert!(data["html"].as_str().unwrap().contains(r#"class="alarm""#));
    assert!(!data["html"].as_str().unwrap().contains("<script>alert"));
    // Nils (unit nord) hears nothing of it.
    let nothing = tokio::time::timeout(Duration::from_millis(500), nils_stream.chunk()).await;
    assert!(nothing.is_err(), "nils got {nothing:?}");
}

/// With `tls_cert` and `tls_key` the console speaks HTTPS (a blocking
/// rustls client trusting the development CA asks for /login).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_is_served_over_tls_when_given_a_certificate() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pki = trygg_uplink::tls::DevPki::ensure(&dir.path().join("pki")).unwrap();
    let (cert, key) = (pki.server_cert.clone(), pki.server_key.clone());
    let backend = start_backend_with(&dir.path().join("backend"), move |c| {
        c.console.tls_cert = Some(cert);
        c.console.tls_key = Some(key);
    })
    .await;
    assert!(backend.ready.console_tls);
    assert!(backend
        .ready
        .to_string()
        .contains("console=https://127.0.0.1:"));
    let addr = backend.ready.console;
    let config = trygg_uplink::tls::client_config(&pki.ca_cert).unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(
            b"GET /login?lang=en HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        let _ = tls.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"id="login-form""#));
    backend.stop.cancel();
}

/// A board left open is logged out with its session: logout in another tab
/// ends the open stream within the recheck period, with `session_ended`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logging_out_ends_the_sessions_open_stream() {
    let c = start().await;
    let kari = c.login("kari").await;
    let mut stream = c
        .http
        .get(c.url("/stream"))
        .header(COOKIE, kari.cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    stream.chunk().await.unwrap();
    let (status, _) = c
        .post_form(&kari, "/logout", &[("csrf", kari.csrf.as_str())])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let wait = trygg_bridge::console::stream::SESSION_RECHECK * 2 + Duration::from_secs(5);
    let said = tokio::time::timeout(wait, async {
        let mut text = String::new();
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the stream closes once its session has ended");
    assert!(said.contains("event: session_ended"), "{said}");
}

/// The devices page and its JSON keep to the user's units: a device belongs
/// to its resident's unit, else to its gateway's; names come from the
/// register.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_devices_page_lists_only_the_users_units_devices() {
    let c = start().await;
    let kari = c.login("kari").await;
    let nils = c.login("nils").await;
    let devices = |v: &Value| -> Vec<String> {
        let mut d: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    };
    let (status, v) = c.api_get(&kari, "/console/api/devices").await;
    assert_eq!(status, StatusCode::OK);
    // button-1 (r-1, sentrum) and button-3 (no resident, gateway in sentrum).
    assert_eq!(devices(&v), ["button-1", "button-3"], "{v}");
    let (_, v) = c.api_get(&nils, "/console/api/devices").await;
    assert_eq!(devices(&v), ["fall-2"], "{v}");
    assert_eq!(v[0]["resident_name"], "Per Nord");
    let (status, html) = c.get_page(&kari.cookie, "/devices").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="device-button-1""#), "{html}");
    assert!(!html.contains("fall-2"), "another unit's device");
    assert!(!html.contains("<script>alert"), "names are escaped");
    let r = c
        .http
        .get(c.url("/console/api/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

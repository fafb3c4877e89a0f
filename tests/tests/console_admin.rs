//! The console's administration and benefits over HTTP (docs/console.md):
//! only administrators reach /admin/* and /console/api/audit (others get
//! 403 and a `denied` audit entry), a user created through the form can
//! log in, a form without the CSRF token changes nothing, the register
//! takes a resident, and /benefits and /console/api/benefits keep to the
//! user's units.

use std::path::Path;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use trygg_bridge::access::{AuditQuery, Lang, NewUser, Role};
use trygg_bridge::store::Store;
use trygg_tests::*;

const PASSWORD: &str = "correct horse battery";

fn seed(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = Store::open(&data_dir.join("bridge.redb")).unwrap();
    for (name, role, unit) in [
        ("admin", Role::Administrator, "*"),
        ("kari", Role::Operator, "sentrum"),
    ] {
        store
            .create_user(
                NewUser {
                    username: name.into(),
                    display_name: name.into(),
                    role,
                    units: vec![unit.into()],
                    groups: vec![],
                    lang: Lang::En,
                    password: PASSWORD.into(),
                },
                "setup",
                1,
            )
            .unwrap();
    }
}

struct Console {
    base: String,
    http: Client,
    backend: InProcessBackend,
    dir: tempfile::TempDir,
}

struct Session {
    cookie: String,
    csrf: String,
}

async fn start() -> Console {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let backend = start_backend(dir.path()).await;
    Console {
        base: backend.ready.console_url(),
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        backend,
        dir,
    }
}

impl Console {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login(&self, user: &str, password: &str) -> Session {
        let r = self
            .http
            .post(self.url("/login"))
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "login of {user}");
        let cookie = r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let (_, html) = self.get(&cookie, "/benefits").await;
        let csrf = html
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a csrf field in the page frame")
            .to_string();
        Session { cookie, csrf }
    }

    async fn get(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post<F: serde::Serialize + ?Sized>(
        &self,
        s: &Session,
        path: &str,
        form: &F,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header(COOKIE, &s.cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The audit log, read through the store after the bridge stopped.
    async fn stop_and_audit(self, action: &str) -> Vec<trygg_bridge::access::AuditEntry> {
        self.backend.stop.cancel();
        let path = self.dir.path().join("bridge.redb");
        let store = eventually(
            std::time::Duration::from_secs(10),
            "the bridge to let go of its store",
            || {
                let path = path.clone();
                async move { Store::open(&path).ok() }
            },
        )
        .await;
        store
            .audit(&AuditQuery {
                action: Some(action.into()),
                ..AuditQuery::default()
            })
            .unwrap()
    }
}

#[tokio::test]
async fn only_administrators_reach_administration_and_others_are_audited() {
    let c = start().await;
    let kari = c.login("kari", PASSWORD).await;
    for path in ["/admin/users", "/admin/residents", "/admin/audit"] {
        let (status, html) = c.get(&kari.cookie, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(!html.contains("users-table") && !html.contains("user-form"));
    }
    let (status, body) = c.get(&kari.cookie, "/console/api/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let r = c
        .post(
            &kari,
            "/admin/users",
            &[
                ("csrf", kari.csrf.as_str()),
                ("username", "mallory"),
                ("password", PASSWORD),
                ("role", "administrator"),
                ("units", "*"),
                ("lang", "en"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // No session at all: pages go to the login, the API says 401.
    let r = c.http.get(c.url("/admin/users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .http
        .get(c.url("/console/api/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let denied = c.stop_and_audit("denied").await;
    assert_eq!(denied.len(), 5, "{denied:?}");
    assert!(denied.iter().all(|e| e.actor == "kari"));
    assert!(denied.iter().any(|e| e.target == "admin/users"));
    assert!(denied.iter().any(|e| e.target == "console/api/audit"));
}

#[tokio::test]
async fn an_administrator_adds_a_user_and_a_resident_and_searches_the_log() {
    let c = start().await;
    let admin = c.login("admin", PASSWORD).await;
    let (status, html) = c.get(&admin.cookie, "/admin/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<html lang="en">"#));
    assert!(html.contains(r#"id="user-kari""#));

    let new_user = |csrf: &str| {
        [
            ("csrf", csrf),
            ("username", "nina"),
            ("display_name", "Nina Nurse"),
            ("password", PASSWORD),
            ("role", "nurse"),
            ("units", "nord, sentrum"),
            ("groups", "on-call-nurse"),
            ("lang", "nb"),
        ]
        .map(|(k, v)| (k, v.to_string()))
    };
    // Without the token: 403, and no user.
    let r = c.post(&admin, "/admin/users", &new_user("forged")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = admin.csrf.as_str();
    let r = c.post(&admin, "/admin/users", &new_user(csrf)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/admin/users?created=nina");
    // Again: refused with a message, 422.
    let r = c.post(&admin, "/admin/users", &new_user(csrf)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"id="admin-error" role="alert""#), "{html}");
    assert!(!html.contains(PASSWORD), "the password is never echoed");
    // A weak password: 422.
    let mut weak = new_user(csrf);
    weak[1].1 = "nora".into();
    weak[3].1 = "short".into();
    let r = c.post(&admin, "/admin/users", &weak).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The new user can log in, with her own language.
    let nina = c.login("nina", PASSWORD).await;
    let (_, html) = c.get(&nina.cookie, "/benefits").await;
    assert!(html.contains(r#"<html lang="nb">"#));

    let r = c
        .post(
            &admin,
            "/admin/residents",
            &[
                ("csrf", csrf),
                ("id", "r-17"),
                ("name", "Åse <Nordmann>"),
                ("unit", "nord"),
                ("address", "Storgata 1"),
                ("notes", "Key safe 1234"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = c
        .post(
            &admin,
            "/admin/residents",
            &[
                ("csrf", csrf),
                ("id", "bad id"),
                ("name", "x"),
                ("unit", "nord"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (status, html) = c.get(&admin.cookie, "/admin/residents").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Åse &lt;Nordmann&gt;"));

    let (status, html) = c
        .get(&admin.cookie, "/admin/audit?action=user_create&target=nina")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"id="audit-table""#));
    assert!(html.contains("user/nina"));
    let (status, body) = c
        .get(
            &admin.cookie,
            "/console/api/audit?actor=admin&action=resident_put",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    assert_eq!(v["entries"][0]["target"], "resident/r-17");
    let (status, _) = c.get(&admin.cookie, "/admin/audit?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let created = c.stop_and_audit("user_create").await;
    let outcomes: Vec<&str> = created
        .iter()
        .filter(|e| e.actor == "admin")
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes[0].starts_with("refused") && outcomes[1].starts_with("refused"));
    assert!(outcomes[2].starts_with("ok"));
}

#[tokio::test]
async fn benefits_keep_to_the_users_units_in_both_forms() {
    let c = start().await;
    let kari = c.login("kari", PASSWORD).await;
    let (status, html) = c
        .get(
            &kari.cookie,
            "/benefits?unit=sentrum&from=2025-01-01&to=2025-01-31",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for needle in [
        r#"id="benefits-form""#,
        r#"<label for="unit">"#,
        r#"id="response-table""#,
        r#"id="per-day-table""#,
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    let (status, body) = c
        .get(
            &kari.cookie,
            "/console/api/benefits?from=2025-01-01&to=2025-01-07",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["days"], 7);
    assert_eq!(v["per_day"].as_object().unwrap().len(), 7);
    assert!(v["time_to_acknowledge"]["count"].is_number());
    // Not her unit: 403, in the page and in the API.
    let (status, _) = c.get(&kari.cookie, "/benefits?unit=nord").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c.get(&kari.cookie, "/console/api/benefits?unit=nord").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A period that cannot be used: 422 with a message.
    let (status, html) = c
        .get(&kari.cookie, "/benefits?from=2025-02-01&to=2025-01-01")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(r#"id="benefits-error""#));
    let denied = c.stop_and_audit("denied").await;
    assert_eq!(denied.len(), 2);
}

/// Someone leaves: the administrator disables them, their open session
/// ends at once and they cannot log in; enabled again, they can. Nobody
/// disables themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_user_is_out_at_once_and_an_administrator_cannot_disable_themselves() {
    let c = start().await;
    let admin = c.login("admin", PASSWORD).await;
    let kari = c.login("kari", PASSWORD).await;
    let (status, _) = c.get(&kari.cookie, "/").await;
    assert_eq!(status, StatusCode::OK);
    let csrf = [("csrf", admin.csrf.clone())];
    // Kari may not disable anyone.
    let r = c
        .post(
            &kari,
            "/admin/users/admin/disable",
            &[("csrf", kari.csrf.clone())],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c.post(&admin, "/admin/users/kari/disable", &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, _) = c.get(&kari.cookie, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "kari's session ended");
    let r = c
        .http
        .post(c.url("/login"))
        .form(&[("username", "kari"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, html) = c.get(&admin.cookie, "/admin/users").await;
    assert!(html.contains("/admin/users/kari/enable"), "{html}");
    let r = c.post(&admin, "/admin/users/kari/enable", &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    c.login("kari", PASSWORD).await;
    let r = c.post(&admin, "/admin/users/admin/disable", &csrf).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = c.post(&admin, "/admin/users/nobody/disable", &csrf).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let entries = c.stop_and_audit("user_disable").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.actor == "admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_settings_are_set_from_the_console_and_the_gateway_answers() {
    let c = start().await;
    let config = gateway_config(
        &c.dir.path().join("gateway"),
        &c.backend.ready.broker,
        &c.backend.ready.ca_file,
    );
    let gw = config.gateway_id.clone();
    let gateway = start_gateway(config).await;
    // The backend knows a gateway and its devices from their events.
    let mut dev = RawDevice::connect(&gateway.ready.device_broker).await;
    dev.publish("trygg/v1/dev/button-1/hb", r#"{"v":1,"battery":90}"#)
        .await;
    dev.publish(
        "trygg/v1/dev/button-1/evt",
        r#"{"v":1,"seq":1,"kind":"battery_low"}"#,
    )
    .await;
    let _ = dev.receipt_on("trygg/v1/dev/button-1/ack").await;
    eventually(
        std::time::Duration::from_secs(15),
        "the backend to know button-1",
        || {
            let api = c.backend.api.clone();
            async move { (!api.events("button-1").await.is_empty()).then_some(()) }
        },
    )
    .await;

    let kari = c.login("kari", PASSWORD).await;
    assert_eq!(
        c.get(&kari.cookie, "/gateways").await.0,
        StatusCode::FORBIDDEN
    );
    let r = c
        .post(
            &kari,
            &format!("/gateways/{gw}/settings"),
            &[("csrf", kari.csrf.as_str())],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an operator may not set settings"
    );

    let admin = c.login("admin", PASSWORD).await;
    let (status, html) = c.get(&admin.cookie, "/gateways").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!(r#"id="gateway-{gw}""#)), "{html}");
    assert!(
        html.contains(r#"name="dev.button-1.pre_alarm_s""#),
        "{html}"
    );
    let path = format!("/gateways/{gw}/settings");
    let r = c
        .post(&admin, &path, &[("period_safety_button", "600")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r = c
        .post(
            &admin,
            &path,
            &[
                ("csrf", admin.csrf.as_str()),
                ("dev.button-1.pre_alarm_s", "99"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(r#"id="gateways-error""#) && body.contains("pre_alarm_s"),
        "{body}"
    );
    assert!(body.contains(r#"value="99""#), "what was typed comes back");

    let r = c
        .post(
            &admin,
            &path,
            &[
                ("csrf", admin.csrf.as_str()),
                ("period_safety_button", "600"),
                ("dev.button-1.pre_alarm_s", "7"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(to.contains(&format!("saved={gw}&version=1")), "{to}");
    eventually(
        std::time::Duration::from_secs(15),
        "the gateway's answer on the page",
        || {
            let (c, cookie) = (&c, admin.cookie.clone());
            async move {
                let (_, html) = c.get(&cookie, "/gateways").await;
                html.contains("state-applied").then_some(())
            }
        },
    )
    .await;
    let device = gateway.local_api.get("/api/v1/devices/button-1").await;
    assert_eq!(device["pre_alarm_s"], 7, "{device}");
    let json: Value =
        serde_json::from_str(&c.get(&admin.cookie, "/console/api/gateways").await.1).unwrap();
    assert_eq!(json[0]["settings"]["state"], "applied", "{json}");

    gateway.stop.cancel();
    let _ = gateway.task.await;
    let audit = c.stop_and_audit("gateway_settings").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, "admin");
    assert!(audit[0].outcome.contains("\"pre_alarm_s\":7"), "{audit:?}");
}

/// /admin/enrollment: an administrator makes an enrollment code (shown once,
/// and it really enrolls), sees the certificate, revokes it with a reason;
/// an operator is refused; a form without the CSRF token changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrollment_page_makes_codes_that_enroll_and_revokes() {
    let c = start().await;
    let admin = c.login("admin", PASSWORD).await;
    let kari = c.login("kari", PASSWORD).await;

    let (status, _) = c.get(&kari.cookie, "/admin/enrollment").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "operators do not manage gateways"
    );

    let r = c
        .post(
            &admin,
            "/admin/enrollment",
            &[
                ("csrf", admin.csrf.as_str()),
                ("gateway", "gw-77"),
                ("site", "Frogner 12"),
                ("valid_h", "2"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    let code = html
        .split(r#"<code id="enroll-code">"#)
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the code on the answer")
        .to_string();
    assert!(html.contains("trygg-gateway enroll --code"), "{html}");
    let (_, again) = c.get(&admin.cookie, "/admin/enrollment").await;
    assert!(!again.contains(&code), "the code is shown once");

    // It is a real code: a gateway enrolls with it.
    let files = trygg_uplink::enroll::IdentityFiles::in_dir(&c.dir.path().join("gw-77"));
    trygg_uplink::enroll::enroll(
        &c.backend.ready.enroll_url(),
        &c.backend.ready.ca_file,
        "gw-77",
        &code,
        &files,
    )
    .await
    .unwrap();
    let (_, page) = c.get(&admin.cookie, "/admin/enrollment").await;
    assert!(
        page.contains("gw-77") && page.contains("Frogner 12"),
        "{page}"
    );

    // Bad input is refused with the reason.
    let r = c
        .post(
            &admin,
            "/admin/enrollment",
            &[
                ("csrf", admin.csrf.as_str()),
                ("gateway", "trygg-bridge"),
                ("site", "x"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("gateway id"));

    // Without the CSRF token nothing is revoked.
    let r = c
        .http
        .post(c.url("/admin/enrollment/gw-77/revoke"))
        .header(COOKIE, &admin.cookie)
        .form(&[("reason", "stolen")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let certs = c.backend.api.get("/api/v1/gateways").await["certificates"].clone();
    assert!(certs[0]["revoked"].is_null());

    let r = c
        .post(
            &admin,
            "/admin/enrollment/gw-77/revoke",
            &[("csrf", admin.csrf.as_str()), ("reason", "kit stolen")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/admin/enrollment?revoked=gw-77");
    let certs = c.backend.api.get("/api/v1/gateways").await["certificates"].clone();
    assert_eq!(certs[0]["revoked"]["reason"], "kit stolen");
    assert_eq!(certs[0]["revoked"]["by"], "admin");
}

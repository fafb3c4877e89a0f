//! The technician's page on a running gateway, over real HTTPS with the
//! gateway's own self-signed certificate: an account made with
//! `trygg-gateway technician add` logs in; a wrong password is refused and
//! five lock the account out; pages and the API refuse requests without a
//! session or without the CSRF token; pairing, swapping and removing a
//! device through the page change the gateway's register (checked on the
//! loopback API); a test alarm is confirmed by the backend; logout, and a
//! password changed on the command line, end the session.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use trygg_tests::*;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_trygg-gateway-under-test"))
}

/// Runs `trygg-gateway -c CONFIG ARGS`, `stdin` given; (exit ok, stdout, stderr).
fn cli(config: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(exe())
        .arg("-c")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTPS client that trusts exactly `cert` (the gateway's own).
fn client_trusting(cert: &Path) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).expect("the page's certificate is PEM"))
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    _backend: InProcessBackend,
    gateway: InProcessGateway,
    config_file: PathBuf,
    data_dir: PathBuf,
    page: Page,
}

/// A backend, a gateway with its technician page on loopback, and the
/// technician `kari` made on the command line before the gateway starts.
async fn setup() -> Setup {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let backend = start_backend(&dir.path().join("backend")).await;
    let config = gateway_config(
        &dir.path().join("gateway"),
        &backend.ready.broker,
        &backend.ready.ca_file,
    );
    assert!(config.technician.is_some(), "the page is on by default");
    let data_dir = config.data_dir.clone();
    let config_file = write_config(dir.path(), "gateway.toml", &config);
    let (ok, out, err) = cli(
        &config_file,
        &["technician", "add", "kari", "--password-stdin"],
        "kari's long password\n",
    );
    assert!(ok, "technician add: {out} {err}");
    let gateway = start_gateway(config).await;
    let t = gateway
        .ready
        .technician
        .clone()
        .expect("the page is served");
    let page = Page {
        base: format!("https://{}", t.addr),
        http: client_trusting(&t.cert),
        session: None,
        csrf: String::new(),
    };
    Setup {
        _dir: dir,
        _backend: backend,
        gateway,
        config_file,
        data_dir,
        page,
    }
}

/// A technician's browser: the session cookie and the page's CSRF token.
struct Page {
    base: String,
    http: Client,
    session: Option<String>,
    csrf: String,
}

/// The value of `name=` in a response's Set-Cookie headers, with the
/// whole header.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let value = v.strip_prefix(&format!("{name}="))?.split(';').next()?;
        Some((value.to_string(), v.to_string()))
    })
}

/// `value="..."` of the first `name="NAME"` input in `html`.
fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!(r#"name="{name}" value=""#))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Page {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn cookie(&self) -> String {
        self.session
            .as_ref()
            .map(|s| format!("trygg_tech={s}; trygg_lang=en"))
            .unwrap_or_else(|| "trygg_lang=en".into())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header(COOKIE, self.cookie())
            .send()
            .await
            .expect("the page answers over HTTPS")
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.http
            .post(self.url(path))
            .header(COOKIE, self.cookie())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("the page answers over HTTPS")
    }

    /// A form POST with this session's CSRF token added.
    async fn submit(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut f = vec![("csrf", self.csrf.as_str())];
        f.extend_from_slice(form);
        self.post_form(path, &f).await
    }

    /// The login form, then a POST with `password`: the response.
    async fn try_login(&self, user: &str, password: &str) -> reqwest::Response {
        let form = self.get("/login").await;
        assert_eq!(form.status(), StatusCode::OK);
        let (login_cookie, header) = set_cookie(&form, "trygg_login").expect("a login cookie");
        assert!(
            header.contains("HttpOnly") && header.contains("Secure"),
            "{header}"
        );
        let html = form.text().await.unwrap();
        let token = field(&html, "login_csrf").expect("the form's token");
        assert_eq!(token, login_cookie);
        self.http
            .post(self.url("/login"))
            .header(COOKIE, format!("trygg_login={login_cookie}; trygg_lang=en"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "login_csrf={token}&username={}&password={}",
                enc(user),
                enc(password)
            ))
            .send()
            .await
            .unwrap()
    }

    async fn login(&mut self, user: &str, password: &str) {
        let resp = self.try_login(user, password).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "login of {user}");
        let (token, header) = set_cookie(&resp, "trygg_tech").expect("a session cookie");
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(header.contains(part), "{part} in {header}");
        }
        self.session = Some(token);
        let home = self.get("/").await;
        assert_eq!(home.status(), StatusCode::OK);
        let html = home.text().await.unwrap();
        self.csrf = field(&html, "csrf").expect("the page's CSRF token");
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn register_has(api: &Api, id: &str) -> Option<Value> {
    let v = api.get(&format!("/api/v1/devices/{id}")).await;
    (v["id"] == id).then_some(v)
}

fn audit_log(data_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(data_dir.join("technician-audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_technician_from_the_cli_logs_in_over_https_and_pairs_swaps_and_removes() {
    let mut s = setup().await;
    let t = s.gateway.ready.technician.clone().unwrap();
    let api = &s.gateway.local_api;

    // The certificate: the fingerprint the gateway printed is the one
    // openssl reads from its file, and the one the CLI prints.
    let openssl = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&t.cert)
        .output()
        .expect("openssl runs");
    let openssl = String::from_utf8_lossy(&openssl.stdout);
    assert!(
        openssl.trim().ends_with(&format!("={}", t.fingerprint)),
        "{openssl} vs {}",
        t.fingerprint
    );
    let (ok, out, err) = cli(&s.config_file, &["technician", "fingerprint"], "");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("SHA256:{}", t.fingerprint));
    // Only HTTPS: plain HTTP gets no page, and a client that does not
    // trust the gateway's certificate gets no connection.
    let plain = Client::new()
        .get(format!("http://{}/login", t.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    let other = tempfile::tempdir().unwrap();
    let other_cert = trygg_uplink::tls::DevPki::ensure(other.path())
        .unwrap()
        .ca_cert;
    let untrusting = client_trusting(&other_cert)
        .get(s.page.url("/login"))
        .send()
        .await;
    assert!(untrusting.is_err(), "a foreign certificate is not accepted");

    // Without a session: pages send to the login, the API answers 401,
    // and nothing changes.
    let resp = s.page.get("/").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/login");
    let resp = s.page.get("/api/v1/devices").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s
        .page
        .post_form("/devices", &[("id", "button-7"), ("type", "safety_button")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(register_has(api, "button-7").await.is_none());

    // A wrong password is refused with a message; the right one logs in.
    let resp = s.page.try_login("kari", "not kari's password").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "trygg_tech").is_none());
    assert!(resp.text().await.unwrap().contains(r#"id="login-error""#));
    s.page.login("kari", "kari's long password").await;

    // The overview: status, devices with their health, the test alarm.
    let html = s.page.get("/").await.text().await.unwrap();
    for needle in [
        r#"<html lang="en">"#,
        r#"id="uplink""#,
        r#"id="backlog""#,
        r#"id="disk""#,
        r#"data-device="button-1""#,
        r#"class="battery""#,
        r#"class="last-message""#,
        r#"id="pending-none""#,
        r#"class="has-key""#,
        r#"id="test-alarm-button""#,
        r#"<strong id="technician">kari</strong>"#,
    ] {
        assert!(html.contains(needle), "{needle} on the overview");
    }

    // A pairing without the CSRF token is refused and changes nothing.
    let resp = s
        .page
        .post_form(
            "/devices",
            &[
                ("id", "button-7"),
                ("type", "safety_button"),
                ("csrf", "forged"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(register_has(api, "button-7").await.is_none());

    // Pair through the page: the gateway's register has it, with its place
    // and a key the gateway made, shown on the page this once.
    let resp = s
        .page
        .submit(
            "/devices",
            &[
                ("id", "button-7"),
                ("type", "safety_button"),
                ("room", "kitchen"),
                ("resident", "r-0042"),
                ("supervision_s", "600"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let key = html
        .split(r#"<code id="device-key">"#)
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the generated key on the page")
        .to_string();
    assert!(key.len() >= 16, "{key}");
    assert!(html.contains(r#"href="/devices/button-7?done=paired""#));
    let d = register_has(api, "button-7").await.expect("paired");
    assert_eq!(d["has_key"], true);
    assert!(
        !s.page
            .get("/devices/button-7")
            .await
            .text()
            .await
            .unwrap()
            .contains(&key),
        "shown once only"
    );
    // The paired button connects with that key.
    let dev = RawDevice::connect(&s.gateway.ready.device_broker).await;
    let mut dev = dev;
    dev.set_key("button-7", &key);
    dev.connect_as("button-7")
        .await
        .expect("button-7 connects with the key the page showed");
    assert_eq!(d["room"], "kitchen");
    assert_eq!(d["resident"], "r-0042");
    assert_eq!(d["supervision_s"], 600);
    let html = s
        .page
        .get("/devices/button-7?done=paired")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"id="swap-form""#) && html.contains("kitchen"));
    // Pairing it again says why not.
    let resp = s
        .page
        .submit("/devices", &[("id", "button-7"), ("type", "safety_button")])
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains(r#"id="form-error""#));

    // Swap: every setting moves to the replacement (its key from its label).
    let resp = s
        .page
        .submit(
            "/devices/button-7/swap",
            &[
                ("new_id", "button-8"),
                ("key", "button-8-label-key-0123456789"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(register_has(api, "button-7").await.is_none());
    let d = register_has(api, "button-8").await.expect("swapped in");
    assert_eq!(d["room"], "kitchen");
    assert_eq!(d["resident"], "r-0042");
    assert_eq!(d["supervision_s"], 600);

    // Remove: only after the confirmation page's form.
    let resp = s.page.submit("/devices/button-8/remove", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        register_has(api, "button-8").await.is_some(),
        "not without confirming"
    );
    let html = s
        .page
        .get("/devices/button-8/remove")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"id="remove-confirm""#));
    let resp = s
        .page
        .submit("/devices/button-8/remove", &[("confirm", "yes")])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(register_has(api, "button-8").await.is_none());

    // A test alarm about button-1, confirmed by the backend, with its time.
    let resp = s
        .page
        .submit("/test-alarm", &[("device", "button-1")])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"data-confirmed="true""#), "{html}");
    assert!(
        html.contains("Confirmed by the municipality after"),
        "{html}"
    );

    // The API behind the same login: reads with the session, writes only
    // with the CSRF header.
    let resp = s.page.get("/api/v1/devices").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == "button-1"));
    let add = json!({"id": "fall-9", "type": "fall_sensor", "room": "bathroom"});
    let resp = s
        .page
        .http
        .post(s.page.url("/api/v1/devices"))
        .header(COOKIE, s.page.cookie())
        .json(&add)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(register_has(api, "fall-9").await.is_none());
    let resp = s
        .page
        .http
        .post(s.page.url("/api/v1/devices"))
        .header(COOKIE, s.page.cookie())
        .header("x-csrf-token", &s.page.csrf)
        .json(&add)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(register_has(api, "fall-9").await.is_some());

    // Decommission wipes the gateway: never over the network, even with
    // a session and the CSRF header.
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/decommission"),
        (reqwest::Method::POST, "/api/v1/decommission"),
    ] {
        let resp = s
            .page
            .http
            .request(method, s.page.url(path))
            .header(COOKIE, s.page.cookie())
            .header("x-csrf-token", &s.page.csrf)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // Logout ends the session.
    let resp = s.page.submit("/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.page.get("/").await.status(), StatusCode::SEE_OTHER);

    // A password changed on the command line ends the sessions opened
    // with the old one, and the new one works.
    s.page.login("kari", "kari's long password").await;
    let (ok, _, err) = cli(
        &s.config_file,
        &["technician", "passwd", "kari", "--password-stdin"],
        "kari's new password\n",
    );
    assert!(ok, "{err}");
    let resp = s.page.get("/").await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the old session ended"
    );
    let resp = s.page.try_login("kari", "kari's long password").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    s.page.login("kari", "kari's new password").await;

    // Everything is in the audit log and the metrics.
    let log = audit_log(&s.data_dir);
    for action in [
        "account_added",
        "password_changed",
        "login",
        "login_failed",
        "logout",
        "pair",
        "swap",
        "remove",
        "test_alarm",
        "refused",
        "api",
    ] {
        assert!(
            log.iter().any(|l| l["action"] == action),
            "{action} in {log:?}"
        );
    }
    assert!(log.iter().all(|l| !l.to_string().contains("long password")));
    assert!(
        api.metric("technician_logins_total", "outcome=\"ok\"")
            .await
            >= 3.0
    );
    assert!(
        api.metric("technician_logins_total", "outcome=\"wrong\"")
            .await
            >= 2.0
    );
    assert!(
        api.metric("technician_refused_total", "reason=\"csrf\"")
            .await
            >= 2.0
    );
    assert_eq!(
        api.metric("technician_refused_total", "reason=\"invalid\"")
            .await,
        1.0,
        "pairing button-7 twice"
    );
    // No password anywhere in the data dir.
    for entry in std::fs::read_dir(&s.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("long password"), "{}", path.display());
        }
    }
    s.gateway.stop.cancel();
    let _ = s.gateway.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_wrong_passwords_lock_a_technician_out_and_foreign_login_forms_are_refused() {
    let mut s = setup().await;
    let api = &s.gateway.local_api;

    // A login form posted from elsewhere (no matching login cookie) is
    // refused even with the right password.
    let resp = s
        .page
        .http
        .post(s.page.url("/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("login_csrf=abc&username=kari&password=kari%27s+long+password")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&resp, "trygg_tech").is_none());

    // An unknown technician is refused like a wrong password.
    let resp = s.page.try_login("ola", "whatever password").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    for _ in 0..5 {
        let resp = s.page.try_login("kari", "guess guess guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked: the right password is refused too, with the same message.
    let resp = s.page.try_login("kari", "kari's long password").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "trygg_tech").is_none());
    assert_eq!(
        api.metric("technician_logins_total", "outcome=\"locked\"")
            .await,
        1.0
    );
    let log = audit_log(&s.data_dir);
    assert!(
        log.iter().any(|l| l["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("locked out for 15 min")),
        "{log:?}"
    );

    // Another technician is not locked out by kari's lock-out.
    let (ok, _, err) = cli(
        &s.config_file,
        &["technician", "add", "per", "--password-stdin"],
        "per's long password\n",
    );
    assert!(ok, "{err}");
    s.page.login("per", "per's long password").await;
    // And a removed account's session ends at its next request.
    let (ok, out, err) = cli(&s.config_file, &["technician", "list"], "");
    assert!(
        ok && out.contains("kari") && out.contains("per"),
        "{out} {err}"
    );
    let (ok, _, err) = cli(&s.config_file, &["technician", "remove", "per"], "");
    assert!(ok, "{err}");
    assert_eq!(s.page.get("/").await.status(), StatusCode::SEE_OTHER);
    // Bad input on the command line says what to do.
    let (ok, _, err) = cli(
        &s.config_file,
        &["technician", "add", "Kari Nordmann", "--password-stdin"],
        "long enough password\n",
    );
    assert!(!ok && err.contains("username must be"), "{err}");
    let (ok, _, err) = cli(
        &s.config_file,
        &["technician", "add", "ola", "--password-stdin"],
        "short\n",
    );
    assert!(!ok && err.contains("at least 10"), "{err}");
    let (ok, _, err) = cli(&s.config_file, &["technician", "add", "ola"], "");
    assert!(!ok && err.contains("--password-stdin"), "{err}");
    s.gateway.stop.cancel();
    let _ = s.gateway.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_asking_to_join_are_accepted_and_rejected_on_the_page() {
    let mut s = setup().await;
    let api = &s.gateway.local_api;
    s.page.login("kari", "kari's long password").await;
    let html = s.page.get("/").await.text().await.unwrap();
    assert!(html.contains(r#"id="pending-none""#), "nobody asks yet");

    // Two unknown devices connect (first contact): each becomes a join
    // request, and the overview asks about it.
    let strangers = RawDevice::connect(&s.gateway.ready.device_broker).await;
    for id in ["stranger-1", "stranger-2"] {
        strangers
            .connect_as(id)
            .await
            .expect("first contact lets it connect");
    }
    let page = &s.page;
    eventually(
        Duration::from_secs(10),
        "both asking on the page",
        || async {
            let html = page.get("/").await.text().await.unwrap();
            (html.contains(r#"data-device="stranger-1""#)
                && html.contains(r#"data-device="stranger-2""#))
            .then_some(())
        },
    )
    .await;
    let html = s.page.get("/").await.text().await.unwrap();
    assert!(html.contains("An unknown device is asking to join: accept?"));

    // Accept asks for its place; without the CSRF token nothing happens.
    let form = s.page.get("/pending/stranger-1/accept").await;
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains(r#"id="accept-form""#));
    let resp = s
        .page
        .post_form(
            "/pending/stranger-1/accept",
            &[("type", "door_sensor"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(register_has(api, "stranger-1").await.is_none());
    let resp = s
        .page
        .submit(
            "/pending/stranger-1/accept",
            &[
                ("type", "door_sensor"),
                ("room", "hallway"),
                ("resident", "r-0042"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/devices/stranger-1?done=paired");
    let d = register_has(api, "stranger-1").await.expect("accepted");
    assert_eq!(d["type"], "door_sensor");
    assert_eq!(d["room"], "hallway");
    assert_eq!(d["has_key"], true, "paired with the key it presented");

    // Reject: the request is gone, and the device is not paired.
    let resp = s.page.submit("/pending/stranger-2/reject", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(register_has(api, "stranger-2").await.is_none());
    let pending = api.get("/api/v1/devices/pending").await;
    assert!(
        !pending
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["device"] == "stranger-1" || p["device"] == "stranger-2"),
        "{pending}"
    );
    // A pairing window for devices that ask while first contact is off.
    let html = s.page.get("/").await.text().await.unwrap();
    assert!(html.contains(r#"id="window-button""#));
    let resp = s
        .page
        .post_form("/pending/window", &[("csrf", "forged")])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = s.page.submit("/pending/window", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("New devices may ask to join for the next 10 minutes"));
    // Accepting what no longer asks says so.
    let resp = s.page.get("/pending/stranger-2/accept").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let log = audit_log(&s.data_dir);
    for action in ["accept", "reject", "pairing_window"] {
        assert!(
            log.iter()
                .any(|l| l["action"] == action && l["outcome"] == "ok"),
            "{action}"
        );
    }
    s.gateway.stop.cancel();
    let _ = s.gateway.task.await;
}

//! The page frame every console page shares, and the one way values get
//! into HTML: [`esc`].
//!
//! Accessibility (WCAG 2.1 AA) is built into the frame: `<html lang>`, a
//! skip link to the page's `<main>`, landmarks (header, nav, main), every
//! control labelled, a visible focus ring, and colours chosen for at least
//! 4.5:1 contrast (text #1a1a1a on white, red #b00020, links and buttons
//! #0b57d0 on white or white on it, header white on #1f2a44).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::i18n::t;
use crate::access::{Lang, Principal};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML answer with `status`.
pub fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The CSS of every page (inline: no asset pipeline, one request).
pub const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:1.05rem;line-height:1.5;color:#1a1a1a;background:#fff}
a{color:#0b57d0}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible,summary:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px;box-shadow:0 0 0 5px #fff}
.skip-link{position:absolute;left:-9999px;top:0;background:#fff;color:#0b57d0;padding:.5rem 1rem;z-index:10}
.skip-link:focus{left:.5rem;top:.5rem}
header.site{background:#1f2a44;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center}
header.site a{color:#fff}
header.site .brand{font-weight:700;font-size:1.2rem;color:#fff;text-decoration:none}
header.site nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:1rem;margin:0;padding:0}
header.site .who{margin-left:auto;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center}
header.site form{display:inline;margin:0}
header.site button{background:#fff;color:#1f2a44;border:2px solid #fff;border-radius:4px;padding:.25rem .75rem;font:inherit;cursor:pointer}
header.site button:focus-visible{outline:3px solid #fff;outline-offset:2px;box-shadow:none}
header.site a:focus-visible{outline:3px solid #fff;box-shadow:none}
main{padding:1rem;max-width:80rem;margin:0 auto}
main:focus{outline:none}
h1{font-size:1.6rem;margin:.5rem 0 1rem}
h2{font-size:1.3rem;margin:1.5rem 0 .5rem}
h3{font-size:1.1rem;margin:0}
button,.button{background:#0b57d0;color:#fff;border:2px solid #0b57d0;border-radius:4px;padding:.5rem 1rem;font:inherit;cursor:pointer;min-height:44px}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=password],input[type=date],select,textarea{font:inherit;color:#1a1a1a;background:#fff;border:2px solid #595959;border-radius:4px;padding:.4rem;width:100%;max-width:30rem}
textarea{min-height:6rem}
.alarms{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(18rem,1fr));padding:0;margin:0}
article.alarm{border:2px solid #595959;border-left-width:12px;border-radius:6px;padding:.75rem;background:#fff}
article.alarm[data-severity=red]{border-color:#b00020}
article.alarm[data-severity=yellow]{border-color:#8a6d00;border-style:dashed;border-left-style:solid}
article.alarm[data-state=acknowledged]{background:#f2f2f2}
article.alarm.flash{animation:flash 1s ease-in-out 3}
@keyframes flash{50%{background:#ffe0e5}}
@media (prefers-reduced-motion:reduce){article.alarm.flash{animation:none;outline:4px solid #b00020}}
.alarm-severity{font-weight:700;margin:.25rem 0}
article.alarm[data-severity=red] .alarm-severity{color:#b00020}
article.alarm[data-severity=yellow] .alarm-severity{color:#5c4a00}
.alarm dl{display:grid;grid-template-columns:auto 1fr;gap:0 .75rem;margin:.5rem 0}
.alarm dt{font-weight:600}
.alarm dd{margin:0}
.alarm-state{font-weight:700}
.alarm-actions{display:flex;gap:.75rem;align-items:center;flex-wrap:wrap;margin-top:.5rem}
.alarm-actions form{margin:0}
.flash-msg,.error{border:2px solid #b00020;background:#fde7e9;color:#7a0012;padding:.75rem;border-radius:4px;margin:.5rem 0 1rem}
.hint{color:#4a4a4a;font-size:.95rem}
.visually-hidden{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;border-bottom:1px solid #8a8a8a;padding:.4rem}
"#;

/// The whole page: `<html lang>`, the header (the user's name, language
/// switch, logout, navigation; administrators also see the admin links),
/// then `<main id="{main_id}">` holding `body`, then `script` if any.
///
/// `title` is text (escaped here); `body` is HTML the caller built with
/// [`esc`] on every value.
pub fn layout(
    lang: Lang,
    who: Option<&Principal>,
    title: &str,
    main_id: &str,
    body: &str,
    script: Option<&str>,
) -> String {
    let mut header = format!(
        r#"<header class="site"><a class="brand" href="/">{}</a>"#,
        esc(t(lang, "app_name"))
    );
    if let Some(p) = who {
        let other = match lang {
            Lang::Nb => Lang::En,
            Lang::En => Lang::Nb,
        };
        let mut nav = format!(
            r#"<li><a href="/">{}</a></li><li><a href="/devices">{}</a></li><li><a href="/benefits">{}</a></li>"#,
            esc(t(lang, "nav_board")),
            esc(t(lang, "nav_devices")),
            esc(t(lang, "nav_benefits"))
        );
        if matches!(
            p.role,
            crate::access::Role::Administrator | crate::access::Role::Technician
        ) {
            nav.push_str(&format!(
                r#"<li><a href="/gateways">{}</a></li>"#,
                esc(t(lang, "nav_gateways"))
            ));
        }
        if p.is_admin() {
            nav.push_str(&format!(
                r#"<li><a href="/admin/users">{}</a></li><li><a href="/admin/residents">{}</a></li><li><a href="/admin/audit">{}</a></li>"#,
                esc(t(lang, "nav_users")),
                esc(t(lang, "nav_residents")),
                esc(t(lang, "nav_audit"))
            ));
        }
        if p.is_admin() || p.role == crate::access::Role::Technician {
            nav.push_str(&format!(
                r#"<li><a href="/admin/enrollment">{}</a></li>"#,
                esc(t(lang, "nav_enrollment"))
            ));
        }
        header.push_str(&format!(
            r#"<nav aria-label="{nav_label}"><ul>{nav}</ul></nav><div class="who"><span>{signed_in}: <strong id="user-name">{name}</strong></span><form method="post" action="/lang" id="lang-form"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="lang" value="{other}"><button type="submit" id="lang-button" lang="{other}">{other_name}</button></form><form method="post" action="/logout" id="logout-form"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" id="logout-button">{logout}</button></form></div>"#,
            nav_label = esc(t(lang, "nav_label")),
            signed_in = esc(t(lang, "signed_in_as")),
            name = esc(&p.display_name),
            csrf = esc(&p.csrf),
            other = other.as_str(),
            other_name = esc(t(lang, "switch_to_other")),
            logout = esc(t(lang, "logout")),
        ));
    }
    header.push_str("</header>");
    format!(
        r##"<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {app}</title>
<style>{css}</style>
</head>
<body>
<a class="skip-link" href="#{main_id}">{skip}</a>
{header}
<main id="{main_id}" tabindex="-1">
{body}
</main>
{script}
</body>
</html>
"##,
        lang = lang.as_str(),
        title = esc(title),
        app = esc(t(lang, "app_name")),
        css = CSS,
        main_id = esc(main_id),
        skip = esc(t(lang, "skip_link")),
        script = script
            .map(|s| format!("<script>{s}</script>"))
            .unwrap_or_default(),
    )
}

/// A page with a heading and one message (errors, refusals).
pub fn message_page(
    status: StatusCode,
    lang: Lang,
    who: Option<&Principal>,
    title: &str,
    message: &str,
) -> Response {
    let body = format!(
        r#"<h1>{}</h1><p class="error" id="message" role="alert">{}</p><p><a href="/">{}</a></p>"#,
        esc(title),
        esc(message),
        esc(t(lang, "back_to_board"))
    );
    page(status, layout(lang, who, title, "content", &body, None))
}

/// Unix milliseconds as (`YYYY-MM-DDTHH:MM:SSZ`, `HH:MM`), UTC. The
/// pages show times in Norwegian time ([`oslo_hm`], [`time_tag`]).
pub fn utc(ms: u64) -> (String, String) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{h:02}:{m:02}"),
    )
}

/// `HH:MM` in Norwegian time (the console's clock, whatever the viewer's
/// device is set to: staff compare it with what residents and colleagues
/// say).
pub fn oslo_hm(ms: u64) -> String {
    let local = (ms as i64 + crate::benefits::oslo_offset_ms(ms as i64)).max(0) as u64;
    utc(local).1
}

/// `<time datetime=...>HH:MM</time>`, the text in Norwegian time (the
/// script keeps it so as it updates the page).
pub fn time_tag(ms: u64) -> String {
    let (iso, _) = utc(ms);
    let hm = oslo_hm(ms);
    format!(r#"<time datetime="{iso}">{hm}</time>"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_comes_out_as_text() {
        assert_eq!(
            esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn utc_times_are_civil() {
        assert_eq!(utc(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_709_251_200_000 + 3_723_000).0, "2024-03-01T01:02:03Z");
        assert_eq!(utc(1_709_251_200_000 + 3_723_000).1, "01:02");
        // 1 March: winter time, UTC+1; 1 July: summer time, UTC+2.
        assert_eq!(oslo_hm(1_709_251_200_000 + 3_723_000), "02:02");
        assert_eq!(oslo_hm(1_719_792_000_000), "02:00");
    }

    #[test]
    fn the_frame_has_lang_skip_link_and_the_users_name_escaped() {
        let p = Principal {
            username: "kari".into(),
            display_name: "Kari <b>".into(),
            role: crate::access::Role::Administrator,
            units: vec!["*".into()],
            groups: vec![],
            lang: Lang::En,
            csrf: "tok".into(),
        };
        let html = layout(Lang::En, Some(&p), "Board", "board", "<p>x</p>", None);
        assert!(html.contains(r#"<html lang="en">"#));
        assert!(html.contains(r##"href="#board""##));
        assert!(html.contains("Kari &lt;b&gt;"));
        assert!(html.contains("/admin/audit"));
        assert!(html.contains(r#"name="csrf" value="tok""#));
    }
}

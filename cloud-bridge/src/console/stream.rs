//! `GET /stream`: the board's server-sent events, for one user. Each
//! change to an alarm this user may see goes out as event `alarm` with the
//! alarm's view (as `/console/api/alarms/{id}` gives it) plus `change` and
//! `html`, the board's article for it in the user's language. `resync`
//! when this client fell behind (the board reloads).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::board::{article, view};
use super::{ApiUser, ConsoleState};
use crate::store::AlarmChange;

/// How often an open stream checks that its session still holds.
pub const SESSION_RECHECK: Duration = Duration::from_secs(30);

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/stream", get(stream))
}

async fn stream(
    State(s): State<ConsoleState>,
    who: ApiUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let principal = who.0.principal;
    let store = s.app.store.clone();
    let (watch_store, token, policy) = (s.app.store.clone(), who.0.token.clone(), s.policy);
    let session_ended = async move {
        let mut tick = tokio::time::interval(SESSION_RECHECK);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (st, t) = (watch_store.clone(), token.clone());
            let held =
                tokio::task::spawn_blocking(move || st.session(&t, policy, crate::store::now_ms()))
                    .await;
            if !matches!(held, Ok(Ok(Some(_)))) {
                return;
            }
        }
    };
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let cancel = s.app.cancel.clone();
    let mut ended_tx = ended_tx;
    tokio::spawn(async move {
        tokio::select! {
            _ = session_ended => {}
            _ = cancel.cancelled() => return,
            // The client went away: stop watching.
            _ = ended_tx.closed() => return,
        }
        let _ = ended_tx.send(());
    });
    let changes = BroadcastStream::new(s.app.changes.subscribe()).filter_map(
        move |m: Result<AlarmChange, BroadcastStreamRecvError>| {
            let store = store.clone();
            let p = principal.clone();
            async move {
                match m {
                    Ok(change) => {
                        let lang = p.lang;
                        let r = tokio::task::spawn_blocking(move || {
                            if !store.may_see(&p, &change.alarm)? {
                                return Ok(None);
                            }
                            let v = view(&store, change.alarm, lang)?;
                            let html = article(&v, lang, &p);
                            let mut data = serde_json::to_value(&v)
                                .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
                            data["change"] = serde_json::to_value(change.change)
                                .unwrap_or(serde_json::Value::Null);
                            data["html"] = serde_json::Value::String(html);
                            Ok::<_, crate::store::StoreError>(Some(data))
                        })
                        .await;
                        match r {
                            Ok(Ok(Some(data))) => {
                                Some(Ok(Event::default().event("alarm").data(data.to_string())))
                            }
                            Ok(Ok(None)) => None,
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "console stream cannot read the store");
                                Some(Ok(Event::default().event("resync").data("{}")))
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "console stream task failed");
                                Some(Ok(Event::default().event("resync").data("{}")))
                            }
                        }
                    }
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "console stream client lagged");
                        Some(Ok(Event::default()
                            .event("resync")
                            .data(format!("{{\"missed\":{n}}}"))))
                    }
                }
            }
        },
    );
    let hello = futures::stream::once(async {
        Ok(Event::default().comment("subscribed to alarm changes"))
    });
    // The last word when the session has ended, then the stream closes.
    let goodbye =
        futures::stream::once(async { Ok(Event::default().event("session_ended").data("{}")) });
    Sse::new(
        hello
            .chain(changes.take_until(ended_rx))
            .chain(goodbye)
            .take_until(s.app.cancel.clone().cancelled_owned()),
    )
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

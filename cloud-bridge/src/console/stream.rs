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

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/stream", get(stream))
}

async fn stream(
    State(s): State<ConsoleState>,
    who: ApiUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let principal = who.0.principal;
    let store = s.app.store.clone();
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
    Sse::new(
        hello
            .chain(changes)
            .take_until(s.app.cancel.clone().cancelled_owned()),
    )
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

//! `GET /stream`: the board's server-sent events, filtered per user.

use axum::Router;

use super::ConsoleState;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
}

//! `/console/api`: the console's JSON API (session + CSRF).

use axum::Router;

use super::ConsoleState;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
}

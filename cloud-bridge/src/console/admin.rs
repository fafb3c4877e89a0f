//! Administration pages (users, residents, audit log). A stub until the
//! administration pages land: merged into the console router by
//! `console::router`.

use axum::Router;

use super::ConsoleState;

/// The administration routes.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
}

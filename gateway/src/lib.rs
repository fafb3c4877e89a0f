//! The Trygg home gateway.
//!
//! ```text
//! devices --MQTT--> local broker --> [local] --> [journal thread] --> [acks]    receipts to devices,
//!                   (embedded or       |          group commit,        |        MQTT acks to the broker
//!                    Mosquitto)        |          fsync                v
//!                                      |                            [uplink] --MQTT v5/TLS--> backend
//!                                      +-- heartbeats (memory only)     ^ receipts delete from the journal
//! ```
//!
//! The modules [`ingest`], [`journal`], [`register`] (the paired devices),
//! [`credentials`] (device keys, their hashes, the topic ACL),
//! [`device_auth`] (who may connect to the embedded broker, join requests),
//! [`supervision`], [`uplink`] and [`local_io`] (the Pi's own button, LED,
//! buzzer and mains-fail input) hold the decisions; [`mosquitto`] writes
//! Mosquitto's password and ACL files; [`device_cli`] is the
//! technician's client of the local API; [`technician`] is the technician's
//! login, page and API on the home's network; [`enrollment`] gets the
//! gateway its certificate for the uplink (mutual TLS) and runs the uplink
//! with it;
//! this file is the shell that carries them out. [`run`] is the whole
//! gateway; `main.rs` only parses flags.

pub mod cli;
pub mod config;
pub mod credentials;
pub mod decommission;
pub mod device_auth;
pub mod device_cli;
pub mod enrollment;
pub mod ingest;
pub mod journal;
mod local_api;
pub mod local_io;
pub mod mosquitto;
pub mod register;
mod remote_config;
pub mod seal;
mod service;
pub mod supervision;
pub mod technician;
pub mod uplink;

pub use config::Config;
pub use service::{run, GatewayError, Ready, TechnicianReady};

//! The contract between a Trygg gateway and the backend, and the MQTT
//! plumbing both sides share.
//!
//! - [`contract`]: topics, batches of journal records going up, receipts
//!   coming down. A receipt names exactly the lane sequence numbers the
//!   cloud-bridge has committed, so a gateway deletes nothing it was not
//!   told is safe elsewhere.
//! - [`remote_config`]: settings pushed from the backend to a gateway,
//!   versioned and confirmed.
//! - [`broker`]: the embedded MQTT broker (rumqttd), in-process, so a demo
//!   or a test needs nothing installed.
//! - [`tls`]: rustls client configuration and a development PKI.
//! - [`enroll`]: the enrollment endpoint's contract and the gateway's half
//!   of it (key, CSR, identity files).
//! - [`backoff`]: exponential back-off with jitter for reconnects.
//! - [`metrics`]: named counters rendered in the Prometheus text format.
//! - [`shutdown`]: the signal every service stops on.

pub mod backoff;
pub mod broker;
pub mod contract;
pub mod enroll;
pub mod metrics;
pub mod mqtt_url;
pub mod remote_config;
pub mod shutdown;
pub mod tls;

pub use contract::{Batch, Record, SeqRange, UplinkReceipt};

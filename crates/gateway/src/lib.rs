//! The town's credential gateway: agents (Unix users) use model API keys and
//! HTTPS tokens without ever holding them.
//!
//! The gateway listens on loopback. It knows each caller by the uid the
//! kernel lists as owner of the connection's client socket, never by what
//! the client says. Model APIs are reverse proxied at
//! `http://127.0.0.1:8399/<credential>/<path>`; other HTTPS services go
//! through it as an HTTPS proxy, which intercepts hosts an agent's
//! credentials declare (with leaf certificates from the town CA) and adds
//! the credential there. Every call, forwarded or denied, becomes an
//! [`Event`] for the town hall, which runs the gateway via [`serve_stdio`].

mod ca;
mod config;
mod error;
mod event;
mod limits;
mod meter;
mod peer;
mod policy;
mod respond;
mod server;
mod stdio;
mod upstream;

pub use ca::generate_ca;
pub use config::{AgentSpec, Api, Config, Credential, Limits, OnLimit, Secret, TownCa, Usage};
pub use error::GatewayError;
pub use event::{CallRecord, Event};
pub use limits::UsageSummary;
pub use server::Gateway;
pub use stdio::{serve_stdio, Control, Grant};

//! What the gateway tells the town hall: every call, forwarded or denied,
//! and every limit an agent runs into.

use serde::{Deserialize, Serialize};

use crate::config::OnLimit;

/// One thing the town hall should know about, written as one JSON line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// A request was forwarded or denied.
    Call(CallRecord),
    /// An agent's credential reached a limit (once per crossing, not per request).
    #[serde(rename_all = "camelCase")]
    LimitReached {
        /// The agent's name.
        agent: String,
        /// The credential's name.
        credential: String,
        /// The limit, in words: "1000 tokens per hour".
        limit: String,
        /// Whether the town wants a human asked.
        on_limit: OnLimit,
    },
}

/// The record of one request through the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// The agent's name, or "uid N" for a caller that is not an agent.
    pub agent: String,
    /// The caller's uid as the kernel reports it.
    pub uid: u32,
    /// The credential used or asked for, when there was one.
    pub credential: Option<String>,
    /// HTTP method (CONNECT for tunnels).
    pub method: String,
    /// Upstream host the request was for.
    pub host: String,
    /// Request path, without the query string.
    pub path: String,
    /// Model named by the request (or, failing that, the response).
    pub model: Option<String>,
    /// Status answered to the agent.
    pub status: u16,
    /// "forwarded" or "denied: <why>".
    pub decision: String,
    /// Input tokens reported by the upstream.
    pub tokens_in: Option<u64>,
    /// Output tokens reported by the upstream.
    pub tokens_out: Option<u64>,
    /// Bytes of request body sent upstream.
    pub bytes_up: u64,
    /// Bytes of response body passed back.
    pub bytes_down: u64,
    /// Milliseconds from request to the end of the response.
    pub ms: f64,
}

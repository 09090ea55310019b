//! The gateway's errors: only for starting and feeding it; per-request
//! failures become HTTP answers and events instead.

/// Why the gateway could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A socket or stdio operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the gateway was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The configuration could not be used.
    #[error("gateway configuration: {0}")]
    Config(String),
    /// The town CA could not be made or read.
    #[error("town CA: {0}")]
    Ca(String),
}

impl GatewayError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> GatewayError {
        GatewayError::Io {
            what: what.into(),
            source,
        }
    }
}

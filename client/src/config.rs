//! Client settings.

use std::time::Duration;

/// Settings shared by [`crate::Connection`] and [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `client.id` sent in every request header.
    pub client_id: String,
    /// Limit for establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit for one request/response round trip (Fetch adds its `max_wait_ms`).
    pub request_timeout: Duration,
    /// Largest response frame accepted; bigger frames close the connection.
    pub max_response_size: usize,
    /// How often [`crate::Client`] refreshes metadata and retries a partition request that
    /// failed because leadership moved (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, ...).
    pub retries: u32,
    /// Pause before such a retry.
    pub retry_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "sluice-client".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_size: 256 * 1024 * 1024,
            retries: 3,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

impl ClientConfig {
    /// Default settings with the given client id.
    pub fn with_client_id(client_id: impl Into<String>) -> Self {
        ClientConfig {
            client_id: client_id.into(),
            ..Default::default()
        }
    }
}

//! The crate's error type and the mapping of Kafka error codes into it.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed.
    #[error("I/O error ({context}): {source}")]
    Io {
        /// What was being done, e.g. `connect to 10.0.0.1:9092`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A connect or a request did not finish in time.
    #[error("timed out after {after:?} ({context})")]
    Timeout {
        /// What was being waited for.
        context: String,
        /// The limit that was hit.
        after: Duration,
    },

    /// Bytes on the wire could not be encoded or decoded.
    #[error("protocol error ({context}): {detail}")]
    Protocol {
        /// What was being encoded or decoded.
        context: String,
        /// Why it failed.
        detail: String,
    },

    /// The broker answered with a non-zero Kafka error code.
    #[error("Kafka error {code} {name} ({context}){}", fmt_message(message))]
    Kafka {
        /// The Kafka error code (e.g. 3 for UNKNOWN_TOPIC_OR_PARTITION).
        code: i16,
        /// The name `kafka_protocol::ResponseError` gives the code
        /// (e.g. `UnknownTopicOrPartition`), or `Unknown` for codes it does not know.
        name: &'static str,
        /// The broker's error message, when the response carries one.
        message: Option<String>,
        /// Which call / resource the error belongs to, e.g. `produce to t-0`.
        context: String,
    },

    /// The connection closed (or failed) before the response arrived.
    #[error("disconnected from {addr}")]
    Disconnected {
        /// Address of the broker.
        addr: String,
    },

    /// No version of an API is supported by both this crate and the broker.
    #[error(
        "unsupported version for api key {api}: client supports {client_range}, broker supports {}",
        broker_range.map(|r| r.to_string()).unwrap_or_else(|| "nothing".to_string())
    )]
    UnsupportedVersion {
        /// The API key.
        api: i16,
        /// The versions this crate can encode.
        client_range: VersionRange,
        /// The versions the broker advertised, `None` if it does not advertise the API.
        broker_range: Option<VersionRange>,
    },

    /// Bad input given to the client (empty bootstrap list, unknown broker id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

fn fmt_message(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

impl ClientError {
    /// The Kafka error code, if this is a [`ClientError::Kafka`].
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The Kafka error as a `kafka_protocol::ResponseError`, if this is a [`ClientError::Kafka`].
    pub fn response_error(&self) -> Option<ResponseError> {
        self.code().and_then(ResponseError::try_from_code)
    }

    /// Whether Kafka marks the error as retriable.
    pub fn is_retriable(&self) -> bool {
        self.response_error().is_some_and(|e| e.is_retriable())
    }

    /// Whether the error means the client's view of partition leadership is out of date,
    /// so refreshing metadata and retrying can help.
    pub fn is_stale_metadata(&self) -> bool {
        matches!(
            self.code(),
            // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
            // NOT_CONTROLLER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
            Some(3 | 5 | 6 | 41 | 74 | 75)
        )
    }

    pub(crate) fn protocol(context: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        ClientError::Protocol {
            context: context.into(),
            detail: format!("{detail:#}"),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Name of a Kafka error code as `kafka_protocol::ResponseError` prints it
/// (`UnknownTopicOrPartition`, ...); `"None"` for 0 and `"Unknown"` for codes it does not know.
pub fn error_name(code: i16) -> &'static str {
    // `ResponseError` only exposes names through `Display`, so build a table of
    // `&'static str` once. The strings are leaked on purpose: the table is built a
    // single time per process and is bounded (~140 short names).
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    if code == 0 {
        return "None";
    }
    let names = NAMES.get_or_init(|| {
        (-1..=1024)
            .filter_map(|c| match ResponseError::try_from_code(c) {
                Some(ResponseError::Unknown(_)) | None => None,
                Some(e) => Some((c, &*Box::leak(e.to_string().into_boxed_str()))),
            })
            .collect()
    });
    names.get(&code).copied().unwrap_or("Unknown")
}

/// Map a Kafka error code to `Ok(())` (code 0) or a [`ClientError::Kafka`].
pub fn check_error(
    code: i16,
    message: Option<&str>,
    context: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    if code == 0 {
        return Ok(());
    }
    Err(kafka_error(code, message.map(str::to_string), context()))
}

/// Build a [`ClientError::Kafka`] for a (non-zero) code.
pub fn kafka_error(code: i16, message: Option<String>, context: String) -> ClientError {
    ClientError::Kafka {
        code,
        name: error_name(code),
        message,
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_response_error() {
        assert_eq!(error_name(3), "UnknownTopicOrPartition");
        assert_eq!(error_name(-1), "UnknownServerError");
        assert_eq!(error_name(35), "UnsupportedVersion");
        assert_eq!(error_name(36), "TopicAlreadyExists");
        assert_eq!(error_name(0), "None");
        assert_eq!(error_name(30000), "Unknown");
    }

    #[test]
    fn check_error_maps_codes() {
        assert!(check_error(0, Some("ignored"), || unreachable!()).is_ok());
        let err = check_error(6, Some("not me"), || "produce to t-0".into()).unwrap_err();
        match &err {
            ClientError::Kafka {
                code,
                name,
                message,
                context,
            } => {
                assert_eq!(*code, 6);
                assert_eq!(*name, "NotLeaderOrFollower");
                assert_eq!(message.as_deref(), Some("not me"));
                assert_eq!(context, "produce to t-0");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.code(), Some(6));
        assert!(err.is_retriable());
        assert!(err.is_stale_metadata());
        assert_eq!(
            err.to_string(),
            "Kafka error 6 NotLeaderOrFollower (produce to t-0): not me"
        );
        let err = check_error(36, None, || "create topic t".into()).unwrap_err();
        assert!(!err.is_retriable());
        assert!(!err.is_stale_metadata());
        assert_eq!(
            err.to_string(),
            "Kafka error 36 TopicAlreadyExists (create topic t)"
        );
    }
}

//! The errors of the Kafka edge, typed: what failed, and whether trying again may help.
//!
//! A Kafka error is sorted into retriable (the broker or the network may recover: a
//! timeout, a leader election, a full queue, a broker that is down) or fatal (a
//! misconfiguration, a fenced or invalid producer, an authorisation failure, a message the
//! broker will never take). The service stops on any error it returns, and a supervisor
//! restarts it; the kind tells an operator (and the logs) which was which.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// An error of the streaming service, replay, or the topics it needs.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A Kafka client call failed.
    #[error("{what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        source: KafkaError,
    },
    /// The state store failed (I/O or corruption).
    #[error("{what}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        source: loyalty_store::StoreError,
    },
    /// A program in the log does not validate.
    #[error("{what}")]
    Config {
        /// What was being done.
        what: String,
        /// Why it does not validate.
        source: loyalty_core::ConfigError,
    },
    /// An I/O error outside the store (a socket, a thread, standard output).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The log or the brokers are not as the service needs them (a log that stops short,
    /// a topic without leaders, a state that holds another log), or a worker stopped.
    #[error("{0}")]
    Broken(String),
    /// Stopped by a signal before the work was done.
    #[error("interrupted")]
    Interrupted,
}

impl StreamError {
    /// Whether the same call may succeed if tried again: the broker or the network may
    /// recover. Store, config and I/O errors are not retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            StreamError::Kafka { source, .. } => retriable(source),
            _ => false,
        }
    }

    /// A broken log, brokers or worker.
    pub fn broken(what: impl Into<String>) -> StreamError {
        StreamError::Broken(what.into())
    }
}

/// Whether a Kafka error is one the broker or the network may recover from.
pub fn retriable(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::MessageTimedOut
                | C::QueueFull
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NetworkException
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::RebalanceInProgress
                | C::UnknownTopicOrPartition
                | C::ReplicaNotAvailable
                | C::BrokerNotAvailable
                | C::KafkaStorageError
                | C::FetchSessionIdNotFound
                | C::OffsetNotAvailable
                | C::PreferredLeaderNotAvailable
                | C::Resolve
                | C::TimedOutQueue
                | C::WaitingForCoordinator
                | C::ISRInsufficient
                | C::PartitionEOF
                | C::InProgress
                | C::Retry
        ),
        // Errors without a code: a canceled or unreachable client may come back.
        None => matches!(e, KafkaError::Canceled | KafkaError::NoMessageReceived),
    }
}

/// Whether a Kafka error is one no retry mends: librdkafka's own fatal error, or an
/// authentication or authorisation failure. A consumer that meets one stops (with
/// [`StreamError::Kafka`]) instead of polling on; any other consumer error is logged and
/// polled past.
pub fn fatal(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    e.rdkafka_error_code().is_some_and(|code| {
        matches!(
            code,
            C::Fatal
                | C::Authentication
                | C::SaslAuthenticationFailed
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
        )
    })
}

/// `Result` of the streaming service.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;

/// Says what was being done when an error happened, as `anyhow`'s `context` does, but into
/// a [`StreamError`] of the error's own kind.
pub trait Context<T> {
    /// The error, with what was being done.
    fn context(self, what: impl Into<String>) -> Result<T>;

    /// The error, with what was being done, made only when there is one.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

/// An error that can say what was being done.
pub trait IntoStreamError {
    /// The error, with what was being done.
    fn into_stream_error(self, what: String) -> StreamError;
}

impl IntoStreamError for KafkaError {
    fn into_stream_error(self, what: String) -> StreamError {
        StreamError::Kafka { what, source: self }
    }
}

impl IntoStreamError for loyalty_store::StoreError {
    fn into_stream_error(self, what: String) -> StreamError {
        StreamError::Store { what, source: self }
    }
}

impl IntoStreamError for loyalty_core::ConfigError {
    fn into_stream_error(self, what: String) -> StreamError {
        StreamError::Config { what, source: self }
    }
}

impl IntoStreamError for std::io::Error {
    fn into_stream_error(self, what: String) -> StreamError {
        StreamError::Io { what, source: self }
    }
}

impl IntoStreamError for StreamError {
    /// The inner error keeps its kind; what was being done is prefixed.
    fn into_stream_error(self, what: String) -> StreamError {
        match self {
            StreamError::Kafka { what: w, source } => StreamError::Kafka {
                what: format!("{what}: {w}"),
                source,
            },
            StreamError::Store { what: w, source } => StreamError::Store {
                what: format!("{what}: {w}"),
                source,
            },
            StreamError::Config { what: w, source } => StreamError::Config {
                what: format!("{what}: {w}"),
                source,
            },
            StreamError::Io { what: w, source } => StreamError::Io {
                what: format!("{what}: {w}"),
                source,
            },
            StreamError::Broken(w) => StreamError::Broken(format!("{what}: {w}")),
            StreamError::Interrupted => StreamError::Interrupted,
        }
    }
}

impl<T, E: IntoStreamError> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into_stream_error(what.into()))
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into_stream_error(what().into()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| StreamError::Broken(what.into()))
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| StreamError::Broken(what().into()))
    }
}

impl From<loyalty_store::StoreError> for StreamError {
    fn from(e: loyalty_store::StoreError) -> StreamError {
        StreamError::Store {
            what: "the state store".into(),
            source: e,
        }
    }
}

impl From<KafkaError> for StreamError {
    fn from(e: KafkaError) -> StreamError {
        StreamError::Kafka {
            what: "Kafka".into(),
            source: e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_are_sorted_into_retriable_and_fatal() {
        let retriable_ones = [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::QueueFull,
        ];
        for c in retriable_ones {
            let e = KafkaError::MessageProduction(c);
            assert!(retriable(&e), "{c:?}");
            assert!(e.into_stream_error("send".into()).is_retriable());
        }
        let not_retriable = [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::UnsupportedVersion,
        ];
        for c in not_retriable {
            assert!(!retriable(&KafkaError::MessageProduction(c)), "{c:?}");
        }
        assert!(!StreamError::broken("the log stopped").is_retriable());
        let auth = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(fatal(&auth) && !retriable(&auth));
        let transient = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(!fatal(&transient) && retriable(&transient));
        let nested = Err::<(), _>(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
            .context("queue")
            .context("publish");
        let e = nested.unwrap_err();
        assert!(e.is_retriable());
        assert_eq!(e.to_string(), "publish: queue");
        // The cause is the error's source, printed once by whoever walks the chain.
        assert!(std::error::Error::source(&e).is_some());
    }
}

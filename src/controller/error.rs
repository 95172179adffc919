//! Reconcile errors, one variant per failure class.

/// Errors of a reconcile. Transient ones are retried with backoff; spec
/// problems are reported as conditions instead and never reach here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object was missing a field the API always sets.
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// An operation must wait for something outside the operator (e.g. a
    /// tenant's servers to be deleted); retried with backoff.
    #[error("blocked: {0}")]
    Blocked(String),
    /// A Secret the operator needs exists and is not its own (see
    /// `secrets`): reported as a condition, never overwritten.
    #[error("{0}")]
    SecretConflict(String),
    /// Serialization of a desired object failed.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// The API server's message when it refused an object as invalid (422):
    /// retrying cannot help until the spec changes, so reconcilers report
    /// it as a Stalled condition instead of retrying.
    pub fn rejected(&self) -> Option<&str> {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 422 => Some(&e.message),
            _ => None,
        }
    }

    /// Metric label for the failure class.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(e)) if e.code == 403 => "forbidden",
            Error::Kube(_) => "api",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "missing_field",
            Error::Blocked(_) => "blocked",
            Error::SecretConflict(_) => "secret_conflict",
            Error::Serde(_) => "serialization",
        }
    }
}

/// Result of a reconcile.
pub type Result<T, E = Error> = std::result::Result<T, E>;

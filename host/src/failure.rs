//! Why a command failed, one kind per exit code, so scripts and operators can tell "fix your
//! settings" from "try again later" from "the policy broke a rule".

/// Each kind maps to one documented exit code (see the README).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Bad flags, settings, environment or policy file: a person must fix the input. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// Credentials rejected or a permission missing. Exit 3.
    #[error("{0}")]
    Auth(String),
    /// Network, TLS, timeouts, rate limits: may work later. Exit 4.
    #[error("{0}")]
    Transient(String),
    /// The policy broke a sandbox rule or crashed. Exit 5.
    #[error("{0}")]
    Policy(String),
    /// Anything else (an unexpected answer, a disk error). Exit 1.
    #[error("{0}")]
    Other(String),
    /// A signal stopped the command. Exit 128 + the signal number.
    #[error("{message}")]
    Stopped { signal: String, message: String },
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Auth(_) => 3,
            Failure::Transient(_) => 4,
            Failure::Policy(_) => 5,
            Failure::Stopped { signal, .. } if signal == "SIGINT" => 130,
            Failure::Stopped { .. } => 143,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Auth(m) | Failure::Transient(m) | Failure::Policy(m) | Failure::Other(m) => m,
            Failure::Stopped { message, .. } => message,
        }
    }

    /// The same failure with `suffix` appended to its message.
    pub fn with_suffix(self, suffix: &str) -> Self {
        self.map_message(|m| format!("{m}{suffix}"))
    }

    /// The same kind of failure, its message rewritten.
    pub fn map_message(self, add: impl FnOnce(String) -> String) -> Self {
        match self {
            Failure::Usage(m) => Failure::Usage(add(m)),
            Failure::Auth(m) => Failure::Auth(add(m)),
            Failure::Transient(m) => Failure::Transient(add(m)),
            Failure::Policy(m) => Failure::Policy(add(m)),
            Failure::Other(m) => Failure::Other(add(m)),
            Failure::Stopped { signal, message } => Failure::Stopped { signal, message: add(message) },
        }
    }

    /// A workspace error, by what kind of problem it is.
    pub fn from_api(error: crate::databricks::ApiError) -> Self {
        use crate::databricks::error::ErrorClass;
        match error.class() {
            ErrorClass::Config => Failure::Usage(error.to_string()),
            ErrorClass::Auth => Failure::Auth(error.to_string()),
            ErrorClass::Transient => Failure::Transient(error.to_string()),
            ErrorClass::Other => Failure::Other(error.to_string()),
        }
    }
}

//! Why a messaging call failed. The transports turn these into HTTP codes
//! and gRPC statuses (`smsgw_api::ApiError`); nothing here knows either.

use smsgw_core::users::StoreError;

/// Why a send, a lookup or an inbound event was not handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// A send refused before anything was stored, with its own code
    /// (`invalid_destination`, `too_many_segments`, `target_not_allowed`,
    /// `daily_cp`, …).
    #[error("{message}")]
    Refused {
        /// Machine-readable cause.
        code: &'static str,
        /// What is wrong, for the client.
        message: String,
        /// The sender may not do this (a permission or a contact policy),
        /// rather than having asked for something malformed.
        forbidden: bool,
    },
    /// The request conflicts with what is held (an address another app or
    /// a managed user holds, a transaction id of another message), with
    /// its own code (`address_taken`, `address_managed`, `already_claimed`,
    /// `too_many_claims`, `transaction_id_reused`).
    #[error("{message}")]
    Conflict {
        /// Machine-readable cause.
        code: &'static str,
        /// What conflicts, for the client.
        message: String,
    },
    /// A send the app's prepaid balance does not cover
    /// (`insufficient_balance`): 402 at the edge.
    #[error("{message}")]
    PaymentRequired {
        /// Machine-readable cause.
        code: &'static str,
        /// What is short, for the client.
        message: String,
    },
    /// A field is missing or has a value that is not accepted (the text).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's name in the request.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The named link or pool is not in the configuration.
    #[error("unknown esme {0:?}: no link or pool of that name")]
    UnknownTarget(String),
    /// The sending user is gone from the user store.
    #[error("the token's user no longer exists")]
    UnknownUser,
    /// Over a rate limit of the app, link or pool.
    #[error("rate limit of {scope} reached; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until capacity frees up.
        retry_after_secs: u64,
        /// Which limit (`app "…"`, `link "…"`, `pool "…"`).
        scope: String,
    },
    /// The rate limiter or contact-policy engine needed is not reachable.
    #[error("{0}")]
    Unavailable(String),
    /// No such message (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The user store failed.
    #[error("{0}")]
    Users(StoreError),
    /// The message store or a link failed in a way the caller cannot fix;
    /// details are for the log.
    #[error("internal error")]
    Internal(String),
}

impl MessagingError {
    /// A refusal with a code, for something malformed (400 at the edge).
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
            forbidden: false,
        }
    }

    /// A refusal with a code, for something not permitted (403 at the
    /// edge).
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
            forbidden: true,
        }
    }

    /// The stable machine-readable code the APIs report for this error (and
    /// the reason a refusal is counted and journaled under).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused { code, .. }
            | Self::Conflict { code, .. }
            | Self::PaymentRequired { code, .. } => code,
            Self::InvalidField { .. } => "invalid_argument",
            Self::UnknownTarget(_) => "unknown_target",
            Self::UnknownUser => "unauthenticated",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::NotFound(_) | Self::Users(StoreError::NotFound(_)) => "not_found",
            Self::Users(StoreError::Conflict { .. } | StoreError::TooManyClaims { .. }) => {
                "conflict"
            }
            Self::Users(_) | Self::Internal(_) => "internal",
        }
    }

    /// True for failures of the gateway's own parts (not the request's
    /// fault); those are not counted as refusals.
    pub fn is_internal(&self) -> bool {
        self.code() == "internal"
    }
}

impl From<smsgw_core::messages::MessageStoreError> for MessagingError {
    fn from(e: smsgw_core::messages::MessageStoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

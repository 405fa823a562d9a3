//! The API's error type and its two renderings: HTTP status + JSON body,
//! and `tonic::Status`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why a request was refused. Each variant maps to one HTTP status and one
/// gRPC code, and carries a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A field is missing or has a value the API does not accept.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's name in the request.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is not JSON, or not of the expected shape.
    #[error("{0}")]
    MalformedBody(String),
    /// The body's Content-Type is not one the route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body exceeds its limit ([`crate::MAX_BODY_BYTES`], or a batch's).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The named link or pool does not exist.
    #[error("unknown esme {0:?}: no link or pool of that name")]
    UnknownTarget(String),
    /// The called operation is not available in this build.
    #[error("{0}")]
    Unimplemented(&'static str),
    /// No route matches the request path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// Credentials are missing or invalid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but lacks the right.
    #[error("{0}")]
    PermissionDenied(String),
    /// A unique value is taken (e.g. the email at registration).
    #[error("{0}")]
    Conflict(String),
    /// The request conflicts with what is held, with its own code
    /// (`address_taken`, `address_managed`, `already_claimed`,
    /// `too_many_claims`): 409 / ALREADY_EXISTS.
    #[error("{message}")]
    Conflicting {
        /// Machine-readable cause.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The named record does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Too many attempts; retry after the given number of seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyRequests {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// Over a rate limit; retry after the given number of seconds.
    #[error("rate limit of {scope} reached; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until capacity frees up.
        retry_after_secs: u64,
        /// Which limit (`app "…"`, `link "…"`, `pool "…"`).
        scope: String,
    },
    /// The service needed is not configured or not reachable.
    #[error("{0}")]
    Unavailable(String),
    /// A send refused before anything was stored, or another request
    /// refused with its own code (`invalid_destination`,
    /// `too_many_segments`, `target_not_allowed`, `invalid_address`, …).
    #[error("{message}")]
    SendRefused {
        /// Machine-readable cause.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// 403 / PERMISSION_DENIED instead of 400 / INVALID_ARGUMENT.
        forbidden: bool,
    },
    /// The app's prepaid balance does not cover the send
    /// (`insufficient_balance`): 402 / FAILED_PRECONDITION.
    #[error("{message}")]
    PaymentRequired {
        /// Machine-readable cause.
        code: &'static str,
        /// What is short.
        message: String,
    },
    /// An internal failure (store backend, hashing); details are logged,
    /// not returned.
    #[error("internal error")]
    Internal(String),
}

/// JSON shape of every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable cause: `invalid_argument`,
    /// `payload_too_large`, `unsupported_media_type`, `unknown_target`, `unauthenticated`,
    /// `permission_denied`, `not_found`, `conflict`, `too_many_requests`,
    /// `rate_limited`, `unavailable`, `unimplemented`, `internal`, a send
    /// refusal such as `invalid_destination`, `too_many_segments`,
    /// `target_not_allowed`, `daily_cp`, `transaction_id_reused`,
    /// `quota_exceeded` (403), `insufficient_balance` (402), a
    /// batch's `empty_batch` or `batch_too_large`, or an address claim's
    /// (`invalid_address`, `invalid_keyword`, `address_taken`,
    /// `address_managed`, `already_claimed`, `too_many_claims`).
    #[schema(example = "invalid_argument")]
    pub(crate) code: &'static str,
    /// Human-readable explanation.
    pub(crate) message: String,
    /// The request field at fault, for `invalid_argument` on one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
}

impl ApiError {
    /// Stable machine-readable code (`invalid_argument`, `payload_too_large`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidField { .. } | ApiError::MalformedBody(_) => "invalid_argument",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::UnknownTarget(_) => "unknown_target",
            ApiError::Unimplemented(_) => "unimplemented",
            ApiError::NoRoute(_) | ApiError::NotFound(_) => "not_found",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::SendRefused { code, .. }
            | ApiError::Conflicting { code, .. }
            | ApiError::PaymentRequired { code, .. } => code,
        }
    }

    /// HTTP status of this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField { .. }
            | ApiError::MalformedBody(_)
            | ApiError::UnknownTarget(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::NoRoute(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) | ApiError::Conflicting { .. } => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::SendRefused {
                forbidden: true, ..
            } => StatusCode::FORBIDDEN,
            ApiError::SendRefused { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// gRPC code of this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::InvalidField { .. }
            | ApiError::MalformedBody(_)
            | ApiError::UnknownTarget(_) => tonic::Code::InvalidArgument,
            ApiError::PayloadTooLarge { .. } => tonic::Code::ResourceExhausted,
            ApiError::UnsupportedMediaType(_) => tonic::Code::InvalidArgument,
            ApiError::Unimplemented(_) => tonic::Code::Unimplemented,
            ApiError::NoRoute(_) | ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            ApiError::PermissionDenied(_) => tonic::Code::PermissionDenied,
            ApiError::Conflict(_) | ApiError::Conflicting { .. } => tonic::Code::AlreadyExists,
            ApiError::TooManyRequests { .. } | ApiError::RateLimited { .. } => {
                tonic::Code::ResourceExhausted
            }
            ApiError::Unavailable(_) => tonic::Code::Unavailable,
            ApiError::Internal(_) => tonic::Code::Internal,
            ApiError::PaymentRequired { .. } => tonic::Code::FailedPrecondition,
            ApiError::SendRefused {
                forbidden: true, ..
            } => tonic::Code::PermissionDenied,
            ApiError::SendRefused { .. } => tonic::Code::InvalidArgument,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The `error` of this error's JSON answer (an internal failure's
    /// detail is logged here, not shown).
    pub(crate) fn detail(&self) -> ErrorDetail {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
            field: self.field().map(str::to_owned),
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`), for
    /// the errors that say.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl ApiError {
    /// This error's HTTP status and `Retry-After`, with `body`: smsgw's
    /// [`ErrorBody`], or another shape of the same error (the platform's
    /// `SmsResponse` under `--compat-platform-responses`).
    pub(crate) fn respond_with(&self, body: impl Serialize) -> Response {
        let mut resp = (self.http_status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond_with(ErrorBody {
            error: self.detail(),
        })
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        if let ApiError::Internal(detail) = &e {
            tracing::error!(%detail, "internal error");
        }
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        if let ApiError::TooManyRequests { retry_after_secs }
        | ApiError::RateLimited {
            retry_after_secs, ..
        } = e
            && let Ok(v) = retry_after_secs.to_string().parse()
        {
            status.metadata_mut().insert("retry-after", v);
        }
        status
    }
}

impl From<smsgw_core::users::StoreError> for ApiError {
    fn from(e: smsgw_core::users::StoreError) -> Self {
        use smsgw_core::users::StoreError;
        match e {
            StoreError::Conflict { field, value } => {
                ApiError::Conflict(format!("{field} {value:?} is already registered"))
            }
            StoreError::NotFound(id) => ApiError::NotFound(format!("no user {id:?}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<smsgw_messaging::MessagingError> for ApiError {
    fn from(e: smsgw_messaging::MessagingError) -> Self {
        use smsgw_messaging::MessagingError as M;
        match e {
            M::Refused {
                code,
                message,
                forbidden,
            } => ApiError::SendRefused {
                code,
                message,
                forbidden,
            },
            M::Conflict { code, message } => ApiError::Conflicting { code, message },
            M::PaymentRequired { code, message } => ApiError::PaymentRequired { code, message },
            M::InvalidField { field, reason } => ApiError::InvalidField { field, reason },
            M::UnknownTarget(t) => ApiError::UnknownTarget(t),
            M::UnknownUser => ApiError::Unauthenticated("the token's user no longer exists".into()),
            M::RateLimited {
                retry_after_secs,
                scope,
            } => ApiError::RateLimited {
                retry_after_secs,
                scope,
            },
            M::Unavailable(m) => ApiError::Unavailable(m),
            M::NotFound(m) => ApiError::NotFound(m),
            M::Users(e) => ApiError::from(e),
            M::Internal(m) => ApiError::Internal(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_name_the_field_in_both_renderings() {
        let e = ApiError::InvalidField {
            field: "message",
            reason: "must not be empty".into(),
        };
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "message: must not be empty");
    }

    #[test]
    fn messaging_errors_keep_their_code_at_the_edge() {
        use smsgw_messaging::MessagingError as M;
        for e in [
            M::refused("invalid_destination", "x"),
            M::forbidden("daily_cp", "x"),
            M::Conflict {
                code: "address_taken",
                message: "x".into(),
            },
            M::InvalidField {
                field: "message",
                reason: "x".into(),
            },
            M::UnknownTarget("x".into()),
            M::UnknownUser,
            M::RateLimited {
                retry_after_secs: 1,
                scope: "app".into(),
            },
            M::Unavailable("x".into()),
            M::NotFound("x".into()),
            M::Users(smsgw_core::users::StoreError::Backend("x".into())),
            M::PaymentRequired {
                code: "insufficient_balance",
                message: "x".into(),
            },
            M::Internal("x".into()),
        ] {
            assert_eq!(ApiError::from(e.clone()).code(), e.code(), "{e:?}");
        }
        assert_eq!(
            ApiError::from(M::forbidden("daily_cp", "x")).http_status(),
            StatusCode::FORBIDDEN
        );
        let short = ApiError::from(M::PaymentRequired {
            code: "insufficient_balance",
            message: "x".into(),
        });
        assert_eq!(short.http_status(), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(short.grpc_code(), tonic::Code::FailedPrecondition);
        let taken = ApiError::from(M::Conflict {
            code: "address_taken",
            message: "x".into(),
        });
        assert_eq!(taken.http_status(), StatusCode::CONFLICT);
        assert_eq!(taken.grpc_code(), tonic::Code::AlreadyExists);
    }

    #[test]
    fn oversized_bodies_are_413_and_resource_exhausted() {
        let e = ApiError::PayloadTooLarge { limit: 10 };
        assert_eq!(e.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
    }
}

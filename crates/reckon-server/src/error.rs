//! The HTTP layer's one error type. Every failure a handler can meet becomes
//! an [`ApiError`], and this file alone decides its status code and its
//! stable code. Internal causes are logged, never sent.

use crate::wire::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reckon_core::Rejection;
use reckon_store::{ExecError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: match on this.
    #[schema(example = "insufficient_balance")]
    pub code: &'static str,
    /// For people; may change.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// Bad input: the request cannot be understood as sent.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this operation needs the admin key",
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// The status each business rejection maps to.
pub fn rejection_status(r: Rejection) -> StatusCode {
    use Rejection::*;
    match r {
        AccountNotFound | HoldNotFound => StatusCode::NOT_FOUND,
        InsufficientBalance => StatusCode::PAYMENT_REQUIRED,
        AccountExpired | AccountSuspended => StatusCode::FORBIDDEN,
        AccountExists | HoldAlreadySettled | HoldAlreadyReleased | HoldExpired | ExceedsHold
        | TooManyGrants | TooManyHolds => StatusCode::CONFLICT,
        InvalidAmount | AmountOverflow | ExpiryInPast | InvalidTtl => StatusCode::BAD_REQUEST,
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        ApiError::new(rejection_status(r), r.code(), r.message())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the ledger is shutting down",
            ),
            // Clients (and the metering middleware's fail-open mode) treat
            // 503 as "try again": the right answer when the database is away.
            e if e.is_transient() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry, with the same idempotency key for writes",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> ApiError {
        match e {
            ExecError::Rejected(r) => r.into(),
            ExecError::IdempotencyConflict => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this idempotency key was used with a different request",
            ),
            ExecError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

//! Every error the service answers: `{ "error": { "code", "message" } }`
//! with the status that says what kind of failure it is.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::Error;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine code (`invalid_body`, `unknown_operator`...).
    pub code: Cow<'static, str>,
    /// What went wrong, naming the offending value.
    pub message: String,
    /// The policy's decision, for a request the policy refused.
    pub decision: Option<Box<Value>>,
}

/// The JSON shape of every error, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
    /// The policy's decision, when the policy refused the request (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    decision: Option<Value>,
}

/// The code and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine code.
    code: Cow<'static, str>,
    /// What went wrong.
    message: String,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            decision: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such resource (or not one the caller may see).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401: no valid token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 422: the policy refused; carries its decision.
    pub fn refused(code: String, message: String, decision: Value) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: code.into(),
            message,
            decision: Some(Box::new(decision)),
        }
    }

    /// 500: the host failed.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
            decision: self.decision.map(|decision| *decision),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let (status, code) = match &error {
            Error::UnknownOperator(_) => (StatusCode::NOT_FOUND, "unknown_operator"),
            Error::UnknownPolicyVersion { .. } => (StatusCode::NOT_FOUND, "unknown_policy_version"),
            Error::UnknownEvent { .. } => (StatusCode::NOT_FOUND, "unknown_event"),
            Error::UnknownAuditRecord(_) => (StatusCode::NOT_FOUND, "unknown_audit_record"),
            Error::UnknownToken(_) => (StatusCode::NOT_FOUND, "unknown_token"),
            Error::UnknownSchedule { .. } => (StatusCode::NOT_FOUND, "unknown_schedule"),
            Error::ScheduleNotHeld { .. } => (StatusCode::CONFLICT, "schedule_not_held"),
            Error::ReasonRequired { .. } => (StatusCode::BAD_REQUEST, "reason_required"),
            Error::OperatorExists(_) => (StatusCode::CONFLICT, "operator_exists"),
            Error::PolicyVersionExists { .. } => (StatusCode::CONFLICT, "policy_version_exists"),
            Error::NothingToRollBack(_) => (StatusCode::CONFLICT, "nothing_to_roll_back"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::AlreadyFired(_) => (StatusCode::CONFLICT, "already_fired"),
            Error::Write { .. } => (StatusCode::CONFLICT, "write_not_applicable"),
            Error::Effect { .. } => (StatusCode::CONFLICT, "effect_not_applicable"),
            Error::NotADecision { .. } => (StatusCode::CONFLICT, "not_a_decision"),
            Error::Redacted(_) => (StatusCode::CONFLICT, "redacted"),
            Error::InvalidOperatorId(_) => (StatusCode::BAD_REQUEST, "invalid_operator_id"),
            Error::Import(_) => (StatusCode::BAD_REQUEST, "invalid_import"),
            Error::Load { .. } | Error::ReadPolicy { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_policy")
            }
            Error::SettingsNotObject { .. } => (StatusCode::BAD_REQUEST, "invalid_settings"),
            Error::InvalidSettings { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "settings_refused"),
            Error::PolicyFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "policy_failed"),
            Error::SignatureRequired { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "signature_required")
            }
            Error::SignatureInvalid { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "signature_invalid")
            }
            Error::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            Error::InvalidWebhook { .. } => (StatusCode::BAD_REQUEST, "invalid_webhook"),
            Error::PinMismatch { .. } => (StatusCode::CONFLICT, "pin_mismatch"),
            Error::StoreFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
            Error::StoreBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_busy"),
            Error::Engine(_)
            | Error::ModuleCache(_)
            | Error::Backup { .. }
            | Error::Store(_)
            | Error::OpenStore { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "host_error"),
        };
        ApiError::new(status, code, message)
    }
}

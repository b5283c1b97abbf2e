//! The error object of SPEC section 11: `{"error": {"type", "code"?, "message", "param"?}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use loyalty_store::StoreError;

/// An answer that is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `refusal_error`, `idempotency_error` or `api_error`.
    pub kind: &'static str,
    /// A refusal's reason, or `resource_missing`.
    pub code: Option<String>,
    /// For a person.
    pub message: String,
    /// The parameter or field at fault.
    pub param: Option<String>,
}

impl ApiError {
    /// An error of a kind, with a message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 naming the parameter at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// A 404 `resource_missing`.
    pub fn missing(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("resource_missing".into()),
            ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
        }
    }

    /// With a parameter named.
    pub fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// With a code.
    pub fn code(mut self, code: impl Into<String>) -> ApiError {
        self.code = Some(code.into());
        self
    }

    /// The server could not read its state: a 503 (never a 500: the request was sound).
    pub fn internal(why: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %why, "the HTTP API cannot read the state");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            format!("The state cannot be read: {why}"),
        )
    }

    /// Something the request needs is down (the broker): a 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut e = serde_json::Map::new();
        e.insert("type".into(), self.kind.into());
        if let Some(c) = &self.code {
            e.insert("code".into(), c.clone().into());
        }
        e.insert("message".into(), self.message.clone().into());
        if let Some(p) = &self.param {
            e.insert("param".into(), p.clone().into());
        }
        serde_json::json!({ "error": e })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

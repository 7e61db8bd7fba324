//! One error type for everything a client can be told, each with a stable
//! `errors[].extensions.code`. Internal errors are logged in full where they are converted and
//! reach clients only as "internal server error".

use async_graphql::ErrorExtensions;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error a request can end with.
///
/// Deliberately not `Display`: async-graphql converts any `Display` type into an error without
/// an `extensions.code`, and this type must only ever reach clients through
/// [`ErrorExtensions::extend`], which adds it. `?` in a resolver goes through the `From` below.
#[derive(Debug)]
pub enum AppError {
    Unauthenticated,
    Forbidden(String),
    BadUserInput(String),
    NotFound,
    EmailTaken,
    InvalidCredentials,
    RateLimited {
        retry_after_secs: u64,
    },
    /// A per-user call limit (concurrency or rate): `RATE_LIMITED`, saying which.
    CallLimit {
        limit: CallLimitKind,
        message: String,
        retry_after_secs: u64,
    },
    /// The monthly token budget is used up (including what in-flight calls may still use).
    BudgetExceeded {
        budget: i64,
    },
    /// Another turn of the conversation is in flight (or started meanwhile).
    ConversationBusy,
    /// A per-user count limit (conversations a user may keep): `QUOTA_EXCEEDED`.
    QuotaExceeded(String),
    /// The upstream failed; the call is logged as `error` under `log_id`.
    Upstream {
        message: String,
        log_id: uuid::Uuid,
    },
    BadRequest(String),
    /// The server cannot take the request now (shutting down).
    Unavailable(String),
    UnsupportedMediaType(String),
    /// The client accepts none of the response types offered.
    NotAcceptable(String),
    /// Only POST may carry this request (a mutation sent with GET).
    MethodNotAllowed(String),
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

/// Which per-user call limit refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallLimitKind {
    /// Calls in flight at once (`USER_MAX_CONCURRENT_CALLS`).
    Concurrency,
    /// Calls started per minute (`USER_CALLS_PER_MINUTE`).
    Rate,
}

impl CallLimitKind {
    pub fn name(self) -> &'static str {
        match self {
            CallLimitKind::Concurrency => "concurrency",
            CallLimitKind::Rate => "rate",
        }
    }
}

impl AppError {
    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "authentication required".into(),
            AppError::NotFound => "not found".into(),
            AppError::EmailTaken => "an account with this email already exists".into(),
            AppError::InvalidCredentials => "invalid email or password".into(),
            AppError::ConversationBusy => {
                "another turn of this conversation is in flight: wait for it to finish".into()
            }
            AppError::RateLimited { retry_after_secs } => {
                format!("too many attempts, try again in {retry_after_secs} s")
            }
            AppError::BudgetExceeded { budget } => {
                format!("the monthly token budget of {budget} tokens is used up")
            }
            AppError::Upstream { message, .. } | AppError::CallLimit { message, .. } => {
                message.clone()
            }
            AppError::Forbidden(m)
            | AppError::QuotaExceeded(m)
            | AppError::BadUserInput(m)
            | AppError::BadRequest(m)
            | AppError::Unavailable(m)
            | AppError::UnsupportedMediaType(m)
            | AppError::NotAcceptable(m)
            | AppError::MethodNotAllowed(m) => m.clone(),
            AppError::Internal(_) => "internal server error".into(),
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::BadUserInput(_) => "BAD_USER_INPUT",
            AppError::NotFound => "NOT_FOUND",
            AppError::EmailTaken => "EMAIL_TAKEN",
            AppError::InvalidCredentials => "INVALID_CREDENTIALS",
            AppError::RateLimited { .. } | AppError::CallLimit { .. } => "RATE_LIMITED",
            AppError::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
            AppError::ConversationBusy => "CONVERSATION_BUSY",
            AppError::QuotaExceeded(_) => "QUOTA_EXCEEDED",
            AppError::Upstream { .. } => "UPSTREAM_ERROR",
            AppError::BadRequest(_) => "BAD_REQUEST",
            AppError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            AppError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            AppError::NotAcceptable(_) => "NOT_ACCEPTABLE",
            AppError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            AppError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Wrap an unexpected failure; it is logged when it reaches the client boundary.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        AppError::Internal(e.into())
    }

    /// Seconds after which trying again may succeed, for rate limits.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AppError::RateLimited { retry_after_secs }
            | AppError::CallLimit {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        AppError::BadUserInput(message.into())
    }

    /// The HTTP status of a response that ends with this error before any GraphQL executed
    /// (inside a GraphQL response, errors travel with the response's own status).
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::BadUserInput(_) | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::EmailTaken => StatusCode::CONFLICT,
            AppError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AppError::RateLimited { .. } | AppError::CallLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::BudgetExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            AppError::ConversationBusy | AppError::QuotaExceeded(_) => StatusCode::CONFLICT,
            AppError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A GraphQL-shaped error body (`{"errors": [{message, extensions: {code}}]}`) with the error's
/// own status, for failures before the schema runs. A 405 says which method to use.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let err = self.extend();
        let body = serde_json::json!({
            "errors": [{ "message": err.message, "extensions": err.extensions }]
        });
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if let AppError::MethodNotAllowed(_) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        if let Some(retry_after_secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        AppError::internal(e)
    }
}

impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        if let AppError::Internal(source) = self {
            tracing::error!(error = %source, detail = ?source, "internal error");
        }
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                AppError::RateLimited { retry_after_secs }
                | AppError::CallLimit {
                    retry_after_secs, ..
                } => ext.set("retryAfter", *retry_after_secs),
                AppError::Upstream { log_id, .. } => ext.set("logId", log_id.to_string()),
                _ => {}
            }
        })
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        e.extend()
    }
}

/// Shorthand for resolver and service results.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_client() {
        let e: async_graphql::Error =
            AppError::internal("password=hunter2 at db.internal:5432").into();
        assert_eq!(e.message, "internal server error");
        let ext = serde_json::to_value(&e.extensions).unwrap();
        assert_eq!(ext["code"], "INTERNAL_SERVER_ERROR");
        assert!(!format!("{ext}").contains("hunter2"));
    }

    #[test]
    fn rate_limited_says_when_to_retry() {
        let e: async_graphql::Error = AppError::RateLimited {
            retry_after_secs: 7,
        }
        .into();
        let ext = serde_json::to_value(&e.extensions).unwrap();
        assert_eq!(ext["code"], "RATE_LIMITED");
        assert_eq!(ext["retryAfter"], 7);
    }
}

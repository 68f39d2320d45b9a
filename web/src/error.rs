//! What a request that went wrong answers: a page that says what kind of mistake it was, never
//! the database's error text (which can name tables, functions or values).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tokio_postgres::error::SqlState;

#[derive(Debug)]
pub enum AppError {
    /// A parameter of the request is malformed: the message names which and why.
    BadRequest(String),
    NotFound(String),
    Forbidden(String),
    Db(tokio_postgres::Error),
    Pool(String),
    /// A fault of the dashboard itself (a template that failed to render): logged.
    Internal(String),
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> AppError {
        AppError::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> AppError {
        AppError::Pool(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    refresh: Option<u32>,
    /// Error pages carry no form.
    csrf: &'static str,
    status: u16,
    title: &'static str,
    message: String,
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            AppError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            AppError::Internal(m) => {
                eprintln!("pg_jobqueue-web: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "The dashboard failed; its log says why.".into(),
                )
            }
            AppError::Pool(m) => {
                eprintln!("pg_jobqueue-web: database connection: {m}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Database unavailable",
                    "The dashboard cannot reach its database; its log says why.".into(),
                )
            }
            AppError::Db(e) => {
                let code = e.code().cloned();
                eprintln!(
                    "pg_jobqueue-web: database error: {}",
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.to_string())
                );
                match code {
                    Some(c) if c == SqlState::INSUFFICIENT_PRIVILEGE => (
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        "The dashboard's database role may not do this.".into(),
                    ),
                    // What the extension raises for a value it refuses or a thing that is not
                    // there (class 22, 42704, 55000): the request was wrong, not the server.
                    Some(c)
                        if c.code().starts_with("22")
                            || c == SqlState::UNDEFINED_OBJECT
                            || c == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE =>
                    {
                        (
                            StatusCode::BAD_REQUEST,
                            "Refused",
                            format!("The database refused this request (SQLSTATE {}).", c.code()),
                        )
                    }
                    _ => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Server error",
                        "The database failed to answer; the dashboard's log says why.".into(),
                    ),
                }
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, message) = self.parts();
        let page = ErrorPage {
            refresh: None,
            csrf: "",
            status: status.as_u16(),
            title,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title).into_response(),
        }
    }
}

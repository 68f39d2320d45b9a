//! The dashboard's own access control: who may connect (loopback, or a token), that every
//! action comes from one of its own forms (CSRF), and the headers every page carries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AppError;
use crate::pages::AppState;

/// A dashboard that anyone on the network can reach must ask for a token: refuses to listen
/// on anything but a loopback address without one.
pub fn check_listen(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if addr.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr} without --token (or PGJQ_WEB_TOKEN): \
             only loopback addresses may go without one"
        ))
    }
}

pub struct Guard {
    token: Option<String>,
    /// The token every form carries: derived from a secret drawn at start, so it changes
    /// with each process and cannot be guessed from outside.
    csrf: String,
}

impl Guard {
    pub fn new(token: Option<String>) -> Guard {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source");
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length");
        mac.update(b"pg_jobqueue-web form token");
        let csrf = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Guard { token, csrf }
    }

    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| constant_time_eq(p.as_bytes(), self.csrf.as_bytes()))
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let presented = if let Some(bearer) = value.strip_prefix("Bearer ") {
            bearer.trim().to_owned()
        } else if let Some(basic) = value.strip_prefix("Basic ") {
            // Basic auth: the password is the token, the user name is anything.
            match STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(pair) => match pair.split_once(':') {
                    Some((_, password)) => password.to_owned(),
                    None => return false,
                },
                None => return false,
            }
        } else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), token.as_bytes())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request that changes something must come from a page of this dashboard: when the browser
/// names the page's origin (Origin, sent with every cross-origin and every form POST by
/// current browsers), it must be this host's.  The form token is checked by each action.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// Whether the request names this machine by a loopback name or address.  Without a token the
/// dashboard listens on loopback only, but a web page can still reach it through DNS
/// rebinding (a name of the attacker's that resolves to 127.0.0.1): the browser then sends
/// that name as Host, and treats the dashboard's pages as the attacker's own, readable.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(Ok(host)) = headers.get(header::HOST).map(|h| h.to_str()) else {
        return false;
    };
    // Strip the port: "[::1]:8080", "127.0.0.1:8080", "localhost:8080", or no port.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Authentication, the Host and Origin checks, and the headers of every answer.
pub async fn layer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = if state.guard.token.is_none() && !loopback_host(request.headers()) {
        AppError::Forbidden(
            "Without a token this dashboard answers only requests for a loopback host name \
             (127.0.0.1, [::1], localhost)."
                .into(),
        )
        .into_response()
    } else if !state.guard.authorized(request.headers()) {
        let mut r = (StatusCode::UNAUTHORIZED, "a token is required\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pg_jobqueue\", charset=\"UTF-8\""),
        );
        r
    } else if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !same_origin(request.headers())
    {
        AppError::Forbidden("this request came from another site's page".into()).into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_needs_a_token_off_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(check_listen(&any, None).is_err());
        assert!(check_listen(&v6, None).is_err());
        assert!(check_listen(&any, Some("t")).is_ok());
        assert!(check_listen(&lo, None).is_ok());
        assert!(check_listen(&lo6, None).is_ok());
    }

    #[test]
    fn token_as_bearer_or_basic_password() {
        let guard = Guard::new(Some("s3cret".into()));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            guard.authorized(&h)
        };
        assert!(with("Bearer s3cret"));
        assert!(with(&format!("Basic {}", STANDARD.encode("anyone:s3cret"))));
        assert!(!with("Bearer s3cre"));
        assert!(!with(&format!("Basic {}", STANDARD.encode("s3cret"))));
        assert!(!with("Basic !!!"));
        assert!(!guard.authorized(&HeaderMap::new()));
        assert!(Guard::new(None).authorized(&HeaderMap::new()));
    }

    #[test]
    fn form_tokens_differ_per_process_and_are_checked() {
        let a = Guard::new(None);
        let b = Guard::new(None);
        assert_ne!(a.csrf_token(), b.csrf_token());
        assert!(a.csrf_matches(Some(a.csrf_token())));
        assert!(!a.csrf_matches(Some(b.csrf_token())));
        assert!(!a.csrf_matches(None));
        assert!(!a.csrf_matches(Some("")));
    }

    #[test]
    fn loopback_hosts() {
        let with = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            loopback_host(&h)
        };
        for good in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "[::1]:8080",
            "127.1.2.3:9",
        ] {
            assert!(with(good), "{good}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn origin_must_be_this_host() {
        let with = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            same_origin(&h)
        };
        assert!(with(None));
        assert!(with(Some("http://127.0.0.1:8080")));
        assert!(!with(Some("http://evil.example")));
        assert!(!with(Some("null")));
        assert!(!with(Some("http://127.0.0.1:8081")));
    }
}

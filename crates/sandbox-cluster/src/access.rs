//! Who may use a sandbox: requests addressed to the loopback interface that carry the
//! sandbox's bearer token. Everything else is answered with a `Status` before it reaches
//! the routes, as a real API server's authentication filter answers 401.
//!
//! The Host check keeps web pages out: a page can make a browser send requests to
//! 127.0.0.1 under a name of its own (DNS rebinding), but cannot make it say `Host:
//! 127.0.0.1`.

use axum::http::{HeaderMap, HeaderValue, header};
use subtle::ConstantTimeEq;

use super::api_error::ApiError;

/// The sandbox's port and token, which every request must match.
#[derive(Clone)]
pub struct Access {
    port: u16,
    token: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Requests must name 127.0.0.1, localhost or `[::1]` (with `port` or no port) as their
    /// Host and carry `Authorization: Bearer TOKEN`.
    pub fn new(port: u16, token: &str) -> Self {
        Access {
            port,
            token: token.to_string(),
        }
    }

    /// Ok when a request with these headers may go on; otherwise the answer it gets.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_host(headers.get(header::HOST))?;
        self.check_token(headers.get(header::AUTHORIZATION))
    }

    fn check_host(&self, host: Option<&HeaderValue>) -> Result<(), ApiError> {
        let Some(host) = host else {
            return Err(ApiError::bad_request(
                "the request has no Host header; this sandbox answers requests for \
                 127.0.0.1, localhost or [::1] only",
            ));
        };
        let text = String::from_utf8_lossy(host.as_bytes());
        if is_loopback_authority(&text, self.port) {
            Ok(())
        } else {
            Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "the Host {text:?} is not this sandbox's address: it answers requests for \
                     127.0.0.1, localhost or [::1] (port {}) only",
                    self.port
                ),
                details: Some(serde_json::json!({})),
            })
        }
    }

    fn check_token(&self, authorization: Option<&HeaderValue>) -> Result<(), ApiError> {
        let presented = authorization.and_then(|value| {
            let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
        let why = match presented {
            // In constant time, so that how long a refusal takes tells nothing about how
            // much of the token was right.
            Some(token) if bool::from(token.as_bytes().ct_eq(self.token.as_bytes())) => {
                return Ok(());
            }
            Some(_) => "the bearer token is not this sandbox's",
            None => "the request carries no bearer token",
        };
        Err(ApiError {
            code: 401,
            reason: "Unauthorized",
            message: format!(
                "Unauthorized: {why}; use the kubeconfig the sandbox wrote in its directory"
            ),
            details: Some(serde_json::json!({})),
        })
    }
}

/// Whether `authority` (a Host header: `host[:port]`, `[v6]`, `[v6]:port`) names the
/// loopback interface, at `port` if it names a port.
fn is_loopback_authority(authority: &str, port: u16) -> bool {
    let (host, named_port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, rest)) => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            // An IPv6 address is bracketed in a Host header, or it is not one.
            Some((host, _)) if host.contains(':') => return false,
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let loopback = host == "127.0.0.1" || host == "::1" || host.eq_ignore_ascii_case("localhost");
    loopback && named_port.is_none_or(|named| named == port.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: Option<&str>, authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, host.parse().unwrap());
        }
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_loopback_names_at_the_sandboxs_port_are_accepted() {
        for host in [
            "127.0.0.1",
            "127.0.0.1:6443",
            "localhost",
            "LocalHost:6443",
            "[::1]",
            "[::1]:6443",
        ] {
            assert!(is_loopback_authority(host, 6443), "{host}");
        }
        for host in [
            "127.0.0.1:6444",
            "evil.example",
            "evil.example:6443",
            "127.0.0.1.evil.example",
            "localhost.",
            "[::1]6443",
            "[::1",
            "::1:6443",
            "127.0.0.2:6443",
            "",
        ] {
            assert!(!is_loopback_authority(host, 6443), "{host}");
        }
    }

    #[test]
    fn a_request_needs_the_token_and_a_loopback_host() {
        let access = Access::new(6443, "s3cret");
        assert_eq!(
            access.check(&headers(Some("127.0.0.1:6443"), Some("Bearer s3cret"))),
            Ok(())
        );
        assert_eq!(
            access.check(&headers(Some("localhost"), Some("bearer s3cret"))),
            Ok(())
        );
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Basic s3cret"),
        ] {
            let error = access
                .check(&headers(Some("127.0.0.1:6443"), authorization))
                .unwrap_err();
            assert_eq!(
                (error.code, error.reason),
                (401, "Unauthorized"),
                "{authorization:?}"
            );
        }
        let error = access
            .check(&headers(Some("evil.example"), Some("Bearer s3cret")))
            .unwrap_err();
        assert_eq!(error.code, 403);
        assert!(
            error.message.contains("\"evil.example\""),
            "{}",
            error.message
        );
        assert_eq!(
            access
                .check(&headers(None, Some("Bearer s3cret")))
                .unwrap_err()
                .code,
            400
        );
    }
}

//! The live view's checks, as pure functions of a request's headers: which
//! `Host` (and `Origin`) the server answers to, and the bearer token.
//!
//! - **Hosts.** A request is served only when its `Host` header (and the
//!   authority of an absolute request URI, if any) is one of: the bound
//!   address, the address as configured (`localhost:9898`), `localhost`,
//!   `127.0.0.1` and `[::1]` with the bound port (without it too when the port
//!   is 80), and the `[runtime] http_allowed_hosts` entries (an entry without a
//!   port also matches with the bound port). Compared case-insensitively. This
//!   is what stops DNS rebinding: a page on `attacker.example` that resolves to
//!   127.0.0.1 still sends `Host: attacker.example`.
//! - **Origins.** A request to a protected endpoint (`/tap/*`, `POST
//!   /promote`) that carries an `Origin` header is refused unless the origin
//!   is `http://` or `https://` followed by an allowed host (`null` is never
//!   one). No CORS header is ever sent, so browsers keep other sites from
//!   reading any answer.
//! - **Token.** [`Token`] holds the secret; its `Debug` prints no part of it,
//!   and only [`Token::bearer`] renders it, for the client's header. `Authorization: Bearer <token>` is compared in
//!   constant time (the length may show; the bytes do not).

use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode, Uri};
use subtle::ConstantTimeEq;

/// The fewest characters a token may have.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The live view's bearer token, read from the environment.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why an environment variable does not hold a usable token (the user's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    /// Not a variable name at all (perhaps the token was given instead).
    #[error("is not the name of an environment variable (ASCII letters, digits and `_`); give the variable's NAME, never the token itself")]
    BadName,
    /// The variable is not set, or is not UTF-8.
    #[error("is not set")]
    Unset,
    /// The variable is set to nothing.
    #[error("is empty")]
    Empty,
    /// Fewer than [`MIN_TOKEN_CHARS`] characters.
    #[error(
        "holds fewer than 16 characters: use a long random token (e.g. `openssl rand -hex 32`)"
    )]
    TooShort,
    /// Spaces, control or non-ASCII characters: it could not travel in a header.
    #[error("holds characters other than visible ASCII (no spaces): it must fit in an `Authorization` header")]
    NotHeaderSafe,
}

impl Token {
    /// The token in the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Token, TokenProblem> {
        if !crate::topology::is_env_name(name) {
            return Err(TokenProblem::BadName);
        }
        let value = std::env::var(name).map_err(|_| TokenProblem::Unset)?;
        Token::new(value)
    }

    /// `value` as a token, if it can be one.
    pub fn new(value: String) -> Result<Token, TokenProblem> {
        if value.is_empty() {
            return Err(TokenProblem::Empty);
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenProblem::NotHeaderSafe);
        }
        if value.len() < MIN_TOKEN_CHARS {
            return Err(TokenProblem::TooShort);
        }
        Ok(Token(value))
    }

    /// The `Authorization` header value that carries it (for the client).
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `headers` carry this token as `Authorization: Bearer <token>`.
    fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(AUTHORIZATION).map(|v| v.as_bytes()) else {
            return false;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some(given) = given
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &given[7..])
        else {
            return false;
        };
        bool::from(given.ct_eq(self.0.as_bytes()))
    }
}

/// A request refused by a check: the status and the sentence sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401, 403 or 421.
    pub status: StatusCode,
    /// What was wrong and what to do, one line.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// The `Host` values the server answers to, lowercase.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The hosts of a server bound to `bound`, configured as `configured`
    /// (`host:port` as the user wrote it), with the extra `entries`.
    pub fn new(bound: std::net::SocketAddr, configured: &str, entries: &[String]) -> AllowedHosts {
        let port = bound.port();
        let mut names: Vec<String> = vec![bound.to_string()];
        // The name the user gave (`localhost:9898`, `myhost:0`), with the real port.
        if let Some((host, _)) = configured.rsplit_once(':') {
            if !host.is_empty() {
                names.push(format!("{host}:{port}"));
            }
        }
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            names.push(format!("{name}:{port}"));
            if port == 80 {
                names.push(name.to_string());
            }
        }
        for e in entries {
            names.push(e.clone());
            let has_port = match e.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => e.contains(':'),
            };
            if !has_port {
                names.push(format!("{e}:{port}"));
            }
        }
        let mut names: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        AllowedHosts(names)
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.contains(&host)
    }

    /// Every request: its `Host` (and absolute URI) must be an allowed host.
    pub fn check_host(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
        let refused = || {
            Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "This live view does not answer to that Host; it answers to {} (add names to `[runtime] http_allowed_hosts`).",
                    self.0.join(", ")
                ),
            )
        };
        let Some(host) = headers.get(HOST) else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "A Host header is required.",
            ));
        };
        let host = host.to_str().map_err(|_| refused())?;
        if !self.allows(host) {
            return Err(refused());
        }
        if let Some(authority) = uri.authority() {
            if !self.allows(authority.as_str()) {
                return Err(refused());
            }
        }
        Ok(())
    }

    /// Protected endpoints: an `Origin`, when there is one, must be an allowed host.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let host = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")));
        match host {
            Some(h) if !h.contains('/') && self.allows(h) => Ok(()),
            _ => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "Requests from other web origins are refused here (the Origin header is not one of this live view's hosts).",
            )),
        }
    }
}

/// Checks the bearer token of a request to `what` (e.g. `POST /promote`):
/// 401 when it is missing or wrong.
pub fn check_token(token: &Token, headers: &HeaderMap, what: &str) -> Result<(), Refusal> {
    if token.matches(headers) {
        return Ok(());
    }
    let message = if headers.contains_key(AUTHORIZATION) {
        format!("{what}: the token is wrong.")
    } else {
        format!(
            "{what} needs the live view's token: send `Authorization: Bearer <token>` (the command line: `--http-token-env NAME`)."
        )
    };
    Err(Refusal::new(StatusCode::UNAUTHORIZED, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn hosts() -> AllowedHosts {
        AllowedHosts::new(
            "127.0.0.1:9898".parse().unwrap(),
            "localhost:0",
            &["Millrace.Internal".to_string(), "10.0.0.5:7000".to_string()],
        )
    }

    #[test]
    fn only_the_servers_own_names_are_answered() {
        let h = hosts();
        let root: Uri = "/".parse().unwrap();
        for ok in [
            "127.0.0.1:9898",
            "localhost:9898",
            "LOCALHOST:9898",
            "[::1]:9898",
            "millrace.internal",
            "millrace.internal:9898",
            "10.0.0.5:7000",
        ] {
            assert!(h.check_host(&headers(&[(HOST, ok)]), &root).is_ok(), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9898",
            "127.0.0.1",
            "127.0.0.1:9899",
            "10.0.0.5",
            "localhost.attacker.example:9898",
        ] {
            let r = h.check_host(&headers(&[(HOST, bad)]), &root).unwrap_err();
            assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{bad}");
            assert!(!r.message.contains("attacker"), "the header is not echoed");
        }
        assert_eq!(
            h.check_host(&HeaderMap::new(), &root).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        // An absolute request URI's authority counts too.
        let absolute: Uri = "http://attacker.example/tap/clean".parse().unwrap();
        assert!(h
            .check_host(&headers(&[(HOST, "127.0.0.1:9898")]), &absolute)
            .is_err());
    }

    #[test]
    fn foreign_origins_are_refused() {
        let h = hosts();
        assert!(h.check_origin(&HeaderMap::new()).is_ok());
        assert!(h
            .check_origin(&headers(&[(ORIGIN, "http://127.0.0.1:9898")]))
            .is_ok());
        assert!(h
            .check_origin(&headers(&[(ORIGIN, "https://millrace.internal")]))
            .is_ok());
        for bad in [
            "http://evil.example",
            "null",
            "127.0.0.1:9898",
            "http://127.0.0.1:9898/x",
            "file://",
        ] {
            let r = h.check_origin(&headers(&[(ORIGIN, bad)])).unwrap_err();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}");
        }
    }

    #[test]
    fn the_token_is_checked_and_never_shown() {
        let t = Token::new("0123456789abcdef-secret".to_string()).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        let ok = headers(&[(AUTHORIZATION, "Bearer 0123456789abcdef-secret")]);
        assert!(check_token(&t, &ok, "x").is_ok());
        let lower = headers(&[(AUTHORIZATION, "bearer 0123456789abcdef-secret")]);
        assert!(check_token(&t, &lower, "x").is_ok());
        for bad in [
            "Bearer 0123456789abcdef-secreT",
            "Bearer 0123456789abcdef-secret ",
            "Bearer ",
            "Basic 0123456789abcdef-secret",
            "0123456789abcdef-secret",
        ] {
            let r = check_token(&t, &headers(&[(AUTHORIZATION, bad)]), "x").unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
            assert!(!r.message.contains("secret"));
        }
        assert_eq!(
            check_token(&t, &HeaderMap::new(), "x").unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            Token::new("short".into()).unwrap_err(),
            TokenProblem::TooShort
        );
        assert_eq!(Token::new(String::new()).unwrap_err(), TokenProblem::Empty);
        assert_eq!(
            Token::new("has a space in it, long enough".into()).unwrap_err(),
            TokenProblem::NotHeaderSafe
        );
        assert_eq!(
            Token::from_env("not a name").unwrap_err(),
            TokenProblem::BadName
        );
        assert_eq!(
            Token::from_env("MILLRACE_SURELY_UNSET_VARIABLE_FOR_TESTS").unwrap_err(),
            TokenProblem::Unset
        );
    }
}

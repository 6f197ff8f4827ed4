//! Who may do what: bearer tokens with three roles.
//!
//! A node started with `--auth-token-file FILE` reads lines `ROLE TOKEN`
//! (`#` comments and blank lines allowed), roles `read` < `write` <
//! `admin`, each role including the ones below it. Every HTTP request but
//! the liveness probe `GET /health` must carry `Authorization: Bearer
//! TOKEN`; every binary-protocol connection must send an AUTH frame first.
//! Without a token file everything is allowed, and the node refuses to
//! listen beyond loopback unless told `--insecure` (see `cairn node`).
//!
//! What a request needs is decided by one rule, secure by default, so a
//! route added later cannot be forgotten open:
//!
//! - reads (`GET`, `HEAD`) need `read`, except the dashboard's static
//!   files (`/`, `/ui/…`: no data in them; the page then asks for a token);
//! - appends (`POST …/entries`, the binary APPEND) need `write`;
//! - everything else that changes state needs `admin`: stream creation and
//!   deletion, faults, join, decommission, anti-entropy scans, stage
//!   timing, and whatever comes next (leader moves, remediation).
//!
//! A missing or unknown token is 401 `unauthorized`; a known token whose
//! role is too low is 403 `forbidden`. Tokens are compared in constant
//! time. Requests a node forwards to a peer over HTTP (reads it cannot
//! serve itself) carry the strongest token of its own file, so every node
//! of a cluster must be given the same file; the caller was already
//! checked for the forwarded operation where it arrived.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use axum::http::Method;

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role an HTTP request needs, `None` for the open liveness probe.
    pub fn required_for(method: &Method, path: &str) -> Option<Role> {
        let read_only = method == Method::GET || method == Method::HEAD;
        // The dashboard's files are the binary's own bytes, no data: the
        // page must load before it can ask for a token.
        let dashboard = path == "/" || path == "/ui" || path.starts_with("/ui/");
        if read_only && (path == "/health" || dashboard) {
            return None;
        }
        Some(if method == Method::GET || method == Method::HEAD {
            Role::Read
        } else if method == Method::POST && is_append_path(path) {
            Role::Write
        } else {
            Role::Admin
        })
    }
}

/// `/v1/streams/{name}/entries`, exactly (a name cannot contain `/`).
fn is_append_path(path: &str) -> bool {
    path.strip_prefix("/v1/streams/")
        .and_then(|rest| rest.strip_suffix("/entries"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected read, write or admin)"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("read token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file line {line}: {reason}")]
    Parse { line: usize, reason: String },
}

/// The tokens of a token file.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(Role, Vec<u8>)>,
}

// Never print tokens, not even in debug output.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

/// Shorter tokens are refused: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Tokens, AuthError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason: String| AuthError::Parse {
                line: i + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(fail("expected `ROLE TOKEN`".into()));
            };
            let role: Role = role.parse().map_err(fail)?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(fail(format!(
                    "token shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            if entries
                .iter()
                .any(|(_, t): &(Role, Vec<u8>)| t == token.as_bytes())
            {
                return Err(fail("token listed twice".into()));
            }
            entries.push((role, token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(AuthError::Parse {
                line: 0,
                reason: "no tokens: a token file needs at least one `ROLE TOKEN` line".into(),
            });
        }
        Ok(Tokens { entries })
    }

    /// The role of `token`, if it is one of ours. Every entry is compared,
    /// each in constant time, so the answer's timing tells nothing about
    /// how close a guess was.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let mut found = None;
        for (role, known) in &self.entries {
            if constant_time_eq(known, token) {
                found = Some(*role);
            }
        }
        found
    }

    /// The token this node uses for requests it forwards to its peers: the
    /// strongest in the file.
    pub fn forwarding_token(&self) -> &str {
        let (_, token) = self
            .entries
            .iter()
            .max_by_key(|(role, _)| *role)
            .expect("parse refuses an empty file");
        std::str::from_utf8(token).expect("parsed from a str")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or one that is not ours (401).
    Unauthenticated,
    /// A valid token whose role is below `needed` (403).
    Forbidden {
        role: Role,
        needed: Role,
    },
}

/// Access control as the node applies it; `None` tokens allow everything.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Option<Tokens>,
}

impl Access {
    pub fn new(tokens: Option<Tokens>) -> Access {
        Access { tokens }
    }

    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn forwarding_token(&self) -> Option<&str> {
        self.tokens.as_ref().map(Tokens::forwarding_token)
    }

    /// Whether a caller presenting `token` may do what needs `needed`.
    pub fn check(&self, token: Option<&[u8]>, needed: Option<Role>) -> Verdict {
        let (Some(tokens), Some(needed)) = (&self.tokens, needed) else {
            return Verdict::Allowed;
        };
        match token.and_then(|t| tokens.role_of(t)) {
            None => Verdict::Unauthenticated,
            Some(role) if role >= needed => Verdict::Allowed,
            Some(role) => Verdict::Forbidden { role, needed },
        }
    }

    /// `check` for an HTTP request with its `Authorization` header value.
    pub fn check_http(&self, method: &Method, path: &str, authorization: Option<&[u8]>) -> Verdict {
        let token = authorization.and_then(|h| h.strip_prefix(b"Bearer "));
        self.check(token, Role::required_for(method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# ops\nadmin aaaaaaaaaaaaaaaaaaaa\n\nwrite wwwwwwwwwwwwwwwwwwww\nread  rrrrrrrrrrrrrrrrrrrr\n";

    #[test]
    fn every_route_class_needs_its_role() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/", None),
            (Method::GET, "/ui/", None),
            (Method::GET, "/ui/app.js", None),
            (Method::POST, "/ui/app.js", Some(Role::Admin)),
            (Method::GET, "/uidata", Some(Role::Read)),
            (Method::GET, "/v1/health", Some(Role::Read)),
            (Method::GET, "/metrics", Some(Role::Read)),
            (Method::GET, "/v1/streams/app/query", Some(Role::Read)),
            (Method::POST, "/v1/streams/app/entries", Some(Role::Write)),
            (Method::POST, "/v1/streams", Some(Role::Admin)),
            (Method::DELETE, "/v1/streams/app", Some(Role::Admin)),
            (Method::POST, "/v1/faults/network", Some(Role::Admin)),
            (Method::DELETE, "/v1/faults/disk", Some(Role::Admin)),
            (Method::POST, "/v1/cluster/join", Some(Role::Admin)),
            (
                Method::POST,
                "/v1/cluster/nodes/2/decommission",
                Some(Role::Admin),
            ),
            (Method::POST, "/v1/anti-entropy/scan", Some(Role::Admin)),
            (Method::PUT, "/v1/telemetry/stage-timing", Some(Role::Admin)),
            // Not an append path, so the default for changes applies.
            (Method::POST, "/v1/streams/a/b/entries", Some(Role::Admin)),
            (Method::POST, "/v1/streams//entries", Some(Role::Admin)),
            (Method::POST, "/health", Some(Role::Admin)),
        ];
        for (method, path, want) in cases {
            assert_eq!(Role::required_for(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn tokens_grant_their_role_and_those_below() {
        let access = Access::new(Some(Tokens::parse(FILE).unwrap()));
        let admin = Some(&b"aaaaaaaaaaaaaaaaaaaa"[..]);
        let write = Some(&b"wwwwwwwwwwwwwwwwwwww"[..]);
        let read = Some(&b"rrrrrrrrrrrrrrrrrrrr"[..]);
        assert_eq!(access.check(admin, Some(Role::Admin)), Verdict::Allowed);
        assert_eq!(access.check(write, Some(Role::Write)), Verdict::Allowed);
        assert_eq!(access.check(write, Some(Role::Read)), Verdict::Allowed);
        assert_eq!(
            access.check(write, Some(Role::Admin)),
            Verdict::Forbidden {
                role: Role::Write,
                needed: Role::Admin
            }
        );
        assert_eq!(
            access.check(read, Some(Role::Write)),
            Verdict::Forbidden {
                role: Role::Read,
                needed: Role::Write
            }
        );
        assert_eq!(
            access.check(None, Some(Role::Read)),
            Verdict::Unauthenticated
        );
        assert_eq!(
            access.check(Some(&b"aaaaaaaaaaaaaaaaaaab"[..]), Some(Role::Read)),
            Verdict::Unauthenticated
        );
        assert_eq!(access.check(None, None), Verdict::Allowed);
        assert_eq!(access.forwarding_token(), Some("aaaaaaaaaaaaaaaaaaaa"));
        assert_eq!(
            access.check_http(
                &Method::POST,
                "/v1/streams",
                Some(b"Bearer aaaaaaaaaaaaaaaaaaaa")
            ),
            Verdict::Allowed
        );
        assert_eq!(
            access.check_http(&Method::POST, "/v1/streams", Some(b"aaaaaaaaaaaaaaaaaaaa")),
            Verdict::Unauthenticated
        );
        // No token file: everything goes.
        assert_eq!(
            Access::default().check(None, Some(Role::Admin)),
            Verdict::Allowed
        );
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        for (text, line, needle) in [
            ("root aaaaaaaaaaaaaaaaaaaa\n", 1, "unknown role"),
            ("# c\nadmin short\n", 2, "shorter"),
            ("admin\n", 1, "ROLE TOKEN"),
            ("admin a b\n", 1, "ROLE TOKEN"),
            (
                "admin aaaaaaaaaaaaaaaaaaaa\nread aaaaaaaaaaaaaaaaaaaa\n",
                2,
                "twice",
            ),
            ("# nothing\n", 0, "no tokens"),
        ] {
            match Tokens::parse(text) {
                Err(AuthError::Parse { line: l, reason }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(reason.contains(needle), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // Debug output never shows a token.
        let tokens = Tokens::parse(FILE).unwrap();
        assert!(!format!("{tokens:?}").contains("aaaa"));
    }
}

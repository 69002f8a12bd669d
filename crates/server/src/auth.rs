//! Who may call what: bearer tokens with roles, checked before any handler runs.
//!
//! The token file holds one line per token: the lowercase hex SHA-256 of the token, its role,
//! and an optional name (`#` starts a comment). The tokens themselves are never stored, never
//! logged, and compared in constant time (by their hashes, against every entry). Roles nest:
//! `admin` may do everything, `writer` what a reader may plus Append and Load, `reader` Get,
//! Watch, Snapshot and the integrity queries. `peer` stands apart: another cluster node, which
//! may call the internal service (`converge.cluster.v1.Peer`) and nothing else, and no other
//! role may call that service. Every RPC the server answers has an entry in
//! [`POLICY`]; one without an entry is denied, so a new RPC starts closed. The file is re-read
//! on SIGHUP ([`TokenStore::reload`]); a file that does not parse leaves the old tokens in place.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tonic::Status;
use tonic::codegen::http;

/// A role: `reader`, `writer` and `admin` from least to most privileged, and `peer` apart
/// (another node of the cluster: the internal service and nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Another cluster node: the internal service (`converge.cluster.v1.Peer`) only.
    Peer,
    /// Reads: Get, Watch, Snapshot, `ListContexts`, tree heads and proofs, reflection.
    Reader,
    /// Reads, Append and Load.
    Writer,
    /// Everything.
    Admin,
}

impl Role {
    /// The role a token-file word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "admin" => Some(Self::Admin),
            "peer" => Some(Self::Peer),
            _ => None,
        }
    }

    /// The token-file word for this role.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
            Self::Peer => "peer",
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone (health checks, so load balancers need no credentials).
    Public,
    /// At least this role (never `peer`).
    Role(Role),
    /// The `peer` role and no other.
    Peer,
}

/// Every RPC the server answers, by HTTP/2 path, and what it needs.
pub const POLICY: &[(&str, Requirement)] = &[
    ("/converge.context.v1.ContextService/Append", Requirement::Role(Role::Writer)),
    ("/converge.context.v1.ContextService/AppendStream", Requirement::Role(Role::Writer)),
    ("/converge.context.v1.ContextService/Load", Requirement::Role(Role::Writer)),
    ("/converge.context.v1.ContextService/Get", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.ContextService/Watch", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.ContextService/Snapshot", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.ContextService/ListContexts", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.IntegrityService/GetTreeHead", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.IntegrityService/ProveInclusion", Requirement::Role(Role::Reader)),
    ("/converge.context.v1.IntegrityService/ProveConsistency", Requirement::Role(Role::Reader)),
    ("/converge.cluster.v1.Admin/Status", Requirement::Role(Role::Reader)),
    ("/converge.cluster.v1.Admin/Remove", Requirement::Role(Role::Admin)),
    ("/converge.cluster.v1.Admin/SetLimits", Requirement::Role(Role::Admin)),
    ("/converge.cluster.v1.Peer/AppendEntries", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Vote", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Forward", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Join", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Remove", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Status", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Elect", Requirement::Peer),
    ("/converge.cluster.v1.Peer/Membership", Requirement::Peer),
    ("/grpc.health.v1.Health/Check", Requirement::Public),
    ("/grpc.health.v1.Health/Watch", Requirement::Public),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Requirement::Role(Role::Reader)),
];

/// What `path` needs, if it is an RPC the server knows.
pub fn requirement(path: &str) -> Option<Requirement> {
    POLICY.iter().find(|(p, _)| *p == path).map(|(_, r)| *r)
}

/// A token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line does not parse.
    #[error(
        "{path}:{line}: {reason} (lines are `<sha256 hex of the token> <reader|writer|admin> [name]`)"
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

struct Token {
    hash: [u8; 32],
    role: Role,
}

/// The tokens the server accepts, re-readable while it runs.
pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<Vec<Token>>,
}

/// The SHA-256 of a token, as the token file stores it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse(path: &Path, text: &str) -> Result<Vec<Token>, TokenFileError> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: &str| TokenFileError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.into(),
        };
        let mut words = line.split_whitespace();
        let hex = words.next().ok_or_else(|| bad("empty line"))?;
        let hash = converge_core::hex::decode(hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("the first word must be 64 hex digits"))?;
        let role = words
            .next()
            .and_then(Role::parse)
            .ok_or_else(|| bad("the second word must be reader, writer or admin"))?;
        tokens.push(Token { hash, role });
    }
    Ok(tokens)
}

impl TokenStore {
    /// Reads the token file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let tokens = Self::read(&path)?;
        Ok(Self { path, tokens: RwLock::new(tokens) })
    }

    fn read(path: &Path) -> Result<Vec<Token>, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: path.to_path_buf(), source })?;
        parse(path, &text)
    }

    /// Re-reads the file; on failure keeps the tokens it had. Returns how many tokens it holds.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let tokens = Self::read(&self.path)?;
        let count = tokens.len();
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = tokens;
        Ok(count)
    }

    /// How many tokens are loaded.
    pub fn len(&self) -> usize {
        self.tokens.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no token is loaded (every protected call is then refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The role of `token`, comparing its hash with every entry in constant time.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = token_hash(token);
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for entry in tokens.iter() {
            // No early exit, no data-dependent branch in the comparison.
            let diff = entry.hash.iter().zip(&presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let equal = diff == 0;
            found = if equal { Some(entry.role).max(found) } else { found };
        }
        found
    }
}

/// Checks a call against the policy: `Ok` to let it through, or the status to answer.
pub fn check(tokens: &TokenStore, path: &str, authorization: Option<&[u8]>) -> Result<(), Status> {
    let Some(requirement) = requirement(path) else {
        return Err(Status::permission_denied(format!(
            "{path} has no access policy on this server, so it is denied"
        )));
    };
    if requirement == Requirement::Public {
        return Ok(());
    }
    let Some(header) = authorization else {
        return Err(Status::unauthenticated(
            "this server requires a token: send `authorization: Bearer <token>`",
        ));
    };
    let token = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| {
            Status::unauthenticated("the authorization header must be `Bearer <token>`")
        })?;
    let role = tokens
        .role_of(token)
        .ok_or_else(|| Status::unauthenticated("the token is not valid on this server"))?;
    let needed = match requirement {
        Requirement::Public => return Ok(()),
        Requirement::Peer => Role::Peer,
        Requirement::Role(needed) => needed,
    };
    // A peer token opens the internal service only, and only a peer token opens it.
    let allowed =
        if needed == Role::Peer || role == Role::Peer { role == needed } else { role >= needed };
    if allowed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "a {} token may not call {path}; it needs the {} role",
            role.name(),
            needed.name()
        )))
    }
}

/// Counts refused calls.
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// Refused with `UNAUTHENTICATED`.
    pub unauthenticated: AtomicU64,
    /// Refused with `PERMISSION_DENIED`.
    pub denied: AtomicU64,
}

/// The tower layer that checks every call (when tokens are configured).
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<TokenStore>>,
    counters: Arc<AuthCounters>,
}

impl AuthLayer {
    /// Checks calls against `tokens`; with `None`, lets everything through.
    pub fn new(tokens: Option<Arc<TokenStore>>, counters: Arc<AuthCounters>) -> Self {
        Self { tokens, counters }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, tokens: self.tokens.clone(), counters: Arc::clone(&self.counters) }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<TokenStore>>,
    counters: Arc<AuthCounters>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            let header =
                request.headers().get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes);
            if let Err(status) = check(tokens, request.uri().path(), header) {
                let counter = if status.code() == tonic::Code::Unauthenticated {
                    &self.counters.unauthenticated
                } else {
                    &self.counters.denied
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(lines: &str) -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, lines).unwrap();
        let store = TokenStore::open(&path).unwrap();
        (dir, store)
    }

    fn line(token: &str, role: &str) -> String {
        format!("{} {role} {token}-name\n", converge_core::hex::encode(&token_hash(token)))
    }

    #[test]
    fn roles_nest_and_unknown_tokens_are_refused() {
        let (_dir, tokens) = store(
            &(line("r", "reader") + &line("w", "writer") + "# a comment\n\n" + &line("a", "admin")),
        );
        assert_eq!(tokens.len(), 3);
        let append = "/converge.context.v1.ContextService/Append";
        let get = "/converge.context.v1.ContextService/Get";
        assert!(check(&tokens, get, Some(b"Bearer r")).is_ok());
        assert_eq!(
            check(&tokens, append, Some(b"Bearer r")).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert!(check(&tokens, append, Some(b"Bearer w")).is_ok());
        assert!(check(&tokens, append, Some(b"Bearer a")).is_ok());
        assert_eq!(
            check(&tokens, get, Some(b"Bearer nope")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(check(&tokens, get, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(
            check(&tokens, get, Some(b"Basic dXNlcg==")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(check(&tokens, "/grpc.health.v1.Health/Check", None).is_ok(), "health is public");
        assert_eq!(
            check(&tokens, "/converge.context.v1.ContextService/Delete", Some(b"Bearer a"))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied,
            "no policy, no call"
        );
    }

    #[test]
    fn a_bad_file_names_the_line_and_a_failed_reload_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "abc writer\n").unwrap();
        let err = TokenStore::open(&path).err().unwrap();
        assert!(
            err.to_string().contains(":1:") && err.to_string().contains("64 hex digits"),
            "{err}"
        );
        std::fs::write(&path, line("t", "reader")).unwrap();
        let tokens = TokenStore::open(&path).unwrap();
        std::fs::write(&path, line("t", "reader") + "zz nobody\n").unwrap();
        assert!(tokens.reload().is_err());
        assert_eq!(tokens.role_of("t"), Some(Role::Reader), "the old tokens stay");
        std::fs::write(&path, line("u", "writer")).unwrap();
        assert_eq!(tokens.reload().unwrap(), 1);
        assert_eq!((tokens.role_of("t"), tokens.role_of("u")), (None, Some(Role::Writer)));
    }
}

#[cfg(test)]
mod policy_tests {
    use prost::Message as _;

    use super::*;

    /// Every RPC of every service the server registers, from their descriptors.
    fn served_rpcs() -> Vec<String> {
        let sets = [
            converge_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ];
        let mut paths = Vec::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        paths
    }

    #[test]
    fn every_served_rpc_has_a_policy_entry_and_every_entry_an_rpc() {
        let served = served_rpcs();
        assert!(served.len() >= 10, "{served:?}");
        for path in &served {
            assert!(
                requirement(path).is_some(),
                "{path} has no policy entry: add one to POLICY (it is denied until then)"
            );
        }
        for (path, _) in POLICY {
            assert!(
                served.iter().any(|s| s == path),
                "POLICY names {path}, which the server does not serve"
            );
        }
    }
}

//! The HTTP API of `shared/spec/node-api.md`, served with axum.
//!
//! ```text
//!  request ─▶ observe (metrics, X-Raft-Leader) ─▶ handler
//!     handler ─▶ Raft (apply / read_index / add_voter ...)
//!        Ok ─────────────────────────────────────────▶ answer
//!        NotLeader{leader} ─▶ forward to the leader's http_addr (from the KV
//!                             table), once, marked X-Raftkit-Forwarded ─▶ its answer
//! ```
//!
//! A forwarded request that reaches a node that is not the leader either is
//! answered 503 (with `Retry-After`) rather than forwarded again, so a
//! request hops at most once and is never proposed twice by this node.

// Handlers return early with a ready `Response` as the error of small
// parsing helpers; its size is no concern on this path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use raftkit::{NodeId, Raft, RaftError};
use serde::Deserialize;
use serde_json::json;

use crate::kv::{KvReader, KvResponse};

mod admin;
mod kv;

use admin::{
    add_nonvoter, add_voter, cluster, demote, metrics, ready, remove, set_http_addr, snapshot,
    transfer,
};
pub use kv::Consistency;
use kv::{cas_kv, delete_kv, get_kv, put_kv};

/// Names the leader that served a request.
pub const LEADER_HEADER: &str = "x-raft-leader";
/// On stale reads: the index the local state machine has applied.
pub const APPLIED_HEADER: &str = "x-raft-applied-index";
/// Marks a request one node forwarded to the leader.
pub const FORWARDED_HEADER: &str = "x-raftkit-forwarded";
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Extra time a forwarding node waits beyond the leader's own deadline, so
/// the leader's answer (a 504 included) comes back rather than our guess.
const FORWARD_SLACK: Duration = Duration::from_secs(1);
/// Room for JSON framing around a CAS value.
const JSON_SLACK_BYTES: usize = 64 << 10;

/// What every handler shares.
pub struct Api {
    /// The Raft server.
    pub raft: Raft<KvResponse>,
    /// The state machine's read side.
    pub kv: KvReader,
    /// This server's id.
    pub id: NodeId,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Deadline for commits, read points and admin calls.
    pub request_timeout: Duration,
    /// The client that forwards to the leader.
    pub client: reqwest::Client,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// `"tcp"`, ... for `GET /cluster`.
    pub transport: &'static str,
    /// `"file"`, ... for `GET /cluster`.
    pub storage: &'static str,
}

/// The router with every route of the spec.
pub fn router(api: Arc<Api>) -> Router {
    let limit = api.max_value_bytes.saturating_add(JSON_SLACK_BYTES);
    Router::new()
        .route("/kv/{key}", get(get_kv).put(put_kv).delete(delete_kv))
        .route("/kv/{key}/cas", post(cas_kv))
        .route("/cluster", get(cluster))
        .route("/cluster/voters", post(add_voter))
        .route("/cluster/nonvoters", post(add_nonvoter))
        .route("/cluster/servers/{id}/demote", post(demote))
        .route("/cluster/servers/{id}", delete(remove))
        .route("/cluster/servers/{id}/http-addr", put(set_http_addr))
        .route("/cluster/leadership-transfer", post(transfer))
        .route("/cluster/snapshot", post(snapshot))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(api.clone(), observe))
        .with_state(api)
}

/// The parts of a request needed to forward it.
pub(crate) struct Req {
    method: Method,
    uri: Uri,
    content_type: Option<HeaderValue>,
    pub(crate) forwarded: bool,
    pub(crate) body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Req, Response> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers: &HeaderMap = req.headers();
        let content_type = headers.get(header::CONTENT_TYPE).cloned();
        let forwarded = headers.contains_key(FORWARDED_HEADER);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Req {
            method,
            uri,
            content_type,
            forwarded,
            body,
        })
    }
}

async fn observe(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let mut response = next.run(req).await;
    if !response.headers().contains_key(LEADER_HEADER) {
        if let Some((leader, _)) = api.raft.leader() {
            if let Ok(value) = HeaderValue::from_str(leader.as_str()) {
                response.headers_mut().insert(LEADER_HEADER, value);
            }
        }
    }
    crate::metrics::record_request(&route, method.as_str(), response.status().as_u16(), started);
    response
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

pub(crate) fn unavailable(message: impl std::fmt::Display) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub(crate) fn raft_error(e: RaftError) -> Response {
    match e {
        RaftError::NotLeader { leader: None } => unavailable("no leader known"),
        // Worth a retry later (ConfigChangeInProgress: too many membership
        // changes already wait their turn).
        RaftError::NotLeader { .. }
        | RaftError::Shutdown
        | RaftError::LeadershipTransferInProgress
        | RaftError::LeadershipTransferFailed
        | RaftError::ConfigChangeInProgress => unavailable(e),
        RaftError::Timeout | RaftError::LeadershipLost => error(StatusCode::GATEWAY_TIMEOUT, e),
        RaftError::ConfigurationChanged { .. }
        | RaftError::CantBootstrap
        | RaftError::NothingNewToSnapshot => error(StatusCode::CONFLICT, e),
        RaftError::Invalid(_) => error(StatusCode::BAD_REQUEST, e),
        RaftError::Storage(_)
        | RaftError::Fsm(_)
        | RaftError::Config(_)
        | RaftError::Restore(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

pub(crate) fn timed_out() -> Response {
    raft_error(RaftError::Timeout)
}

pub(crate) fn key_bytes(key: &str) -> Result<Bytes, Response> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format_args!("key must be 1..={MAX_KEY_BYTES} bytes, got {}", key.len()),
        ));
    }
    Ok(Bytes::copy_from_slice(key.as_bytes()))
}

pub(crate) fn too_large(len: usize, max: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format_args!("value of {len} bytes exceeds max_value_bytes {max}"),
    )
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format_args!("bad JSON body: {e}")))
}

impl Api {
    /// Answers `e`, forwarding the request to the leader when `e` says this
    /// node is not it.
    pub(crate) async fn or_forward(&self, req: &Req, e: RaftError) -> Response {
        match e {
            RaftError::NotLeader { leader } => self.forward(leader.map(|l| l.0), req).await,
            other => raft_error(other),
        }
    }

    pub(crate) async fn forward(&self, leader: Option<NodeId>, req: &Req) -> Response {
        let Some(leader) = leader else {
            return unavailable("no leader known");
        };
        if req.forwarded || leader == self.id {
            return unavailable(format_args!("leader {leader} is changing; retry"));
        }
        let Some(addr) = self.kv.http_addr(leader.as_str()) else {
            return unavailable(format_args!(
                "the HTTP address of leader {leader} is not known yet"
            ));
        };
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .client
            .request(req.method.clone(), format!("http://{addr}{path}"))
            .header(FORWARDED_HEADER, self.id.as_str())
            .timeout(self.request_timeout + FORWARD_SLACK)
            .body(req.body.clone());
        if let Some(ct) = &req.content_type {
            request = request.header(header::CONTENT_TYPE, ct.clone());
        }
        let sent = request.send().await;
        let is_read = req.method == Method::GET;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return unavailable(format_args!("leader {leader} at {addr} unreachable: {e}"))
            }
            Err(e) if is_read => return unavailable(format_args!("forwarding to {leader}: {e}")),
            Err(e) => {
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format_args!("forwarding to leader {leader} failed; outcome unknown: {e}"),
                )
            }
        };
        copy_response(response, is_read).await
    }
}

async fn copy_response(response: reqwest::Response, is_read: bool) -> Response {
    let status = response.status();
    let mut headers = HeaderMap::new();
    for name in [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        HeaderName::from_static(LEADER_HEADER),
        HeaderName::from_static(APPLIED_HEADER),
    ] {
        if let Some(v) = response.headers().get(&name) {
            headers.insert(name, v.clone());
        }
    }
    match response.bytes().await {
        Ok(body) => (status, headers, body).into_response(),
        Err(e) if is_read => unavailable(format_args!("reading the leader's answer: {e}")),
        Err(e) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format_args!("reading the leader's answer failed; outcome unknown: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_errors_map_to_the_spec_statuses() {
        let busy = raft_error(RaftError::ConfigChangeInProgress);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(busy.headers().contains_key(header::RETRY_AFTER));
        let stale = raft_error(RaftError::ConfigurationChanged {
            expected: raftkit::LogIndex(3),
            actual: raftkit::LogIndex(5),
        });
        assert_eq!(stale.status(), StatusCode::CONFLICT);
        assert_eq!(
            raft_error(RaftError::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            raft_error(RaftError::NotLeader { leader: None }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

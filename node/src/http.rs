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

use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use raftkit::{LogIndex, NodeId, Raft, RaftError, RaftState, ServerAddress};
use serde::Deserialize;
use serde_json::json;

use crate::kv::{Command, KvReader, KvResponse};

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
struct Req {
    method: Method,
    uri: Uri,
    content_type: Option<HeaderValue>,
    forwarded: bool,
    body: Bytes,
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

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn unavailable(message: impl std::fmt::Display) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn raft_error(e: RaftError) -> Response {
    match e {
        RaftError::NotLeader { leader: None } => unavailable("no leader known"),
        RaftError::NotLeader { .. }
        | RaftError::Shutdown
        | RaftError::LeadershipTransferInProgress
        | RaftError::LeadershipTransferFailed => unavailable(e),
        RaftError::Timeout | RaftError::LeadershipLost => error(StatusCode::GATEWAY_TIMEOUT, e),
        RaftError::ConfigChangeInProgress
        | RaftError::ConfigurationChanged { .. }
        | RaftError::CantBootstrap
        | RaftError::NothingNewToSnapshot => error(StatusCode::CONFLICT, e),
        RaftError::Invalid(_) => error(StatusCode::BAD_REQUEST, e),
        RaftError::Storage(_)
        | RaftError::Fsm(_)
        | RaftError::Config(_)
        | RaftError::Restore(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn timed_out() -> Response {
    raft_error(RaftError::Timeout)
}

fn key_bytes(key: &str) -> Result<Bytes, Response> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format_args!("key must be 1..={MAX_KEY_BYTES} bytes, got {}", key.len()),
        ));
    }
    Ok(Bytes::copy_from_slice(key.as_bytes()))
}

fn too_large(len: usize, max: usize) -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format_args!("value of {len} bytes exceeds max_value_bytes {max}"),
    )
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format_args!("bad JSON body: {e}")))
}

impl Api {
    /// Answers `e`, forwarding the request to the leader when `e` says this
    /// node is not it.
    async fn or_forward(&self, req: &Req, e: RaftError) -> Response {
        match e {
            RaftError::NotLeader { leader } => self.forward(leader.map(|l| l.0), req).await,
            other => raft_error(other),
        }
    }

    async fn forward(&self, leader: Option<NodeId>, req: &Req) -> Response {
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

async fn write(api: &Api, req: &Req, command: Command) -> Result<KvResponse, Response> {
    match api.raft.apply(command.encode(), api.request_timeout).await {
        Ok(KvResponse::Undecodable) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the state machine could not decode the command",
        )),
        Ok(response) => Ok(response),
        Err(e) => Err(api.or_forward(req, e).await),
    }
}

async fn put_kv(State(api): State<Arc<Api>>, Path(key): Path<String>, req: Req) -> Response {
    let key = match key_bytes(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if req.body.len() > api.max_value_bytes {
        return too_large(req.body.len(), api.max_value_bytes);
    }
    let command = Command::Put {
        key,
        value: req.body.clone(),
    };
    match write(&api, &req, command).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn delete_kv(State(api): State<Arc<Api>>, Path(key): Path<String>, req: Req) -> Response {
    let key = match key_bytes(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match write(&api, &req, Command::Delete { key }).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expected: Option<String>,
    new: Option<String>,
}

async fn cas_kv(State(api): State<Arc<Api>>, Path(key): Path<String>, req: Req) -> Response {
    let key = match key_bytes(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let body: CasBody = match parse_json(&req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let new_len = body.new.as_ref().map_or(0, String::len);
    if new_len > api.max_value_bytes {
        return too_large(new_len, api.max_value_bytes);
    }
    let command = Command::Cas {
        key,
        expected: body.expected.map(Bytes::from),
        new: body.new.map(Bytes::from),
    };
    match write(&api, &req, command).await {
        Ok(KvResponse::CasFailed { current }) => {
            let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
            (StatusCode::CONFLICT, Json(json!({ "current": current }))).into_response()
        }
        Ok(_) => (StatusCode::OK, Json(json!({ "swapped": true }))).into_response(),
        Err(r) => r,
    }
}

/// `?consistency=` of a read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// ReadIndex: a quorum round after the read arrives.
    #[default]
    Linearizable,
    /// The leader's lease, falling back to ReadIndex.
    Lease,
    /// The local state machine as it is.
    Stale,
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

async fn get_kv(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    Query(query): Query<ReadQuery>,
    req: Req,
) -> Response {
    let key = match key_bytes(&key) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if query.consistency != Consistency::Stale {
        let point = async {
            if query.consistency == Consistency::Lease {
                api.raft.lease_read().await
            } else {
                api.raft.read_index().await
            }
        };
        match tokio::time::timeout(api.request_timeout, point).await {
            Err(_) => return timed_out(),
            Ok(Err(e)) => return api.or_forward(&req, e).await,
            Ok(Ok(_)) => {}
        }
    }
    let (value, applied) = api.kv.get(&key);
    let mut response = match value {
        Some(v) => (StatusCode::OK, v).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such key"),
    };
    if query.consistency == Consistency::Stale {
        response
            .headers_mut()
            .insert(APPLIED_HEADER, HeaderValue::from(applied));
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerBody {
    id: String,
    raft_addr: String,
}

async fn add_voter(State(api): State<Arc<Api>>, req: Req) -> Response {
    add_server(&api, req, true).await
}

async fn add_nonvoter(State(api): State<Arc<Api>>, req: Req) -> Response {
    add_server(&api, req, false).await
}

async fn add_server(api: &Api, req: Req, voter: bool) -> Response {
    let body: ServerBody = match parse_json(&req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (id, addr) = (NodeId::new(&body.id), ServerAddress::new(&body.raft_addr));
    let t = api.request_timeout;
    let result = if voter {
        api.raft.add_voter(id, addr, LogIndex::ZERO, t).await
    } else {
        api.raft.add_nonvoter(id, addr, LogIndex::ZERO, t).await
    };
    config_answer(api, &req, result).await
}

async fn demote(State(api): State<Arc<Api>>, Path(id): Path<String>, req: Req) -> Response {
    let result = api
        .raft
        .demote_voter(NodeId::new(id), LogIndex::ZERO, api.request_timeout)
        .await;
    config_answer(&api, &req, result).await
}

async fn remove(State(api): State<Arc<Api>>, Path(id): Path<String>, req: Req) -> Response {
    let result = api
        .raft
        .remove_server(NodeId::new(id), LogIndex::ZERO, api.request_timeout)
        .await;
    config_answer(&api, &req, result).await
}

async fn config_answer(api: &Api, req: &Req, result: Result<LogIndex, RaftError>) -> Response {
    match result {
        Ok(index) => Json(json!({ "index": index.0 })).into_response(),
        Err(e) => api.or_forward(req, e).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpAddrBody {
    http_addr: String,
}

/// Internal: records a server's HTTP address in the replicated table.
async fn set_http_addr(State(api): State<Arc<Api>>, Path(id): Path<String>, req: Req) -> Response {
    let body: HttpAddrBody = match parse_json(&req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let command = Command::SetHttpAddr {
        id,
        http_addr: body.http_addr,
    };
    match write(&api, &req, command).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    id: Option<String>,
}

async fn transfer(State(api): State<Arc<Api>>, req: Req) -> Response {
    let body: TransferBody = if req.body.iter().all(u8::is_ascii_whitespace) {
        TransferBody::default()
    } else {
        match parse_json(&req.body) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    if api.raft.state() != RaftState::Leader {
        return api.forward(api.raft.leader().map(|l| l.0), &req).await;
    }
    let call = async {
        match body.id {
            Some(id) => {
                api.raft
                    .leadership_transfer_to_server(NodeId::new(id))
                    .await
            }
            None => api.raft.leadership_transfer().await,
        }
    };
    match tokio::time::timeout(api.request_timeout, call).await {
        Err(_) => timed_out(),
        Ok(Ok(leader)) => {
            let mut response = Json(json!({ "leader": leader.as_str() })).into_response();
            if let Ok(v) = HeaderValue::from_str(leader.as_str()) {
                response.headers_mut().insert(LEADER_HEADER, v);
            }
            response
        }
        Ok(Err(e)) => api.or_forward(&req, e).await,
    }
}

async fn snapshot(State(api): State<Arc<Api>>, req: Req) -> Response {
    if api.raft.state() != RaftState::Leader && !req.forwarded {
        if let Some((leader, _)) = api.raft.leader() {
            return api.forward(Some(leader), &req).await;
        }
    }
    match tokio::time::timeout(api.request_timeout, api.raft.snapshot()).await {
        Err(_) => timed_out(),
        Ok(Ok(meta)) => Json(json!({ "index": meta.index.0, "term": meta.term.0 })).into_response(),
        Ok(Err(e)) => raft_error(e),
    }
}

async fn cluster(State(api): State<Arc<Api>>) -> Response {
    let leader = api
        .raft
        .leader()
        .map(|(id, addr)| json!({ "id": id.as_str(), "raft_addr": addr.as_str() }));
    let stats = match tokio::time::timeout(api.request_timeout, api.raft.stats()).await {
        Ok(Ok(stats)) => stats,
        Ok(Err(RaftError::Shutdown)) => {
            return Json(json!({
                "id": api.id.as_str(), "state": "Shutdown", "leader": leader,
                "servers": [], "transport": api.transport, "storage": api.storage,
            }))
            .into_response()
        }
        Ok(Err(e)) => return raft_error(e),
        Err(_) => return timed_out(),
    };
    let s = &stats.status;
    let servers: Vec<_> = s
        .configuration
        .servers
        .iter()
        .map(|server| {
            json!({
                "id": server.id.as_str(),
                "raft_addr": server.address.as_str(),
                "suffrage": server.suffrage.to_string(),
                "http_addr": api.kv.http_addr(server.id.as_str()),
            })
        })
        .collect();
    Json(json!({
        "id": api.id.as_str(),
        "state": s.state.to_string(),
        "term": s.term.0,
        "leader": leader,
        "servers": servers,
        "commit_index": s.commit_index.0,
        "applied_index": s.applied_index.0,
        "last_log_index": s.last_log_index.0,
        "last_snapshot_index": s.last_snapshot_index.0,
        "last_contact_ms": u64::try_from(stats.last_contact.as_millis()).unwrap_or(u64::MAX),
        "transport": api.transport,
        "storage": api.storage,
        "pid": std::process::id(),
    }))
    .into_response()
}

/// Ready = a leader is known, its HTTP address is known (so this node can
/// forward to it), and everything committed that this node heard of is applied.
async fn ready(State(api): State<Arc<Api>>) -> Response {
    let Some((leader, _)) = api.raft.leader() else {
        return unavailable("no leader known");
    };
    if api.kv.http_addr(leader.as_str()).is_none() {
        return unavailable(format_args!(
            "the HTTP address of leader {leader} is not known yet"
        ));
    }
    match tokio::time::timeout(api.request_timeout, api.raft.stats()).await {
        Ok(Ok(stats)) if stats.status.applied_index >= stats.status.commit_index => {
            (StatusCode::OK, "ready").into_response()
        }
        Ok(Ok(stats)) => unavailable(format_args!(
            "applied {} of commit index {}",
            stats.status.applied_index, stats.status.commit_index
        )),
        Ok(Err(e)) => raft_error(e),
        Err(_) => unavailable("stats timed out"),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

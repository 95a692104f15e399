//! The administration and operations routes: `/cluster...`, `/ready`, `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftkit::{LogIndex, NodeId, RaftError, RaftState, ServerAddress};
use serde::Deserialize;
use serde_json::json;

use super::kv::write;
use super::{parse_json, raft_error, timed_out, unavailable, Api, Req, LEADER_HEADER};
use crate::kv::Command;

/// Unknown fields are ignored, so tools may send more (an `http_addr`, say).
#[derive(Deserialize)]
struct ServerBody {
    id: String,
    raft_addr: String,
}

pub(super) async fn add_voter(State(api): State<Arc<Api>>, req: Req) -> Response {
    add_server(&api, req, true).await
}

pub(super) async fn add_nonvoter(State(api): State<Arc<Api>>, req: Req) -> Response {
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

pub(super) async fn demote(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    req: Req,
) -> Response {
    let result = api
        .raft
        .demote_voter(NodeId::new(id), LogIndex::ZERO, api.request_timeout)
        .await;
    config_answer(&api, &req, result).await
}

pub(super) async fn remove(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    req: Req,
) -> Response {
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
pub(super) async fn set_http_addr(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    req: Req,
) -> Response {
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

pub(super) async fn transfer(State(api): State<Arc<Api>>, req: Req) -> Response {
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

pub(super) async fn snapshot(State(api): State<Arc<Api>>, req: Req) -> Response {
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

pub(super) async fn cluster(State(api): State<Arc<Api>>) -> Response {
    let stats = match tokio::time::timeout(api.request_timeout, api.raft.stats()).await {
        Ok(Ok(stats)) => stats,
        Ok(Err(RaftError::Shutdown)) => {
            return Json(json!({
                "id": api.id.as_str(), "state": "Shutdown", "leader": null,
                "servers": [], "transport": api.transport, "storage": api.storage,
            }))
            .into_response()
        }
        Ok(Err(e)) => return raft_error(e),
        Err(_) => return timed_out(),
    };
    let s = &stats.status;
    // The leader comes from the same status as the state, so a node that
    // says it leads also names itself.
    let leader = s.leader.as_ref().map(|id| {
        let addr = s
            .configuration
            .server(id)
            .map(|server| server.address.clone())
            .or_else(|| api.raft.leader().filter(|(l, _)| l == id).map(|(_, a)| a))
            .unwrap_or_else(|| ServerAddress::new(""));
        json!({ "id": id.as_str(), "raft_addr": addr.as_str() })
    });
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
        "first_log_index": s.first_log_index.0,
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
pub(super) async fn ready(State(api): State<Arc<Api>>) -> Response {
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

pub(super) async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

//! The key-value routes: `PUT/GET/DELETE /kv/{key}`, `POST /kv/{key}/cas`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{error, key_bytes, parse_json, timed_out, too_large, Api, Req, APPLIED_HEADER};
use crate::kv::{Command, KvResponse};

pub(super) async fn write(api: &Api, req: &Req, command: Command) -> Result<KvResponse, Response> {
    match api.raft.apply(command.encode(), api.request_timeout).await {
        Ok(KvResponse::Undecodable) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the state machine could not decode the command",
        )),
        Ok(response) => Ok(response),
        Err(e) => Err(api.or_forward(req, e).await),
    }
}

pub(super) async fn put_kv(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    req: Req,
) -> Response {
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

pub(super) async fn delete_kv(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    req: Req,
) -> Response {
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

pub(super) async fn cas_kv(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    req: Req,
) -> Response {
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
pub(super) struct ReadQuery {
    #[serde(default)]
    consistency: Consistency,
}

pub(super) async fn get_kv(
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

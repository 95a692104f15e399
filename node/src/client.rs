//! `raftkit status | kv | cluster`: a small client of the HTTP API.
//!
//! Each command is one HTTP call to the given node (which forwards to the
//! leader when it must); the answer's status decides success, its body is
//! printed.

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cli::{ClusterCmd, KvCmd};
use crate::Failure;

fn base(addr: &str) -> &str {
    addr.trim_end_matches('/')
}

async fn call(
    method: Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, String)> {
    let client = reqwest::Client::new();
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    Ok((status, text))
}

fn finish(status: StatusCode, text: String) -> Result<(), Failure> {
    if status.is_success() {
        if !text.is_empty() {
            println!("{text}");
        }
        Ok(())
    } else {
        Err(Failure::Other(anyhow::anyhow!("{status}: {text}")))
    }
}

/// Prints one line per node: id, state, term, leader, indexes.
pub async fn status(addrs: &[String]) -> Result<(), Failure> {
    println!(
        "{:<24} {:<6} {:<10} {:>6} {:<6} {:>9} {:>9}",
        "NODE", "ID", "STATE", "TERM", "LEADER", "COMMIT", "APPLIED"
    );
    for addr in addrs {
        match call(Method::GET, format!("{}/cluster", base(addr)), None).await {
            Ok((s, text)) if s.is_success() => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                println!("{}", status_line(addr, &v));
            }
            Ok((s, text)) => println!("{addr:<24} {s}: {text}"),
            Err(e) => println!("{addr:<24} unreachable: {e:#}"),
        }
    }
    Ok(())
}

/// One row of the status table from a `GET /cluster` answer.
pub fn status_line(label: &str, v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    let n = |k: &str| v[k].as_u64().map_or("-".to_string(), |n| n.to_string());
    format!(
        "{:<24} {:<6} {:<10} {:>6} {:<6} {:>9} {:>9}",
        label,
        s("id"),
        s("state"),
        n("term"),
        v["leader"]["id"].as_str().unwrap_or("-"),
        n("commit_index"),
        n("applied_index"),
    )
}

/// `raftkit kv ...`.
pub async fn kv(addr: &str, op: KvCmd) -> Result<(), Failure> {
    let url = |key: &str| format!("{}/kv/{}", base(addr), encode_segment(key));
    let client = reqwest::Client::new();
    let result = match op {
        KvCmd::Get { key, consistency } => {
            call(
                Method::GET,
                format!("{}?consistency={consistency}", url(&key)),
                None,
            )
            .await
        }
        KvCmd::Put { key, value } => {
            let r = client.put(url(&key)).body(value).send().await;
            match r {
                Ok(r) => Ok((r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }
        KvCmd::Delete { key } => call(Method::DELETE, url(&key), None).await,
        KvCmd::Cas { key, expected, new } => {
            let body = json!({ "expected": expected, "new": new });
            call(Method::POST, format!("{}/cas", url(&key)), Some(body)).await
        }
    };
    let (status, text) = result?;
    finish(status, text)
}

/// `raftkit cluster ...`.
pub async fn cluster(addr: &str, op: ClusterCmd) -> Result<(), Failure> {
    let b = base(addr);
    let (method, url, body) = match op {
        ClusterCmd::AddVoter { id, raft_addr } => (
            Method::POST,
            format!("{b}/cluster/voters"),
            Some(json!({ "id": id, "raft_addr": raft_addr })),
        ),
        ClusterCmd::AddNonvoter { id, raft_addr } => (
            Method::POST,
            format!("{b}/cluster/nonvoters"),
            Some(json!({ "id": id, "raft_addr": raft_addr })),
        ),
        ClusterCmd::Demote { id } => (
            Method::POST,
            format!("{b}/cluster/servers/{}/demote", encode_segment(&id)),
            None,
        ),
        ClusterCmd::Remove { id } => (
            Method::DELETE,
            format!("{b}/cluster/servers/{}", encode_segment(&id)),
            None,
        ),
        ClusterCmd::Transfer { id } => (
            Method::POST,
            format!("{b}/cluster/leadership-transfer"),
            Some(json!({ "id": id })),
        ),
        ClusterCmd::Snapshot => (Method::POST, format!("{b}/cluster/snapshot"), None),
    };
    let (status, text) = call(method, url, body).await?;
    finish(status, text)
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
///
/// ```
/// assert_eq!(raftkit_node::client::encode_segment("a/b c"), "a%2Fb%20c");
/// ```
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_segment_escapes_slashes_and_spaces() {
        assert_eq!(encode_segment("a/b c~"), "a%2Fb%20c~");
    }
}

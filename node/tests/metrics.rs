//! `GET /metrics` of a live leader: strictly valid Prometheus text exposition
//! (format 0.0.4), every metric of the catalogue present with its type and
//! help, per-peer series for each peer; and `promtool check metrics` accepts
//! it when promtool is installed (CI installs Debian's `prometheus`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use raftkit_node::metrics::{Kind, CATALOGUE, NOT_EMITTED};
use support::{client, cluster_profiles, leader_of, put_acked, wait_until, Proc};

/// DESIGN.md's metric catalogue (the names outside tools rely on), plus the
/// HTTP metrics the node adds.
const DESIGN: &[&str] = &[
    "raft_state",
    "raft_term",
    "raft_commit_index",
    "raft_applied_index",
    "raft_last_log_index",
    "raft_last_snapshot_index",
    "raft_last_contact_seconds",
    "raft_replication_match_index",
    "raft_replication_inflight",
    "raft_apply_total",
    "raft_elections_total",
    "raft_leader_changes_total",
    "raft_transport_messages_sent_total",
    "raft_transport_bytes_sent_total",
    "raft_transport_errors_total",
    "raft_snapshot_installs_total",
    "raft_commit_duration_seconds",
    "raft_fsm_apply_duration_seconds",
    "raft_log_append_duration_seconds",
    "raft_replication_append_entries_duration_seconds",
    "raft_snapshot_create_duration_seconds",
    "http_request_duration_seconds",
    "http_requests_total",
];

/// One metric family of a scrape.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    /// Each sample: (name, labels, value).
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// `{a="x",b="y\"z"}` (the part after the name) → labels and the rest.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?
            .char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[eq + 1..][end + 2..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to: histograms own `_bucket`, `_sum`, `_count`.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| f.kind == "histogram") {
                return base;
            }
        }
    }
    name
}

/// Parses a text exposition strictly; any deviation is an error naming the line.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let arg = parts.next().unwrap_or("");
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let family = families.entry(name.to_string()).or_default();
            match keyword {
                "HELP" => {
                    if family.help {
                        return Err(at("second HELP".into()));
                    }
                    family.help = true;
                }
                "TYPE" => {
                    if !family.kind.is_empty() || !family.samples.is_empty() {
                        return Err(at("TYPE repeated or after samples".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(at(format!("unknown type {arg:?}")));
                    }
                    family.kind = arg.to_string();
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series".into()));
        }
        let base = family_of(name, &families).to_string();
        let family = families
            .get_mut(&base)
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at(format!("sample of {base} before its TYPE")))?;
        if family.kind == "histogram" && base == name {
            return Err(at("histogram sample without _bucket/_sum/_count".into()));
        }
        if family.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("negative counter".into()));
        }
        family.samples.push((name.to_string(), labels, value));
    }
    for (name, family) in &families {
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

/// Buckets of each series are cumulative, end with `+Inf`, and `+Inf` equals `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    /// One series' buckets `(le, count)` and its `_count`.
    type Series = (Vec<(f64, f64)>, Option<f64>);
    let mut by_series: BTreeMap<String, Series> = BTreeMap::new();
    for (sample, labels, value) in &family.samples {
        let mut key = labels.clone();
        let le = key.remove("le");
        let entry = by_series.entry(format!("{key:?}")).or_default();
        if sample.ends_with("_bucket") {
            let le = le.ok_or(format!("{name}: bucket without le"))?;
            entry.0.push((parse_value(&le)?, *value));
        } else if sample.ends_with("_count") {
            entry.1 = Some(*value);
        }
    }
    for (series, (buckets, count)) in by_series {
        let mut last = (f64::NEG_INFINITY, 0.0);
        for &(le, n) in &buckets {
            if le <= last.0 || n < last.1 {
                return Err(format!("{name}{series}: buckets not cumulative"));
            }
            last = (le, n);
        }
        if last.0 != f64::INFINITY || count != Some(last.1) {
            return Err(format!("{name}{series}: +Inf bucket missing or != _count"));
        }
    }
    Ok(())
}

#[test]
fn the_strict_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        "a 1\n",                                                                          // no TYPE
        "# TYPE a gauge\na{k=v} 1\n",           // unquoted label
        "# TYPE a gauge\na 1\na 2\n",           // duplicate series
        "# TYPE a gauge\n# TYPE a gauge\n",     // TYPE twice
        "# TYPE a_total counter\na_total -1\n", // negative counter
        "# TYPE 1a gauge\n",                    // bad name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_exports_the_whole_catalogue_as_valid_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let specs = cluster_profiles(dir.path(), 3);
    let procs: Vec<Proc> = specs.iter().map(Proc::start).collect();
    let c = client();
    let refs: Vec<&Proc> = procs.iter().collect();
    support::wait_ready(&c, &specs, &refs, Duration::from_secs(30)).await;
    let leader = wait_until(Duration::from_secs(30), "a leader", || {
        leader_of(&c, &specs[0])
    })
    .await;
    let l = specs.iter().find(|s| s.id == leader).unwrap();
    for i in 0..10 {
        put_acked(&c, l, &format!("k{i}"), "v").await;
    }
    let r = c.post(l.url("/cluster/snapshot")).send().await.unwrap();
    assert!(r.status().is_success(), "snapshot: {}", r.status());
    let peers: Vec<&str> = specs
        .iter()
        .filter(|s| s.id != leader)
        .map(|s| s.id.as_str())
        .collect();

    // Per-peer gauges are published on the driver's tick: poll until both
    // peers show up, then check the whole scrape.
    let (text, families) = wait_until(
        Duration::from_secs(10),
        "per-peer series of both peers",
        || async {
            let r = c.get(l.url("/metrics")).send().await.ok()?;
            assert!(r.status().is_success());
            let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
            let text = r.text().await.ok()?;
            let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let peer_series = |metric: &str| {
                families.get(metric).is_some_and(|f| {
                    peers.iter().all(|p| {
                        f.samples.iter().any(|(_, labels, _)| {
                            labels.get("peer").map(String::as_str) == Some(*p)
                        })
                    })
                })
            };
            (peer_series("raft_replication_match_index")
                && peer_series("raft_replication_inflight")
                && peer_series("raft_replication_append_entries_duration_seconds"))
            .then_some((text, families))
        },
    )
    .await;

    for name in DESIGN {
        let in_catalogue = CATALOGUE.iter().any(|m| m.name == *name);
        assert!(
            in_catalogue != NOT_EMITTED.contains(name),
            "{name}: in the node's catalogue {in_catalogue}, listed as not emitted {}",
            NOT_EMITTED.contains(name)
        );
    }
    for metric in CATALOGUE {
        let family = families
            .get(metric.name)
            .unwrap_or_else(|| panic!("{} missing from the scrape:\n{text}", metric.name));
        let kind = match metric.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        assert_eq!(family.kind, kind, "{}", metric.name);
        assert!(family.help, "{} has no HELP", metric.name);
        assert!(!family.samples.is_empty(), "{} has no samples", metric.name);
        for (_, labels, _) in &family.samples {
            for label in metric.labels {
                assert!(
                    labels.contains_key(*label),
                    "{} lacks label {label}: {labels:?}",
                    metric.name
                );
            }
        }
    }
    let state = &families["raft_state"].samples;
    assert!(
        state
            .iter()
            .any(|(_, l, v)| l["state"] == "Leader" && *v == 1.0),
        "{state:?}"
    );
    let term = families["raft_term"].samples[0].2;
    assert!(term >= 1.0, "term {term}");

    match Command::new("promtool").arg("--version").output() {
        Ok(_) => {
            let mut child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("promtool check metrics: ok");
        }
        Err(e) => println!("promtool not on PATH ({e}): skipped `promtool check metrics`"),
    }
}

/// Metric names a PromQL expression refers to (`raft_*`, `http_*`), with
/// histogram suffixes removed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if boundary && (rest.starts_with("raft_") || rest.starts_with("http_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(base.to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/grafana/raftkit.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {p}"
        );
        assert!(
            p["gridPos"]["w"].as_u64().is_some() && p["title"].is_string(),
            "{p}"
        );
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                CATALOGUE.iter().any(|m| m.name == name),
                "the dashboard queries {name}, which is not exported: {expr}"
            );
            used.insert(name);
        }
    }
    for key in [
        "raft_state",
        "raft_term",
        "raft_commit_index",
        "raft_commit_duration_seconds",
        "raft_replication_match_index",
    ] {
        assert!(used.contains(key), "the dashboard does not show {key}");
    }

    // PromQL syntax, through promtool's rule checker, when it is installed.
    if Command::new("promtool").arg("--version").output().is_err() {
        println!("promtool not on PATH: skipped checking the dashboard's PromQL");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("dashboard.rules.yml");
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$job", ".*");
        text.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: |-\n          {expr}\n"
        ));
    }
    std::fs::write(&rules, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules", &rules.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool check rules: {} dashboard queries ok", exprs.len());
}

#[test]
fn the_readme_lists_every_metric() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    for metric in CATALOGUE {
        assert!(
            readme.contains(&format!("| `{}", metric.name)),
            "README's metrics table lacks {}",
            metric.name
        );
    }
}

//! `raftkit bench http`: closed-loop load on running nodes through the HTTP
//! API of `shared/spec/node-api.md`.
//!
//! ```text
//!  client c ─▶ target[c mod T]: loop { PUT /kv/bench-K (value)            with probability --writes
//!                                      GET /kv/bench-K?consistency=...    otherwise }
//! ```
//!
//! Any node accepts any call (followers forward writes and linearizable
//! reads), so targets may be followers. A write counts once the node
//! answered 204 (committed and applied); a read once it answered 200 or 404.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::measure::{self, CpuSample, LatencySummary};
use super::{failure, output, parse_duration};
use crate::Failure;

/// Read consistency, as `?consistency=` of `GET /kv/{key}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// ReadIndex on the leader.
    Linearizable,
    /// The leader's lease.
    Lease,
    /// Whatever the node has applied.
    Stale,
}

impl Consistency {
    fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        }
    }
}

/// `raftkit bench http`.
#[derive(Clone, Debug, Args)]
pub struct HttpArgs {
    /// HTTP base URLs of the nodes (repeat or comma-separate); client `c`
    /// talks to target `c mod T`.
    #[arg(long = "target", value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Fraction of operations that are writes (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub writes: f64,
    /// Consistency of the reads.
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: Consistency,
    /// Measured window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Value bytes per write.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys (`bench-0` ... `bench-{keys-1}`).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Timeout of each request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Append one JSON object to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label copied into the row.
    #[arg(long)]
    pub label: Option<String>,
}

impl HttpArgs {
    /// Checks the arguments.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.writes) {
            return Err(format!(
                "--writes must be a fraction from 0 to 1, not {}",
                self.writes
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration must be longer than 0s".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        for t in &self.targets {
            let url = reqwest::Url::parse(t).map_err(|e| format!("--target {t:?}: {e}"))?;
            if url.scheme() != "http" {
                return Err(format!("--target {t:?}: only http:// URLs are supported"));
            }
        }
        if self.targets.is_empty() {
            return Err("--target must name at least one node".into());
        }
        Ok(())
    }
}

/// The run's result: the cluster bench's field names where they apply.
#[derive(Clone, Debug, Serialize)]
pub struct HttpRow {
    /// `http`.
    pub mode: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Value bytes per write.
    pub value_size: usize,
    /// Operations that started and finished in the window.
    pub ops: u64,
    /// The window's length.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency of all operations.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Failed operations in the window.
    pub errors: u64,
    /// Cores this process (the load generator) used.
    pub self_cpu_cores: f64,
    /// Cores the rest of the machine used, the nodes included.
    pub other_cpu_cores: f64,
    /// Largest latency.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// The write fraction asked for.
    pub writes: f64,
    /// Writes done.
    pub write_ops: u64,
    /// Reads done.
    pub read_ops: u64,
    /// Read consistency.
    pub consistency: Consistency,
    /// Write latency.
    pub write: LatencySummary,
    /// Read latency.
    pub read: LatencySummary,
    /// The targets.
    pub targets: Vec<String>,
    /// `--label`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When the run ended (RFC 3339).
    pub timestamp: String,
    /// The first error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Runs `raftkit bench http`.
pub fn execute(args: HttpArgs) -> Result<(), Failure> {
    args.validate().map_err(failure)?;
    let rt = super::runtime()?;
    let mut row = rt.block_on(run(&args, std::io::stderr().is_terminal()))?;
    row.label = args.label.clone();
    if let Some(e) = &row.first_error {
        eprintln!("{} errors; first: {e}", row.errors);
    }
    if let Some(path) = &args.json {
        output::append_json(path, &row)?;
    }
    print!("{}", table(&row));
    Ok(())
}

fn table(r: &HttpRow) -> String {
    let line = |what: &str, ops: u64, l: &LatencySummary| {
        vec![
            what.to_string(),
            output::thousands(ops as f64),
            output::thousands(ops as f64 / r.seconds.max(1e-9)),
            output::thousands(l.p50_us),
            output::thousands(l.p99_us),
            output::thousands(l.p999_us),
            output::thousands(l.max_us),
        ]
    };
    let all = LatencySummary {
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        p999_us: r.p999_us,
        max_us: r.max_us,
        mean_us: r.mean_us,
    };
    let rows = vec![
        line("all", r.ops, &all),
        line("writes", r.write_ops, &r.write),
        line(
            &format!("reads ({})", r.consistency.name()),
            r.read_ops,
            &r.read,
        ),
    ];
    let mut out = output::table(
        &[
            "ops",
            "count",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
        ],
        &rows,
    );
    out.push_str(&format!(
        "clients {}, errors {}, load generator {:.2} cores, rest of the machine {:.2} cores\n",
        r.clients, r.errors, r.self_cpu_cores, r.other_cpu_cores
    ));
    out
}

struct ClientResult {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

const WARMUP: u8 = 0;
const MEASURING: u8 = 1;
const STOP: u8 = 2;

#[allow(clippy::too_many_arguments)]
async fn client(
    http: reqwest::Client,
    base: String,
    seed: u64,
    args: Arc<HttpArgs>,
    value: Bytes,
    phase: Arc<AtomicU8>,
    done: Arc<AtomicU64>,
) -> ClientResult {
    let mut reads = measure::new_histogram();
    let mut writes = measure::new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = base.trim_end_matches('/').to_string();
    let write_threshold = (args.writes * u32::MAX as f64) as u64;
    loop {
        let started_in = phase.load(Ordering::Acquire);
        if started_in == STOP {
            break;
        }
        let key = next() % args.keys;
        let is_write = (next() & u64::from(u32::MAX)) < write_threshold || (args.writes >= 1.0);
        let url = format!("{base}/kv/bench-{key}");
        let start = Instant::now();
        let result = if is_write {
            http.put(&url)
                .body(value.clone())
                .timeout(args.request_timeout)
                .send()
                .await
        } else {
            http.get(&url)
                .query(&[("consistency", args.consistency.name())])
                .timeout(args.request_timeout)
                .send()
                .await
        };
        let outcome = match result {
            Ok(r) => {
                let status = r.status();
                // Read the body: a read is done when its value arrived.
                let body = r.bytes().await;
                match (is_write, status.as_u16(), body) {
                    (_, _, Err(e)) => Err(format!("{url}: reading the body: {e}")),
                    (true, 200..=299, _) | (false, 200 | 404, _) => Ok(()),
                    (_, code, Ok(b)) => Err(format!(
                        "{url}: {code} {}",
                        String::from_utf8_lossy(&b[..b.len().min(200)])
                    )),
                }
            }
            Err(e) => Err(format!("{url}: {e}")),
        };
        let took = start.elapsed();
        let counted = started_in == MEASURING && phase.load(Ordering::Acquire) == MEASURING;
        done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) if counted => {
                measure::record(if is_write { &mut writes } else { &mut reads }, took)
            }
            Ok(()) => {}
            Err(e) => {
                if counted {
                    errors += 1;
                }
                first_error.get_or_insert(e);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    ClientResult {
        reads,
        writes,
        errors,
        first_error,
    }
}

/// Runs the load described by `args` (already validated).
pub async fn run(args: &HttpArgs, progress: bool) -> Result<HttpRow, Failure> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .map_err(|e| failure(format_args!("building the HTTP client: {e}")))?;
    let args = Arc::new(args.clone());
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            tokio::spawn(client(
                http.clone(),
                args.targets[c % args.targets.len()].clone(),
                c as u64 + 1,
                args.clone(),
                value.clone(),
                phase.clone(),
                done.clone(),
            ))
        })
        .collect();
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new((args.warmup + args.duration).as_millis() as u64);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("  {bar:40} {elapsed:>4}/{duration:4} {msg}")
        {
            bar.set_style(style);
        }
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            let start = Instant::now();
            loop {
                every.tick().await;
                bar.set_position(start.elapsed().as_millis() as u64);
                bar.set_message(format!("{} ops", done.load(Ordering::Relaxed)));
            }
        })
    });
    tokio::time::sleep(args.warmup).await;
    let cpu0 = CpuSample::now();
    let window = Instant::now();
    phase.store(MEASURING, Ordering::Release);
    tokio::time::sleep(args.duration).await;
    phase.store(STOP, Ordering::Release);
    let seconds = window.elapsed().as_secs_f64();
    let cpu = cpu0.until(&CpuSample::now());
    let mut reads = measure::new_histogram();
    let mut writes = measure::new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| failure(format_args!("a client task failed: {e}")))?;
        reads
            .add(&r.reads)
            .and_then(|()| writes.add(&r.writes))
            .map_err(|e| failure(format_args!("merging histograms: {e}")))?;
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut all = reads.clone();
    all.add(&writes)
        .map_err(|e| failure(format_args!("merging histograms: {e}")))?;
    let lat = LatencySummary::of(&all);
    Ok(HttpRow {
        mode: "http",
        clients: args.clients,
        value_size: args.value_size,
        ops: all.len(),
        seconds: (seconds * 1000.0).round() / 1000.0,
        ops_per_sec: measure::round1(all.len() as f64 / seconds),
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        p999_us: lat.p999_us,
        errors,
        self_cpu_cores: cpu.self_cores.map_or(-1.0, measure::round2),
        other_cpu_cores: cpu.other_cores.map_or(-1.0, measure::round2),
        max_us: lat.max_us,
        mean_us: lat.mean_us,
        writes: args.writes,
        write_ops: writes.len(),
        read_ops: reads.len(),
        consistency: args.consistency,
        write: LatencySummary::of(&writes),
        read: LatencySummary::of(&reads),
        targets: args.targets.clone(),
        label: None,
        timestamp: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: HttpArgs,
    }

    fn parse(args: &[&str]) -> Result<HttpArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("http").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn http_arguments() {
        let a = parse(&[
            "--target",
            "http://127.0.0.1:8001,http://127.0.0.1:8002",
            "--target",
            "http://127.0.0.1:8003",
            "--clients",
            "8",
            "--writes",
            "0.25",
            "--consistency",
            "lease",
            "--duration",
            "3s",
        ])
        .unwrap();
        assert_eq!(a.targets.len(), 3);
        assert_eq!(a.clients, 8);
        assert_eq!(a.writes, 0.25);
        assert_eq!(a.consistency, Consistency::Lease);
        assert_eq!(a.duration, Duration::from_secs(3));
        a.validate().unwrap();
        assert!(parse(&[]).is_err(), "--target is required");
        assert!(parse(&["--target", "http://x", "--consistency", "strong"]).is_err());
        let bad = parse(&["--target", "http://x:1", "--writes", "1.5"]).unwrap();
        assert!(bad.validate().unwrap_err().contains("--writes"));
        let bad = parse(&["--target", "not a url"]).unwrap();
        assert!(bad.validate().unwrap_err().contains("--target"));
        let bad = parse(&["--target", "http://x:1", "--clients", "0"]).unwrap();
        assert!(bad.validate().unwrap_err().contains("--clients"));
    }

    type Store = Arc<Mutex<HashMap<String, Bytes>>>;

    /// A stand-in for a node's `/kv` routes: PUT answers 204, GET 200/404,
    /// and a GET without `consistency` is refused so the test sees it sent.
    fn fake_node(store: Store) -> axum::Router {
        async fn put(State(s): State<Store>, Path(k): Path<String>, body: Bytes) -> StatusCode {
            s.lock().unwrap().insert(k, body);
            StatusCode::NO_CONTENT
        }
        async fn get_key(
            State(s): State<Store>,
            Path(k): Path<String>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Result<Bytes, StatusCode> {
            if q.get("consistency").map(String::as_str) != Some("stale") {
                return Err(StatusCode::BAD_REQUEST);
            }
            s.lock()
                .unwrap()
                .get(&k)
                .cloned()
                .ok_or(StatusCode::NOT_FOUND)
        }
        axum::Router::new()
            .route("/kv/{key}", get(get_key).put(put))
            .with_state(store)
    }

    #[test]
    fn short_http_run_against_a_fake_node() {
        let rt = super::super::runtime().unwrap();
        rt.block_on(async {
            let store = Store::default();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = fake_node(store.clone());
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            let target = format!("http://{addr}");
            let args = parse(&[
                "--target",
                &target,
                "--clients",
                "4",
                "--consistency",
                "stale",
                "--duration",
                "300ms",
                "--warmup",
                "0s",
                "--keys",
                "10",
                "--value-size",
                "32",
            ])
            .unwrap();
            args.validate().unwrap();
            let row = run(&args, false).await.unwrap();
            server.abort();
            assert_eq!(row.errors, 0, "{row:?}");
            assert!(row.write_ops > 0 && row.read_ops > 0, "{row:?}");
            assert_eq!(row.ops, row.write_ops + row.read_ops);
            assert!(row.p50_us > 0.0 && row.p50_us <= row.max_us);
            let stored = store.lock().unwrap();
            assert!(!stored.is_empty());
            assert!(stored.values().all(|v| v.len() == 32));
            let json = serde_json::to_value(&row).unwrap();
            for f in [
                "ops",
                "ops_per_sec",
                "p50_us",
                "p99_us",
                "p999_us",
                "errors",
            ] {
                assert!(json[f].is_number(), "{f}: {json}");
            }
            assert!(table(&row).contains("reads (stale)"));
        });
    }

    #[test]
    fn errors_are_counted_not_hidden() {
        let rt = super::super::runtime().unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = fake_node(Store::default());
            let server = tokio::spawn(async move { axum::serve(listener, router).await });
            let target = format!("http://{addr}");
            // Linearizable reads are refused by the fake node: every read fails.
            let args = parse(&[
                "--target",
                &target,
                "--clients",
                "2",
                "--writes",
                "0",
                "--duration",
                "200ms",
                "--warmup",
                "0s",
            ])
            .unwrap();
            let row = run(&args, false).await.unwrap();
            server.abort();
            assert_eq!(row.ops, 0, "{row:?}");
            assert!(row.errors > 0, "{row:?}");
            assert!(row.first_error.unwrap().contains("400"));
        });
    }
}

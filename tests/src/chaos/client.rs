//! The workload: clients issuing PUT/GET/DELETE/CAS over HTTP to random
//! nodes, every operation recorded in a [`History`] with wall-clock
//! nanoseconds since the run started.
//!
//! ```text
//!  client c ──invoke(op, t0)──▶ Recorder ◀──complete(outcome, t1)── client c
//!     │                                         ▲
//!     └── HTTP to a random node ── status ──────┘  204/200/404/409 → ok
//!                                                  503/400, connect refused → fail (not applied)
//!                                                  504, 500, timeout, reset → unknown
//! ```
//!
//! Keys: a few registers (`k0`, `k1`, ...) that every operation kind hits,
//! and write-once keys (`w-<client>-<seq>`) that are written by one PUT and
//! never touched again, so an acknowledged write that disappears is seen
//! directly (a lost ack), not only as a linearizability violation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::history::{ClientId, History, Op, OpId, Outcome, Returned};

/// The shared, growing history of a run.
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
    /// How requests ended, by "<op> <status or error>": for the run's summary.
    answers: Mutex<std::collections::BTreeMap<String, usize>>,
}

impl Recorder {
    /// A recorder whose time zero is now.
    pub fn new(start: Instant) -> Arc<Recorder> {
        Arc::new(Recorder {
            start,
            history: Mutex::new(History::new()),
            answers: Mutex::default(),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an invocation now.
    pub fn invoke(&self, client: ClientId, op: Op) -> OpId {
        let mut h = self.lock();
        let now = self.now();
        h.invoke(client, op, now)
    }

    /// Records a completion now.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut h = self.lock();
        let now = self.now();
        if let Err(e) = h.complete(id, outcome, now) {
            // Only a harness bug gets here; the history stays usable.
            eprintln!("chaos: recording a completion: {e}");
        }
    }

    /// Counts one answer (`"put 204"`, `"get timeout"`, ...).
    pub fn count_answer(&self, what: String) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        *a.entry(what).or_default() += 1;
    }

    /// The answers counted so far.
    pub fn answers(&self) -> std::collections::BTreeMap<String, usize> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }
}

/// Register key `index` of key epoch `epoch`.
pub fn register_key(epoch: u64, index: usize) -> Vec<u8> {
    format!("k{epoch}-{index}").into_bytes()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `op` to the node at `base` and says how it ended.
pub async fn execute(http: &reqwest::Client, base: &str, op: &Op, timeout: Duration) -> Outcome {
    execute_counted(http, base, op, timeout).await.0
}

/// [`execute`], also saying what answer it got (`"put 503"`, `"get timeout"`).
pub async fn execute_counted(
    http: &reqwest::Client,
    base: &str,
    op: &Op,
    timeout: Duration,
) -> (Outcome, String) {
    let kind = op.kind();
    let key = text(op.key());
    let url = format!("{base}/kv/{key}");
    let request = match op {
        Op::Get { .. } => http.get(&url),
        Op::Put { value, .. } => http.put(&url).body(value.clone()),
        Op::Delete { .. } => http.delete(&url),
        Op::Cas { expected, new, .. } => http.post(format!("{url}/cas")).json(&serde_json::json!({
            "expected": expected.as_deref().map(text),
            "new": new.as_deref().map(text),
        })),
    };
    let is_read = matches!(op, Op::Get { .. });
    let response = match request.timeout(timeout).send().await {
        Ok(r) => r,
        // Never sent: it cannot have taken effect.
        Err(e) if e.is_connect() => return (Outcome::Fail, format!("{kind} refused")),
        Err(e) => {
            let what = if e.is_timeout() { "timeout" } else { "error" };
            let outcome = if is_read {
                Outcome::Fail
            } else {
                Outcome::Unknown
            };
            return (outcome, format!("{kind} {what}"));
        }
    };
    let status = response.status().as_u16();
    let what = format!("{kind} {status}");
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(_) if is_read => return (Outcome::Fail, format!("{what} body lost")),
        Err(_) => {
            // The status came; the body did not. A 2xx write still took effect.
            let outcome = match (op, status) {
                (Op::Put { .. } | Op::Delete { .. }, 204) => Outcome::Ok(Returned::Done),
                _ => Outcome::Unknown,
            };
            return (outcome, format!("{what} body lost"));
        }
    };
    let outcome = match (op, status) {
        (Op::Get { .. }, 200) => Outcome::Ok(Returned::Value(Some(body.to_vec()))),
        (Op::Get { .. }, 404) => Outcome::Ok(Returned::Value(None)),
        (Op::Get { .. }, _) => Outcome::Fail,
        (Op::Put { .. } | Op::Delete { .. }, 204) => Outcome::Ok(Returned::Done),
        (Op::Cas { .. }, 200) => Outcome::Ok(Returned::Swapped(true)),
        (Op::Cas { .. }, 409) => {
            // 409 with {"current": ...} is a definite no-swap; other 409s are
            // admin conflicts that were not proposed.
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if v.get("current").is_some() => Outcome::Ok(Returned::Swapped(false)),
                _ => Outcome::Fail,
            }
        }
        // Definitely not proposed: no leader (503), a bad request (400/413/404).
        (_, 503 | 400 | 404 | 413) => Outcome::Fail,
        // 504 and anything else (a 500 from a failing node): the outcome is unknown.
        _ => Outcome::Unknown,
    };
    (outcome, what)
}

/// What a client needs.
pub struct Workload {
    /// The history.
    pub recorder: Arc<Recorder>,
    /// `http://addr:port` of every node.
    pub bases: Vec<String>,
    /// Register keys per epoch.
    pub keys: usize,
    /// Clients move to fresh register keys this often, which bounds the
    /// length of each key's history (and the checker's work on it).
    pub key_epoch: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The HTTP client (one connection pool).
    pub http: reqwest::Client,
}

/// The most operations one client starts per second.
const CLIENT_PACE: Duration = Duration::from_millis(10);

/// Runs client `id` until `stop` turns true.
pub async fn client_loop(id: u64, work: Arc<Workload>, seed: u64, stop: watch::Receiver<bool>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pace = tokio::time::interval(CLIENT_PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    // The last value this client saw on each register: a good CAS guess.
    let mut seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    loop {
        pace.tick().await;
        if *stop.borrow() {
            return;
        }
        seq += 1;
        let value = format!("c{id}-{seq}").into_bytes();
        let epoch_ns = u64::try_from(work.key_epoch.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let epoch = work.recorder.now() / epoch_ns;
        let key = register_key(epoch, rng.random_range(0..work.keys.max(1)));
        let roll = rng.random_range(0..100u32);
        let op = match roll {
            0..30 => Op::Get { key },
            30..52 => Op::Put { key, value },
            52..60 => Op::Delete { key },
            60..85 => {
                let expected = if rng.random_bool(0.2) {
                    None
                } else {
                    seen.get(&key).cloned().flatten()
                };
                let new = if rng.random_bool(0.1) {
                    None
                } else {
                    Some(value)
                };
                Op::Cas { key, expected, new }
            }
            _ => Op::Put {
                key: format!("w-c{id}-{seq}").into_bytes(),
                value,
            },
        };
        let node = rng.random_range(0..work.bases.len());
        let op_id = work.recorder.invoke(ClientId(id), op.clone());
        let (outcome, answer) =
            execute_counted(&work.http, &work.bases[node], &op, work.timeout).await;
        work.recorder.count_answer(answer);
        if let Outcome::Ok(returned) = &outcome {
            match (&op, returned) {
                (Op::Get { key }, Returned::Value(v)) => {
                    seen.insert(key.clone(), v.clone());
                }
                (Op::Put { key, value }, _) if key.starts_with(b"k") => {
                    seen.insert(key.clone(), Some(value.clone()));
                }
                (Op::Delete { key }, _) => {
                    seen.insert(key.clone(), None);
                }
                (Op::Cas { key, new, .. }, Returned::Swapped(true)) => {
                    seen.insert(key.clone(), new.clone());
                }
                _ => {}
            }
        }
        work.recorder.complete(op_id, outcome);
    }
}

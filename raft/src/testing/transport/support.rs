//! Helpers the checks share: sending with retries, waiting for deliveries,
//! timing `send` calls.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::timeout;

use super::{
    heartbeat, seq_of, SEND_CALL_HARD_MAX, SEND_CALL_MAX, SLOW_SEND_CALLS_TOLERATED, STALL_TIMEOUT,
};
use crate::message::Message;
use crate::transport::{Inbound, InboundStream, Peer, Transport, TransportError};
use crate::types::NodeId;

/// Sends `seq`, `seq+1`, ... until B receives one numbered `first` or higher;
/// everything B receives must be in order.
pub(super) async fn wait_for_delivery<T: Transport>(
    from: &T,
    to: &Peer,
    inbound: &mut InboundStream,
    seq: &mut u64,
    first: u64,
    what: &str,
    timer: &mut SendTimer,
) {
    let from_id = NodeId::new(from_id_of(to));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_seen: Option<u64> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{what}: no message with seq >= {first} arrived within 15 s (sent up to {seq})"
        );
        let started = Instant::now();
        let result = from.send(to, vec![heartbeat(&from_id, &to.id, *seq, 0)]);
        timer.check(started.elapsed(), what);
        match result {
            Ok(()) | Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {}
            Err(e) => panic!("{what}: send failed with {e}"),
        }
        *seq += 1;
        // Poll for deliveries for a while before sending the next message.
        while let Ok(item) = timeout(Duration::from_millis(20), inbound.recv()).await {
            let Some(Inbound::Message(m)) = item else {
                panic!("{what}: inbound stream ended or sent a snapshot");
            };
            let got = seq_of(&m);
            if let Some(last) = last_seen {
                assert!(got > last, "{what}: message {got} arrived after {last}");
            }
            last_seen = Some(got);
            if got >= first {
                return;
            }
        }
    }
}

/// The suite names servers "a" and "b"; a message to one comes from the other.
fn from_id_of(to: &Peer) -> &'static str {
    if to.id.as_str() == "a" {
        "b"
    } else {
        "a"
    }
}

pub(super) async fn send_with_retry<T: Transport>(
    t: &T,
    to: &Peer,
    msgs: Vec<Message>,
    progress: &mut watch::Receiver<u64>,
    deadline: Instant,
    what: &str,
    timer: &mut SendTimer,
) {
    loop {
        let started = Instant::now();
        let result = t.send(to, msgs.clone());
        timer.check(started.elapsed(), what);
        match result {
            Ok(()) => return,
            Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: send still rejected at the deadline (receiver progress {})",
                    *progress.borrow()
                );
                // Wait for the receiver to make progress, or a moment.
                let _ = timeout(Duration::from_millis(5), progress.changed()).await;
            }
            Err(e) => panic!("{what}: send failed with {e}"),
        }
    }
}

pub(super) async fn recv_message(
    inbound: &mut InboundStream,
    what: &str,
    next: u64,
    total: u64,
) -> Message {
    match timeout(STALL_TIMEOUT, inbound.recv()).await {
        Err(_) => {
            panic!("{what}: nothing arrived for {STALL_TIMEOUT:?} after {next} of {total} messages")
        }
        Ok(None) => panic!("{what}: inbound stream ended after {next} of {total} messages"),
        Ok(Some(Inbound::Snapshot(_))) => panic!("{what}: unexpected snapshot stream"),
        Ok(Some(Inbound::Message(m))) => m,
    }
}

/// Times `send` calls: each must take under [`SEND_CALL_MAX`]. A few calls
/// (see [`SLOW_SEND_CALLS_TOLERATED`]) may exceed it on a loaded machine,
/// never [`SEND_CALL_HARD_MAX`].
#[derive(Debug, Default)]
pub(super) struct SendTimer {
    calls: u64,
    slow: u64,
}

impl SendTimer {
    #[track_caller]
    pub(super) fn check(&mut self, took: Duration, what: &str) {
        self.calls += 1;
        assert!(
            took < SEND_CALL_HARD_MAX,
            "{what}: a send call took {took:?}; send must never block"
        );
        if took >= SEND_CALL_MAX {
            self.slow += 1;
            let tolerated = u64::from(SLOW_SEND_CALLS_TOLERATED) + self.calls / 200;
            assert!(
                self.slow <= tolerated,
                "{what}: {} of {} send calls took over {SEND_CALL_MAX:?} (the last {took:?}); \
                 send must never block",
                self.slow,
                self.calls
            );
        }
    }
}

/// Unwraps a joined task, re-raising its panic so the message is kept.
pub(super) fn rethrow<T>(joined: Result<T, tokio::task::JoinError>) -> T {
    match joined {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a suite task was cancelled: {e}"),
    }
}

//! The checks of delivery, restart, dead peers and shutdown.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::timeout;

use super::support::{recv_message, rethrow, send_with_retry, wait_for_delivery, SendTimer};
use super::{heartbeat, seq_of, snapshot_offer, PatternReader, TransportFactory, ORDERED_BATCH};
use crate::message::Message;
use crate::transport::{Peer, Transport, TransportError};
use crate::types::NodeId;

/// Check: 100 000 messages (or `total`) sent from A to B in batches arrive
/// all, in order, without duplicates. A `Backpressure` (or a transient
/// `Unreachable`) makes the sender wait for the receiver's progress and retry.
pub async fn ordered_delivery<F: TransportFactory>(factory: &mut F, total: u64) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let mut inbound = b
        .take_inbound()
        .expect("ordered_delivery: B's first take_inbound is None");
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    let (progress_tx, mut progress) = watch::channel(0u64);

    let (from, to) = (a_id.clone(), b_id.clone());
    let receiver = tokio::spawn(async move {
        let mut next = 0u64;
        while next < total {
            let m = recv_message(&mut inbound, "ordered_delivery", next, total).await;
            assert_eq!(
                (&m.from, &m.to),
                (&from, &to),
                "ordered_delivery: wrong from/to on message {next}"
            );
            let seq = seq_of(&m);
            assert!(
                seq >= next,
                "ordered_delivery: duplicate or reordered message: got seq {seq} after {}",
                next - 1
            );
            assert_eq!(
                seq, next,
                "ordered_delivery: message(s) {next}..{seq} lost on a healthy link"
            );
            next += 1;
            if next.is_multiple_of(64) || next == total {
                progress_tx.send_replace(next);
            }
        }
        // Anything arriving now is a duplicate.
        if let Ok(Some(extra)) = timeout(Duration::from_millis(100), inbound.recv()).await {
            panic!("ordered_delivery: message after all {total} arrived: {extra:?}");
        }
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq = 0u64;
    while seq < total {
        let end = (seq + ORDERED_BATCH as u64).min(total);
        let batch: Vec<Message> = (seq..end).map(|s| heartbeat(&a_id, &b_id, s, 0)).collect();
        send_with_retry(
            &a,
            &to_b,
            batch,
            &mut progress,
            deadline,
            "ordered_delivery",
            &mut timer,
        )
        .await;
        seq = end;
    }
    match timeout(Duration::from_secs(120), receiver).await {
        Ok(joined) => rethrow(joined),
        Err(_) => panic!(
            "ordered_delivery: receiver did not finish within 120 s; progress {}",
            *progress.borrow()
        ),
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Check: when B goes away, A's sends fail or are lost without blocking;
/// once B restarts at the same address, new sends arrive, in order.
pub async fn peer_restart_and_reconnect<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let address = b.local_addr();
    let to_b = Peer {
        id: b_id.clone(),
        address: address.clone(),
    };
    let mut inbound = b
        .take_inbound()
        .expect("restart: B's first take_inbound is None");

    let mut seq = 0;
    wait_for_delivery(
        &a,
        &to_b,
        &mut inbound,
        &mut seq,
        0,
        "restart: before the restart",
        &mut timer,
    )
    .await;

    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("restart: B's shutdown took over 10 s");
    drop(inbound);
    drop(b);

    // B is gone: sends must neither block nor fail with anything but
    // Backpressure or Unreachable.
    // `seq` is the next number to send; every number is sent once.
    for _ in 0..50 {
        let started = Instant::now();
        let result = a.send(&to_b, vec![heartbeat(&a_id, &b_id, seq, 0)]);
        timer.check(started.elapsed(), "restart: send while B is down");
        match result {
            Ok(()) | Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {}
            Err(e) => panic!("restart: send while B is down failed with {e}"),
        }
        seq += 1;
    }

    let b = factory.respawn(&b_id, &address).await;
    assert_eq!(
        b.local_addr(),
        address,
        "restart: B came back at another address"
    );
    let mut inbound = b
        .take_inbound()
        .expect("restart: restarted B's take_inbound is None");
    // Messages queued while B was down may still arrive (in order); the
    // check waits for one sent after the restart.
    let first_new = seq;
    wait_for_delivery(
        &a,
        &to_b,
        &mut inbound,
        &mut seq,
        first_new,
        "restart: after the restart",
        &mut timer,
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Check: sends to a peer that vanished return quickly (each call under
/// [`SEND_CALL_MAX`](super::SEND_CALL_MAX)) and the queue stays bounded: the transport starts
/// answering `Backpressure` or `Unreachable` instead of queueing forever.
pub async fn dead_peer_sends_are_fast_and_bounded<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    const BATCH: usize = 16;
    const MAX_CALLS: u64 = 200_000;
    const CALLS_AFTER_FIRST_REJECTION: u64 = 10_000;
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };
    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("dead peer: B's shutdown took over 10 s");
    drop(b);

    let batch: Vec<Message> = (0..BATCH as u64)
        .map(|s| heartbeat(&a_id, &b_id, s, 0))
        .collect();
    let (mut first_rejection, mut accepted_after, mut calls) = (None, 0u64, 0u64);
    while calls < MAX_CALLS {
        let started = Instant::now();
        let result = a.send(&to_b, batch.clone());
        timer.check(started.elapsed(), "dead peer: send");
        match result {
            Ok(()) if first_rejection.is_some() => accepted_after += 1,
            Ok(()) => {}
            Err(TransportError::Backpressure(_) | TransportError::Unreachable { .. }) => {
                first_rejection.get_or_insert(calls);
            }
            Err(e) => {
                panic!("dead peer: send failed with {e}, expected Backpressure or Unreachable")
            }
        }
        calls += 1;
        if first_rejection.is_some_and(|first| calls - first > CALLS_AFTER_FIRST_REJECTION) {
            break;
        }
        if calls % 1024 == 0 {
            // Let the transport's tasks notice the dead peer.
            tokio::task::yield_now().await;
        }
    }
    let first = first_rejection.unwrap_or_else(|| {
        panic!("dead peer: {MAX_CALLS} sends of {BATCH} messages to a dead peer were all accepted: unbounded queue")
    });
    assert!(
        accepted_after * 10 <= CALLS_AFTER_FIRST_REJECTION,
        "dead peer: after the first rejection (call {first}), {accepted_after} of the next \
         {CALLS_AFTER_FIRST_REJECTION} sends were accepted again"
    );
    a.shutdown().await;
}

/// Check: `shutdown` closes everything. Later sends fail with `Shutdown`,
/// snapshots too, the inbound stream ends, and `shutdown` is idempotent.
/// Also checks that `take_inbound` returns `Some` exactly once.
pub async fn shutdown_closes_everything<F: TransportFactory>(factory: &mut F) {
    let mut timer = SendTimer::default();
    let (a_id, b_id) = (NodeId::new("a"), NodeId::new("b"));
    let a = factory.spawn(&a_id).await;
    let b = factory.spawn(&b_id).await;
    let mut a_inbound = a
        .take_inbound()
        .expect("shutdown: A's first take_inbound is None");
    assert!(
        a.take_inbound().is_none(),
        "shutdown: take_inbound returned Some twice"
    );
    let mut b_inbound = b
        .take_inbound()
        .expect("shutdown: B's first take_inbound is None");
    let to_a = Peer {
        id: a_id.clone(),
        address: a.local_addr(),
    };
    let to_b = Peer {
        id: b_id.clone(),
        address: b.local_addr(),
    };

    // Connections in both directions are up.
    let mut seq = 0;
    wait_for_delivery(
        &a,
        &to_b,
        &mut b_inbound,
        &mut seq,
        0,
        "shutdown: A to B",
        &mut timer,
    )
    .await;
    let mut seq = 0;
    wait_for_delivery(
        &b,
        &to_a,
        &mut a_inbound,
        &mut seq,
        0,
        "shutdown: B to A",
        &mut timer,
    )
    .await;

    timeout(Duration::from_secs(10), a.shutdown())
        .await
        .expect("shutdown: A's shutdown took over 10 s");
    match a.send(&to_b, vec![heartbeat(&a_id, &b_id, 99, 0)]) {
        Err(TransportError::Shutdown) => {}
        other => panic!("shutdown: send after shutdown returned {other:?}, expected Err(Shutdown)"),
    }
    let offer = snapshot_offer(&a_id, &b_id, 10);
    match timeout(
        Duration::from_secs(5),
        a.send_snapshot(&to_b, offer, Box::new(PatternReader::new(10))),
    )
    .await
    {
        Ok(Err(TransportError::Shutdown)) => {}
        Ok(other) => panic!(
            "shutdown: send_snapshot after shutdown returned {other:?}, expected Err(Shutdown)"
        ),
        Err(_) => panic!("shutdown: send_snapshot after shutdown did not resolve within 5 s"),
    }
    let ended = timeout(Duration::from_secs(10), async {
        while a_inbound.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "shutdown: A's inbound stream did not end within 10 s of shutdown"
    );

    // B sending to the closed A neither blocks nor panics.
    let started = Instant::now();
    let _ = b.send(&to_a, vec![heartbeat(&b_id, &a_id, 1, 0)]);
    timer.check(started.elapsed(), "shutdown: B's send to the shut-down A");

    timeout(Duration::from_secs(10), a.shutdown())
        .await
        .expect("shutdown: a second shutdown took over 10 s");
    timeout(Duration::from_secs(10), b.shutdown())
        .await
        .expect("shutdown: B's shutdown took over 10 s");
    let ended = timeout(Duration::from_secs(10), async {
        while b_inbound.recv().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "shutdown: B's inbound stream did not end within 10 s of shutdown"
    );
}

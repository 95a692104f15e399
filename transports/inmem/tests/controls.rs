//! The hub's test controls: disconnect, partition, one-way cuts, drops and delay.

use std::time::{Duration, Instant};

use raftkit::testing::transport::{heartbeat, seq_of};
use raftkit::transport::InboundStream;
use raftkit::{Inbound, NodeId, Peer, Transport};
use raftkit_inmem::{InmemNetwork, InmemTransport};
use tokio::time::timeout;

/// How long to wait before concluding that a message was lost.
const QUIET: Duration = Duration::from_millis(100);

struct Node {
    id: NodeId,
    t: InmemTransport,
    inbound: InboundStream,
}

impl Node {
    fn peer(&self) -> Peer {
        Peer {
            id: self.id.clone(),
            address: self.t.local_addr(),
        }
    }
}

fn nodes(net: &InmemNetwork, names: &[&str]) -> Vec<Node> {
    names
        .iter()
        .map(|name| {
            let t = net.endpoint(NodeId::new(name), format!("addr-{name}").as_str().into());
            let inbound = t
                .take_inbound()
                .expect("fresh endpoint has its inbound stream");
            Node {
                id: NodeId::new(name),
                t,
                inbound,
            }
        })
        .collect()
}

fn send(from: &Node, to: &Node, seq: u64) {
    from.t
        .send(&to.peer(), vec![heartbeat(&from.id, &to.id, seq, 0)])
        .unwrap_or_else(|e| panic!("send {} -> {} failed: {e}", from.id, to.id));
}

/// The seqs that arrive at `node` until nothing comes for [`QUIET`].
async fn drain(node: &mut Node) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(Some(item)) = timeout(QUIET, node.inbound.recv()).await {
        match item {
            Inbound::Message(m) => seqs.push(seq_of(&m)),
            Inbound::Snapshot(_) => panic!("unexpected snapshot at {}", node.id),
        }
    }
    seqs
}

async fn delivered(from: &Node, to: &mut Node, seq: u64) -> bool {
    send(from, to, seq);
    let got = drain(to).await;
    assert!(
        got.is_empty() || got == [seq],
        "unexpected deliveries {got:?} for seq {seq}"
    );
    got == [seq]
}

#[tokio::test]
async fn disconnected_node_neither_sends_nor_receives_until_reconnected() {
    let net = InmemNetwork::new(1);
    let [mut a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    net.disconnect(&b.id);
    assert!(
        !delivered(&a, &mut b, 1).await,
        "message to a disconnected node arrived"
    );
    assert!(
        !delivered(&b, &mut a, 2).await,
        "message from a disconnected node arrived"
    );
    net.reconnect(&b.id);
    assert!(
        delivered(&a, &mut b, 3).await,
        "message after reconnect was lost"
    );
    assert!(
        delivered(&b, &mut a, 4).await,
        "message after reconnect was lost"
    );
}

#[tokio::test]
async fn partition_separates_groups_and_heal_joins_them() {
    let net = InmemNetwork::new(1);
    let [mut a, mut b, mut c] = <[Node; 3]>::try_from(nodes(&net, &["a", "b", "c"]))
        .ok()
        .expect("three nodes");
    net.partition(&[&[a.id.clone()], &[b.id.clone(), c.id.clone()]]);
    assert!(
        delivered(&b, &mut c, 1).await,
        "message within a group was lost"
    );
    assert!(
        !delivered(&a, &mut b, 2).await,
        "message across the partition arrived"
    );
    assert!(
        !delivered(&c, &mut a, 3).await,
        "message across the partition arrived"
    );
    net.heal();
    assert!(
        delivered(&a, &mut b, 4).await,
        "message after heal was lost"
    );
    assert!(
        delivered(&c, &mut a, 5).await,
        "message after heal was lost"
    );
}

#[tokio::test]
async fn nodes_named_in_no_group_form_their_own_side() {
    let net = InmemNetwork::new(1);
    let [mut a, b, mut c] = <[Node; 3]>::try_from(nodes(&net, &["a", "b", "c"]))
        .ok()
        .expect("three nodes");
    net.partition(&[std::slice::from_ref(&b.id)]);
    assert!(
        delivered(&a, &mut c, 1).await,
        "unnamed nodes should reach each other"
    );
    assert!(
        !delivered(&b, &mut a, 2).await,
        "named group should be cut from the rest"
    );
}

#[tokio::test]
async fn cut_is_one_way() {
    let net = InmemNetwork::new(1);
    let [mut a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    net.cut(&a.id, &b.id);
    assert!(
        !delivered(&a, &mut b, 1).await,
        "message over a cut link arrived"
    );
    assert!(
        delivered(&b, &mut a, 2).await,
        "the reverse direction of a cut must work"
    );
    net.heal();
    assert!(
        delivered(&a, &mut b, 3).await,
        "message after heal was lost"
    );
}

#[tokio::test]
async fn messages_in_flight_are_lost_when_the_link_breaks() {
    let net = InmemNetwork::new(1);
    let [a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    net.set_delay(Duration::from_millis(50));
    send(&a, &b, 1);
    net.cut(&a.id, &b.id);
    assert_eq!(
        drain(&mut b).await,
        Vec::<u64>::new(),
        "a delayed message crossed a link cut meanwhile"
    );
}

/// Which of 1000 messages survive a drop probability of 0.3 on a network seeded with `seed`.
async fn survivors(seed: u64) -> Vec<u64> {
    let net = InmemNetwork::new(seed);
    let [a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    net.set_drop_probability(0.3);
    let msgs = (0..1000).map(|s| heartbeat(&a.id, &b.id, s, 0)).collect();
    a.t.send(&b.peer(), msgs).expect("send");
    drain(&mut b).await
}

#[tokio::test]
async fn drop_probability_is_seeded_and_roughly_right() {
    let first = survivors(7).await;
    assert_eq!(
        first,
        survivors(7).await,
        "the same seed must drop the same messages"
    );
    assert_ne!(
        first,
        survivors(8).await,
        "another seed should drop other messages"
    );
    assert!(
        (600..=800).contains(&first.len()),
        "kept {} of 1000 at p = 0.3",
        first.len()
    );
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "survivors must stay in order"
    );
}

#[tokio::test]
async fn delay_holds_messages_back_and_keeps_order() {
    let net = InmemNetwork::new(1);
    let [a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    let delay = Duration::from_millis(80);
    net.set_delay(delay);
    let started = Instant::now();
    for seq in 0..10 {
        send(&a, &b, seq);
    }
    let first = timeout(Duration::from_secs(5), b.inbound.recv())
        .await
        .expect("delayed message did not arrive within 5 s");
    assert!(
        started.elapsed() >= delay,
        "message arrived after {:?}, before the {delay:?} delay",
        started.elapsed()
    );
    let Some(Inbound::Message(m)) = first else {
        panic!("expected a message")
    };
    let mut seqs = vec![seq_of(&m)];
    seqs.extend(drain(&mut b).await);
    assert_eq!(
        seqs,
        (0..10).collect::<Vec<_>>(),
        "delayed messages lost or reordered"
    );
}

#[tokio::test]
async fn full_pipe_answers_backpressure() {
    let config = raftkit_inmem::InmemConfig {
        queue_batches: 2,
        inbound_capacity: 1,
        ..Default::default()
    };
    let net = InmemNetwork::with_config(1, config);
    let a = net.endpoint("a".into(), "addr-a".into());
    let b = net.endpoint("b".into(), "addr-b".into()); // Never read.
    let to_b = Peer {
        id: "b".into(),
        address: b.local_addr(),
    };
    let mut backpressure = false;
    for seq in 0..100 {
        match a.send(&to_b, vec![heartbeat(&"a".into(), &"b".into(), seq, 0)]) {
            Ok(()) => tokio::task::yield_now().await,
            Err(raftkit::TransportError::Backpressure(id)) => {
                assert_eq!(id.as_str(), "b");
                backpressure = true;
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        backpressure,
        "100 sends to a peer that never reads were all accepted"
    );
}

/// Messages go straight into the receiver's stream when nothing waits ahead
/// of them; once some wait in the pipe (a delay, a full stream), later ones
/// queue behind them. Order holds across every switch.
#[tokio::test]
async fn direct_and_piped_deliveries_keep_one_order() {
    let config = raftkit_inmem::InmemConfig {
        inbound_capacity: 3,
        ..Default::default()
    };
    let net = InmemNetwork::with_config(1, config);
    let [a, mut b] = <[Node; 2]>::try_from(nodes(&net, &["a", "b"]))
        .ok()
        .expect("two nodes");
    // A delayed message, then an undelayed one: the second waits for it.
    net.set_delay(Duration::from_millis(30));
    send(&a, &b, 0);
    net.set_delay(Duration::ZERO);
    send(&a, &b, 1);
    assert_eq!(
        drain(&mut b).await,
        [0, 1],
        "a message overtook a delayed one"
    );
    // Three fit in b's stream; seven wait in the pipe, and the next sends
    // queue behind them.
    let batch = (2..12).map(|s| heartbeat(&a.id, &b.id, s, 0)).collect();
    a.t.send(&b.peer(), batch).expect("send");
    for seq in 12..15 {
        send(&a, &b, seq);
    }
    assert_eq!(
        drain(&mut b).await,
        (2..15).collect::<Vec<_>>(),
        "messages lost or reordered"
    );
    // With the pipe drained, a send delivers at once again.
    send(&a, &b, 15);
    match b.inbound.try_recv() {
        Ok(Inbound::Message(m)) => assert_eq!(seq_of(&m), 15),
        other => panic!("an idle link should deliver during send, got {other:?}"),
    }
}

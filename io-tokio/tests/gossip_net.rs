//! The gossip pool on real sockets (`tern::gossip`): UDP datagrams and TCP
//! state exchanges between nodes on different loopback addresses and the same
//! port, as Consul agents on one host would be (serf_lan 8301 on each IP).
//!
//! Timings are shortened from the LAN defaults (probe every 200 ms instead of
//! 1 s) so a failure is detected in seconds; every wait is a generous "within
//! N seconds", never a timing assertion.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration as StdDuration;

use tern::gossip::{GossipError, GossipHandle, GossipNode, PoolKind};
use tern_core::gossip::packet::{MemberInfo, PeerEntry, PeerState};
use tern_core::gossip::{
    decode_packet, encode_packet, Body, ForceLeaveError, GossipConfig, GossipEvent, Member, Packet,
    Status, Tags, Version,
};
use tern_core::{Duration, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

fn name(i: u8) -> String {
    format!("node{i}")
}

fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, i + 1))
}

/// A LAN config for node `i` with timings shortened for a test: probes every
/// 200 ms (LAN: 1 s), gossip every 50 ms, a push-pull every 3 s.
fn fast_config(i: u8) -> GossipConfig {
    let id = NodeId(u128::from(i) + 1);
    let tags = Tags::server("dc1", 8300, id, 3, "0.1.0");
    // An empty address: the node advertises its bind address.
    let mut c = GossipConfig::lan(&name(i), id, "", tags);
    c.probe_interval = Duration::from_millis(200);
    c.probe_timeout = Duration::from_millis(100);
    c.gossip_interval = Duration::from_millis(50);
    c.push_pull_interval = Duration::from_secs(3);
    c.reconnect_interval = Duration::from_secs(1);
    c.join_timeout = Duration::from_secs(2);
    c.join_retry_min = Duration::from_millis(200);
    c.join_retry_max = Duration::from_secs(1);
    c.leave_propagate_delay = Duration::from_millis(300);
    c
}

/// The longest a failure should take to be seen with [`fast_config`] and at
/// most 10 members (log10(n) < 1, so memberlist's scale is 1): a probe round
/// over every member, then a suspicion that no one confirms, which runs
/// `suspicion_max_timeout_mult` times the minimum of `suspicion_mult` probe
/// intervals.
fn failure_detection_bound(c: &GossipConfig, n: u64) -> StdDuration {
    let round = c.probe_interval.saturating_mul(n);
    let suspicion = c
        .probe_interval
        .saturating_mul(u64::from(c.suspicion_mult))
        .saturating_mul(u64::from(c.suspicion_max_timeout_mult));
    StdDuration::from_nanos((round + suspicion).as_nanos())
}

/// The nodes' log lines, with `RUST_LOG=info` (and `--nocapture`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn start(i: u8, port: u16) -> std::io::Result<GossipHandle> {
    logs();
    GossipNode::start(fast_config(i), SocketAddr::new(ip(i), port), PoolKind::Lan).await
}

/// `n` nodes on 127.0.0.1..n, all on one port (the first node's, chosen by
/// the OS), none joined. Retried on another port if one of the addresses is
/// taken by something else on the machine.
async fn start_nodes(n: u8) -> (u16, Vec<GossipHandle>) {
    'attempt: for _ in 0..5 {
        let first = start(0, 0).await.expect("bind 127.0.0.1:0");
        let port = first.local_addr().port();
        let mut nodes = vec![first];
        for i in 1..n {
            match start(i, port).await {
                Ok(h) => nodes.push(h),
                Err(_) => continue 'attempt,
            }
        }
        return (port, nodes);
    }
    panic!("no port free on every loopback address");
}

/// Polls `check` every 50 ms until it holds; panics after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: StdDuration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

async fn view(node: &GossipHandle, of: &str) -> Option<Member> {
    node.members().await.into_iter().find(|m| m.name == of)
}

/// Whether every node in `observers` sees member `of` with `status` (and,
/// for alive, not suspected), and at `generation` when given.
async fn all_see(
    nodes: &[GossipHandle],
    observers: &[usize],
    of: &str,
    status: Status,
    generation: Option<u64>,
) -> bool {
    for &o in observers {
        let Some(m) = view(&nodes[o], of).await else {
            return false;
        };
        if m.status != status || (status == Status::Alive && m.suspect) {
            return false;
        }
        if generation.is_some_and(|g| m.version.generation != g) {
            return false;
        }
    }
    true
}

async fn converged_alive(nodes: &[GossipHandle], n: usize) -> bool {
    for node in nodes {
        let ms = node.members().await;
        if ms.len() != n || ms.iter().any(|m| m.status != Status::Alive || m.suspect) {
            return false;
        }
    }
    true
}

/// Joins nodes 1.. through node 0; each join is a TCP push-pull answered on
/// the connection it came in on.
async fn join_all_through_first(nodes: &[GossipHandle], port: u16) {
    let seed = SocketAddr::new(ip(0), port).to_string();
    for node in &nodes[1..] {
        let answered = node.join(vec![seed.clone()]).await;
        assert_eq!(
            answered,
            Ok(seed.clone()),
            "{} joins through node0",
            node.name()
        );
    }
}

/// The story of serf's `TestSerf_eventsJoin`, `TestSerf_eventsFailed`,
/// `TestSerf_reconnect` and `TestSerf_eventsLeave` (hashicorp/serf
/// serf/serf_test.go) on real sockets: five nodes on five loopback IPs and
/// one port join through one and converge; one is killed and the others see
/// it failed; it restarts with a new generation and is alive again; another
/// leaves and is `left` everywhere.
#[tokio::test]
async fn nodes_on_loopback_converge_see_a_crash_as_failed_a_restart_as_alive_and_a_leave_as_left() {
    // Phase 1: five nodes, each bound to its own 127.0.0.x and the same port,
    // join through node0 and converge to five alive members.
    let (port, mut nodes) = start_nodes(5).await;
    let started = std::time::Instant::now();
    join_all_through_first(&nodes, port).await;
    wait_for("5 nodes converge to all alive", secs(20), || {
        converged_alive(&nodes, 5)
    })
    .await;
    eprintln!("measured: 5 nodes converged in {:?}", started.elapsed());
    // Each member is known at its bind address (127.0.0.x:port): that is
    // what it advertised and where its datagrams came from.
    for m in nodes[0].members().await {
        let i: u8 = m.name.trim_start_matches("node").parse().unwrap();
        assert_eq!(m.address, SocketAddr::new(ip(i), port).to_string());
    }

    // Phase 2: node3 crashes (its task is aborted, its sockets closed, no
    // leave). The others declare it failed within the detection bound, and
    // nobody else.
    let old_generation = nodes[3].generation();
    let bound = failure_detection_bound(&fast_config(0), 5);
    let crashed = nodes.remove(3);
    crashed.stop().await;
    let stopped = std::time::Instant::now();
    let others = [0, 1, 2, 3]; // indexes into `nodes`: node0, node1, node2, node4
    wait_for("node3 failed at every other node", bound * 3, || {
        all_see(&nodes, &others, "node3", Status::Failed, None)
    })
    .await;
    eprintln!(
        "measured: a crash seen as failed everywhere in {:?} (bound {bound:?})",
        stopped.elapsed()
    );
    // (A member may be suspected for a moment on a loaded machine; what
    // must not happen is a live member declared failed.)
    for &o in &others {
        for m in nodes[o].members().await {
            if m.name != "node3" {
                assert_eq!(m.status, Status::Alive, "{} at {}", m.name, nodes[o].name());
            }
        }
    }

    // Phase 3: node3 restarts at the same address with a new generation and
    // joins again: alive everywhere at that generation.
    let restarted = start(3, port).await.expect("rebind 127.0.0.4");
    assert!(restarted.generation() > old_generation);
    let generation = restarted.generation();
    nodes.insert(3, restarted);
    let seed = SocketAddr::new(ip(0), port).to_string();
    assert_eq!(nodes[3].join(vec![seed.clone()]).await, Ok(seed));
    wait_for("the restarted node3 alive everywhere", secs(20), || {
        all_see(
            &nodes,
            &[0, 1, 2, 4],
            "node3",
            Status::Alive,
            Some(generation),
        )
    })
    .await;
    wait_for("5 nodes converge again", secs(20), || {
        converged_alive(&nodes, 5)
    })
    .await;

    // Phase 4: node4 leaves. `leave` returns once the leave was broadcast;
    // the others show it `left` (not failed), and it shows itself left.
    tokio::time::timeout(secs(10), nodes[4].leave())
        .await
        .expect("leave returns")
        .expect("leave succeeds");
    assert_eq!(
        view(&nodes[4], "node4").await.map(|m| m.status),
        Some(Status::Left)
    );
    let left = std::time::Instant::now();
    wait_for("node4 left at every other node", secs(10), || {
        all_see(&nodes, &[0, 1, 2, 3], "node4", Status::Left, None)
    })
    .await;
    eprintln!(
        "measured: left everywhere {:?} after leave() returned",
        left.elapsed()
    );
    // A node that left joins nothing more.
    assert_eq!(
        nodes[4].join(vec!["127.0.0.1".into()]).await,
        Err(GossipError::Leaving)
    );
}

/// serf's `TestSerf_forceLeaveFailed` (serf/serf_test.go), on sockets: a
/// crashed member is failed, then force-left by an operator at one node, and
/// every node shows it `left`; an alive or unknown member is refused.
#[tokio::test]
async fn force_leave_turns_a_failed_member_into_left_everywhere() {
    let (port, mut nodes) = start_nodes(4).await;
    join_all_through_first(&nodes, port).await;
    wait_for("4 nodes converge", secs(20), || converged_alive(&nodes, 4)).await;

    // Refused: alive, and unknown.
    assert_eq!(
        nodes[0].force_leave("node1", false).await,
        Err(GossipError::ForceLeave {
            name: "node1".into(),
            reason: ForceLeaveError::NotFailed
        })
    );
    assert_eq!(
        nodes[0].force_leave("nobody", false).await,
        Err(GossipError::ForceLeave {
            name: "nobody".into(),
            reason: ForceLeaveError::NotFound
        })
    );
    assert_eq!(
        view(&nodes[2], "node1").await.map(|m| m.status),
        Some(Status::Alive)
    );

    let bound = failure_detection_bound(&fast_config(0), 4);
    nodes.remove(3).stop().await;
    wait_for("node3 failed everywhere", bound * 3, || {
        all_see(&nodes, &[0, 1, 2], "node3", Status::Failed, None)
    })
    .await;
    assert_eq!(nodes[0].force_leave("node3", false).await, Ok(()));
    wait_for("node3 left everywhere", secs(10), || {
        all_see(&nodes, &[0, 1, 2], "node3", Status::Left, None)
    })
    .await;
}

/// memberlist's `TestTCPPushPull` and its transport's bind address
/// (hashicorp/memberlist net_test.go, net_transport.go), against a raw peer:
/// the join's push-pull is dialed from the node's bind IP, the peer's answer
/// on that same connection completes the join, and the node's datagrams
/// (the probes of the member it learned) come from its bind address and port.
#[tokio::test]
async fn a_join_is_a_push_pull_over_tcp_from_the_bind_address_answered_on_its_connection() {
    logs();
    let node = GossipNode::start(fast_config(1), SocketAddr::new(ip(1), 0), PoolKind::Lan)
        .await
        .expect("bind 127.0.0.2:0");
    let node_addr = node.local_addr();

    // A raw peer on 127.0.0.8: TCP and UDP on one port.
    let peer_tcp = TcpListener::bind((ip(7), 0)).await.unwrap();
    let peer_addr = peer_tcp.local_addr().unwrap();
    let peer_udp = UdpSocket::bind(peer_addr).await.unwrap();

    // The join dials the peer from 127.0.0.2 and sends its state.
    let join = node.join(vec![peer_addr.to_string()]);
    let peer = async {
        let (mut conn, from) = peer_tcp.accept().await.unwrap();
        assert_eq!(from.ip(), ip(1), "the push-pull is dialed from the bind IP");
        let request = decode_packet(&read_frame(&mut conn).await).unwrap();
        let Body::PushPull {
            seq,
            reply: true,
            join: true,
            members,
        } = request.body
        else {
            panic!("a join is a push-pull asking for our state: {request:?}");
        };
        assert!(members
            .iter()
            .any(|e| e.info.name == "node1" && e.info.address == node_addr.to_string()));
        // Our state, on the same connection (the node's source port is
        // ephemeral: nothing listens there).
        let answer = Packet {
            body: Body::PushPull {
                seq,
                reply: false,
                join: false,
                members: vec![PeerEntry {
                    info: MemberInfo {
                        name: "raw".into(),
                        node_id: NodeId(99),
                        address: peer_addr.to_string(),
                        tags: Tags::client("dc1", NodeId(99), "0.1.0"),
                        version: Version {
                            generation: 1,
                            incarnation: 0,
                        },
                    },
                    state: PeerState::Alive,
                }],
            },
            updates: Vec::new(),
        };
        write_frame(&mut conn, &encode_packet(&answer)).await;
    };
    let (joined, ()) = tokio::time::timeout(secs(10), async { tokio::join!(join, peer) })
        .await
        .expect("the join completes");
    assert_eq!(joined, Ok(peer_addr.to_string()));
    assert_eq!(
        view(&node, "raw").await.map(|m| m.status),
        Some(Status::Alive)
    );

    // The node now probes the raw member over UDP, from its gossip socket.
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(secs(10), peer_udp.recv_from(&mut buf))
        .await
        .expect("a datagram within 10 s")
        .unwrap();
    assert_eq!(
        from, node_addr,
        "datagrams leave from the bind address and port"
    );
    let packet = decode_packet(&buf[..n]).unwrap();
    assert!(
        matches!(&packet.body, Body::Ping { target, .. } if target == "raw")
            || matches!(packet.body, Body::Gossip),
        "{packet:?}"
    );
}

/// Consul's retry-join (agent/retry_join.go; "Join cluster failed, will
/// retry" at warn): a join address where nothing listens fails the first
/// attempt with the reason, a missing port is the node's own gossip port, and
/// the pool keeps retrying with backoff.
#[tokio::test]
async fn a_join_to_an_address_where_nothing_listens_fails_says_why_and_is_retried() {
    logs();
    let mut config = fast_config(1);
    config.join_timeout = Duration::from_millis(500);
    let node = GossipNode::start(config, SocketAddr::new(ip(1), 0), PoolKind::Lan)
        .await
        .expect("bind 127.0.0.2:0");
    let port = node.local_addr().port();
    let mut events = node.subscribe();

    // 127.0.0.11 at our own port: nothing listens there.
    let err = node.join(vec![ip(10).to_string()]).await.unwrap_err();
    let GossipError::JoinFailed(why) = err else {
        panic!("a failed join attempt: {err:?}");
    };
    let target = SocketAddr::new(ip(10), port).to_string();
    assert!(why.contains(&target), "{why}");
    assert!(why.contains("refused"), "{why}");

    // The pool retries on its own: a second failed attempt follows.
    let attempt = tokio::time::timeout(secs(10), async {
        loop {
            if let Ok(GossipEvent::JoinFailed {
                attempt, retry_in, ..
            }) = events.recv().await
            {
                if attempt >= 2 {
                    return (attempt, retry_in);
                }
            }
        }
    })
    .await
    .expect("a second attempt within 10 s");
    assert_eq!(attempt.0, 2);
    assert!(attempt.1.is_some(), "retries forever (join_attempts_max 0)");
    assert_eq!(node.members().await.len(), 1, "alone");
}

/// memberlist drops what it cannot decode and carries on (`handleCommand`'s
/// "Failed to decode" in net.go; Consul's issue 8's bad input): garbage
/// datagrams and an oversized TCP frame change no member, the drop is
/// reported as an event, and the node still takes a new member.
#[tokio::test]
async fn malformed_datagrams_and_streams_change_nothing_and_the_node_keeps_working() {
    let (port, mut nodes) = start_nodes(3).await;
    join_all_through_first(&nodes, port).await;
    wait_for("3 nodes converge", secs(20), || converged_alive(&nodes, 3)).await;
    let before = summary(&nodes[0].members().await);
    let mut events = nodes[0].subscribe();

    // Garbage, a known version byte with junk, and an empty datagram, from a
    // raw socket on 127.0.0.10.
    let raw = UdpSocket::bind((ip(9), 0)).await.unwrap();
    let target = SocketAddr::new(ip(0), port);
    for junk in [
        &b"\xff\xfe garbage"[..],
        &b"\x01\xff\xff\xff\xff\xff"[..],
        &[][..],
    ] {
        raw.send_to(junk, target).await.unwrap();
    }
    // The first drop is reported (later ones within the interval are counted).
    let dropped = tokio::time::timeout(secs(10), async {
        loop {
            match events.recv().await {
                Ok(GossipEvent::PacketDropped { from, .. }) => return from,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events closed: {e}"),
            }
        }
    })
    .await
    .expect("a PacketDropped event");
    assert_eq!(dropped, raw.local_addr().unwrap().to_string());

    // A TCP frame announcing 1 GiB is refused before anything is read: the
    // node closes the connection.
    let mut conn = TcpStream::connect(target).await.unwrap();
    conn.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("the node closes the connection");
    assert!(read.is_err() || rest.is_empty(), "no answer to a bad frame");

    // Nothing changed, and after a few more probe rounds nothing has.
    assert_eq!(summary(&nodes[0].members().await), before);
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    assert_eq!(summary(&nodes[0].members().await), before);

    // And it keeps working: a fourth node joins through it.
    let fourth = start(3, port).await.expect("bind 127.0.0.4");
    let seed = target.to_string();
    assert_eq!(fourth.join(vec![seed.clone()]).await, Ok(seed));
    nodes.push(fourth);
    wait_for("4 nodes converge", secs(20), || converged_alive(&nodes, 4)).await;
}

/// Members as (name, address, status): what a bad packet must not change.
fn summary(members: &[Member]) -> Vec<(String, String, Status)> {
    members
        .iter()
        .map(|m| (m.name.clone(), m.address.clone(), m.status))
        .collect()
}

fn secs(s: u64) -> StdDuration {
    StdDuration::from_secs(s)
}

async fn read_frame(conn: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; 4];
    conn.read_exact(&mut header).await.unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    conn.read_exact(&mut payload).await.unwrap();
    payload
}

async fn write_frame(conn: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    conn.write_all(&frame).await.unwrap();
}

/// Two joins asked at once (the agent's background retry-join and an
/// operator's `tern join`, agent/retry_join.go and agent_endpoint.go
/// `AgentJoin`) are two attempts, each answered with its own result: one
/// never takes over or answers for the other.
#[tokio::test]
async fn concurrent_joins_each_get_their_own_attempt_and_answer() {
    let (port, nodes) = start_nodes(2).await;
    let dead = SocketAddr::new(ip(10), port).to_string();
    let live = SocketAddr::new(ip(1), port).to_string();
    let (to_dead, to_live) = tokio::join!(
        nodes[0].join(vec![dead.clone()]),
        nodes[0].join(vec![live.clone()])
    );
    let Err(GossipError::JoinFailed(why)) = to_dead else {
        panic!("the join where nothing listens fails: {to_dead:?}");
    };
    assert!(why.contains(&dead) && !why.contains(&live), "{why}");
    assert_eq!(to_live, Ok(live));
    wait_for("both nodes see each other", secs(10), || {
        converged_alive(&nodes, 2)
    })
    .await;
}

//! The server port's dialer: outbound connections leave from the agent's
//! bind address, as Consul's connection pool dials from its RPC bind
//! address, so peers, firewalls and partition tests see which agent talks.

use std::net::{IpAddr, Ipv4Addr};

use tokio::net::TcpListener;

#[tokio::test]
async fn outbound_connections_leave_from_the_bind_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    for local in [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)] {
        let dial = tern::net::dial(&target, Some(IpAddr::V4(local)));
        let (dialed, accepted) = tokio::join!(dial, listener.accept());
        let dialed = dialed.unwrap();
        let (_, peer) = accepted.unwrap();
        assert_eq!(
            peer.ip(),
            IpAddr::V4(local),
            "the peer sees our bind address"
        );
        assert_eq!(dialed.local_addr().unwrap().ip(), IpAddr::V4(local));
    }
    // Unspecified (bind 0.0.0.0) or none: wherever the OS routes from.
    for local in [None, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))] {
        let (dialed, accepted) = tokio::join!(tern::net::dial(&target, local), listener.accept());
        dialed.unwrap();
        assert_eq!(accepted.unwrap().1.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}

#[tokio::test]
async fn a_dial_that_cannot_succeed_says_where_it_went() {
    // A closed port on loopback: refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = tern::net::dial(&target, None).await.unwrap_err();
    assert!(e.starts_with(&format!("dialing {target}: ")), "{e}");
    let e = tern::net::dial("no-such-host.invalid:8300", None)
        .await
        .unwrap_err();
    assert!(e.starts_with("dialing no-such-host.invalid:8300"), "{e}");
}

/// Blocking queries parked on a client's connection have a limit of their
/// own (`BLOCKING_CALLS_MAX`) beside the calls in flight
/// (`CALLS_INFLIGHT_MAX`): with that many parked, a plain call is still read
/// and answered at once; one blocking query past it waits in the socket,
/// and so does everything sent after it, until a parked one is answered;
/// nothing is refused or lost. Before this limit, 256 parked queries held
/// every slot of the connection and a client agent with 10,000 watchers
/// could send nothing else (bench/watch-fanout.sh found it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_blocking_queries_have_their_own_limit_and_do_not_hold_up_other_calls() {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tern::client_rpc::RpcClient;
    use tern::net::{Inbound, Refusals, BLOCKING_CALLS_MAX, CALLS_INFLIGHT_MAX};
    use tern_core::autopilot::GossipStatus;
    use tern_core::clock::Duration as CoreDuration;
    use tern_core::reconcile::ServerMember;
    use tern_core::rpc::{Blocking, Op, ReadMode, Reply, ReplyBody, Request};
    use tern_core::{Config, Datacenter, NodeId, NodeName};
    use tokio::sync::{mpsc, watch};

    const { assert!(BLOCKING_CALLS_MAX > CALLS_INFLIGHT_MAX) };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (to_agent, mut inbound) = mpsc::channel(1024);
    tokio::spawn(tern::net::serve(
        listener,
        1 << 20,
        to_agent,
        Refusals::default(),
        0,
        None,
    ));
    // The agent: a blocking query is held until released (oldest first);
    // any other call is answered at once. A reply's index says which.
    let held = Arc::new(AtomicUsize::new(0));
    let (release, mut released) = mpsc::unbounded_channel::<usize>();
    {
        let held = held.clone();
        tokio::spawn(async move {
            let mut parked = VecDeque::new();
            let reply = |index| {
                Ok(Reply {
                    index,
                    known_leader: true,
                    last_contact_ms: 0,
                    body: ReplyBody::Kv(None),
                })
            };
            loop {
                tokio::select! {
                    m = inbound.recv() => match m {
                        Some(Inbound::Call(r, tx)) if r.blocking.is_some() => {
                            parked.push_back(tx);
                            held.store(parked.len(), Ordering::SeqCst);
                        }
                        Some(Inbound::Call(_, tx)) => {
                            let _ = tx.send(reply(1));
                        }
                        Some(_) => {}
                        None => return,
                    },
                    Some(n) = released.recv() => {
                        for tx in parked.drain(..n.min(parked.len())) {
                            let _ = tx.send(reply(2));
                        }
                        held.store(parked.len(), Ordering::SeqCst);
                    }
                }
            }
        });
    }
    let server = ServerMember {
        node: NodeId(1),
        name: NodeName("s1".into()),
        address: addr.to_string(),
        status: GossipStatus::Alive,
        raft_vsn: 3,
    };
    let (_servers, rx) = watch::channel(vec![server]);
    let client = RpcClient::new(rx, None, &Config::new(NodeId(9), "c", "dc1", "127.0.0.1:0"));
    let request = |blocking: bool| Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Default,
        blocking: blocking.then_some(Blocking {
            min_index: 1,
            max_wait: CoreDuration::from_secs(600),
        }),
        op: Op::KvGet { key: "k".into() },
    };
    let call = |blocking: bool| {
        let client = client.clone();
        tokio::spawn(async move { client.call(request(blocking)).await.map(|r| r.index) })
    };
    let until = |n: usize| {
        let held = held.clone();
        async move {
            for _ in 0..600 {
                if held.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!(
                "{} blocking queries parked, not {n}",
                held.load(Ordering::SeqCst)
            );
        }
    };

    // At the limit: every blocking query reaches the agent, and a plain call
    // sent after them is answered.
    let mut blocked: Vec<_> = (0..BLOCKING_CALLS_MAX).map(|_| call(true)).collect();
    until(BLOCKING_CALLS_MAX).await;
    let plain = tokio::time::timeout(Duration::from_secs(10), call(false))
        .await
        .expect("a plain call is not held up by parked queries");
    assert_eq!(plain.unwrap(), Ok(1));

    // Past it: the next blocking query waits in the socket, and the plain
    // call behind it too; nothing fails.
    blocked.push(call(true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let behind = call(false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(held.load(Ordering::SeqCst), BLOCKING_CALLS_MAX);
    assert!(!behind.is_finished(), "past the limit the connection waits");
    // One parked query answered: the waiting one parks, the plain call goes.
    release.send(1).unwrap();
    let plain = tokio::time::timeout(Duration::from_secs(10), behind)
        .await
        .expect("answered once a parked query is");
    assert_eq!(plain.unwrap(), Ok(1));
    until(BLOCKING_CALLS_MAX).await;

    // Every blocking query gets its answer.
    release.send(usize::MAX).unwrap();
    let mut answered = 0;
    for b in blocked {
        let r = tokio::time::timeout(Duration::from_secs(30), b)
            .await
            .expect("answered");
        assert_eq!(r.unwrap(), Ok(2));
        answered += 1;
    }
    assert_eq!(answered, BLOCKING_CALLS_MAX + 1);
}

/// A burst of forwarded requests and replies past a peer's queue
/// (`PEER_QUEUE_MAX`) all arrive, while Raft messages past it are dropped
/// (Raft resends those; nobody resends a forwarded request or its reply).
/// One write answering 10,000 blocking queries parked through a follower
/// used to lose all but 4,095 of the replies, and their watchers waited
/// until they timed out (bench/watch-fanout.sh found it). One thread: the
/// writer cannot run until the test yields, so the queue fills.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_forwarded_replies_past_the_peer_queue_all_arrive_raft_messages_do_not() {
    use tern::net::{Pool, PEER_QUEUE_MAX};
    use tern_core::raft::{RaftMessage, TimeoutNow};
    use tern_core::rpc::RpcError;
    use tern_core::{wire, Message, MessageBody, NodeId, Term};
    use tokio::io::AsyncReadExt;

    // Every message that arrives on one accepted connection until it has
    // been quiet for a second.
    async fn received(listener: &TcpListener) -> Vec<Message> {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        let mut decoder = wire::FrameDecoder::new(1 << 20);
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(wire::decode_message(&frame).unwrap());
            }
            let read = stream.read(&mut buf);
            match tokio::time::timeout(std::time::Duration::from_secs(1), read).await {
                Ok(Ok(n)) if n > 0 => decoder.push(&buf[..n]),
                _ => return out,
            }
        }
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let pool = Pool::new(None);
    let n = PEER_QUEUE_MAX + 1000;
    let message = |body| Message {
        from: NodeId(1),
        from_address: String::new(),
        to: NodeId(2),
        body,
    };

    for id in 0..n as u64 {
        let reply = MessageBody::ForwardReply {
            id,
            response: Err(RpcError::NoLeader),
        };
        pool.send("s2", &address, &message(reply));
    }
    let mut ids: Vec<u64> = received(&listener)
        .await
        .into_iter()
        .map(|m| match m.body {
            MessageBody::ForwardReply { id, .. } => id,
            other => panic!("not a forwarded reply: {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..n as u64).collect::<Vec<_>>(), "every reply, once");

    // Another peer (a writer of its own): Raft messages past the queue go.
    for term in 0..n as u64 {
        let raft = RaftMessage::TimeoutNow(TimeoutNow { term: Term(term) });
        pool.send("s3", &address, &message(MessageBody::Raft(raft)));
    }
    let terms: Vec<u64> = received(&listener)
        .await
        .into_iter()
        .map(|m| match m.body {
            MessageBody::Raft(RaftMessage::TimeoutNow(t)) => t.term.0,
            other => panic!("not a Raft message: {other:?}"),
        })
        .collect();
    assert_eq!(terms, (0..PEER_QUEUE_MAX as u64).collect::<Vec<_>>());
}

//! `AgentHandle::servers()`: the alive servers of this datacenter as the LAN
//! pool sees them, the `watch` a client agent routes by (two in-process
//! agents on loopback).

use std::time::Duration;

use tern::agent::{self, AgentHandle};
use tern::config::agent_options;
use tern_core::autopilot::GossipStatus;
use tern_core::reconcile::ServerMember;

mod common;
use common::{free_gossip_port, free_port};

struct Ports {
    server: u16,
    serf_lan: u16,
}

fn args(node: &str, p: &Ports, extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "-dev".to_string(),
        format!("-node={node}"),
        format!("-http-port={}", free_port()),
        format!("-server-port={}", p.server),
        format!("-serf-lan-port={}", p.serf_lan),
        "-serf-wan-port=-1".into(),
        "-retry-interval=1s".into(),
    ];
    a.extend(extra.iter().cloned());
    a
}

/// Waits until the watch holds what `want` accepts; the last value seen.
async fn servers_until(
    h: &AgentHandle,
    want: impl Fn(&[ServerMember]) -> bool,
) -> Vec<ServerMember> {
    let mut rx = h.servers();
    let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| want(s)))
        .await
        .is_ok();
    let last = rx.borrow().clone();
    assert!(waited, "not within 30 s; last: {last:?}");
    last
}

/// The watch lists every alive server of the datacenter with its server-port
/// address (from the `port` tag, as Consul's `metadata.IsConsulServer`
/// builds it), sorted by name, and drops a server that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_lists_the_alive_servers_of_the_datacenter() {
    let p1 = Ports {
        server: free_port(),
        serf_lan: free_gossip_port(),
    };
    let p2 = Ports {
        server: free_port(),
        serf_lan: free_gossip_port(),
    };
    let a1 = agent::start(agent_options(&args("a1", &p1, &[])).unwrap())
        .await
        .unwrap();
    // a2 does not bootstrap: it joins a1's LAN pool and waits to be added.
    // With `-join`, a1 has answered by the time `start` returns.
    let a2 = agent::start(
        agent_options(&args(
            "a2",
            &p2,
            &[
                "-bootstrap-expect=0".into(),
                // `-join`: start only once a1 answered (Consul's start_join).
                format!("-join=127.0.0.1:{}", p1.serf_lan),
            ],
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let lan: Vec<String> = a2
        .handle
        .members(agent::Pool::Lan)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(lan.contains(&"a1".to_string()), "{lan:?}");

    let both = servers_until(&a1.handle, |s| s.len() == 2).await;
    let names: Vec<&str> = both.iter().map(|s| s.name.0.as_str()).collect();
    assert_eq!(names, ["a1", "a2"]);
    assert_eq!(both[0].address, format!("127.0.0.1:{}", p1.server));
    assert_eq!(both[1].address, format!("127.0.0.1:{}", p2.server));
    assert!(both.iter().all(|s| s.status == GossipStatus::Alive));
    assert_eq!(both[1].node, a2.handle.options().core.node_id);
    // a2 sees the same two.
    servers_until(&a2.handle, |s| s.len() == 2).await;

    // a2 leaves: a1's list is a1 alone again.
    a2.handle.leave().await;
    let alone = servers_until(&a1.handle, |s| s.len() == 1).await;
    assert_eq!(alone[0].name.0, "a1");
}

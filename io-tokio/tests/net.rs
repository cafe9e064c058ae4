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

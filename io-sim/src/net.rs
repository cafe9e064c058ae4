//! What travels over madsim's network, and how the simulated nodes are named
//! on it.
//!
//! Every datagram is one frame (`wire::encode_frame`). Server-to-server
//! datagrams carry `wire::encode_message`; a client's request and the server's
//! answer carry a small envelope, `[request id: u64 BE][encode_request or
//! encode_response bytes]`. madsim endpoints match datagrams by a tag, so each
//! kind has its own tag and its own receiving tasks.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use madsim::net::Endpoint;
use tern_core::wire::{decode_frame, encode_frame, FrameError};
use tern_core::NodeId;

/// The server port, as Consul's.
pub const SERVER_PORT: u16 = 8300;
/// Where simulated clients listen for answers.
pub const CLIENT_PORT: u16 = 9000;

pub(crate) const TAG_PEER: u64 = 1;
pub(crate) const TAG_REQUEST: u64 = 2;
pub(crate) const TAG_RESPONSE: u64 = 3;

/// A simulated client's identity in the world.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u32);

/// Anything with a network address in the world: the unit of the fault API.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Server(NodeId),
    Client(ClientId),
}

/// The IP of the `n`th server (1-based): 10.0.0.1, 10.0.0.2, ...
pub fn server_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + n))
}

/// The IP of the `n`th client (1-based): 10.1.0.1, ...
pub fn client_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + n))
}

/// A client request or a server's answer: `frame([id][body])`.
pub fn encode_envelope(id: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + body.len());
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(body);
    let mut out = Vec::new();
    encode_frame(&payload, &mut out);
    out
}

/// Why a datagram is not an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    Frame(FrameError),
    /// Fewer than 8 bytes in the frame: no request id.
    NoId,
}

impl core::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EnvelopeError::Frame(e) => e.fmt(f),
            EnvelopeError::NoId => f.write_str("envelope shorter than its request id"),
        }
    }
}

/// Inverse of [`encode_envelope`]; total.
pub fn decode_envelope(
    bytes: &[u8],
    frame_bytes_max: usize,
) -> Result<(u64, &[u8]), EnvelopeError> {
    let payload = decode_frame(bytes, frame_bytes_max).map_err(EnvelopeError::Frame)?;
    if payload.len() < 8 {
        return Err(EnvelopeError::NoId);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[..8]);
    Ok((u64::from_be_bytes(id), &payload[8..]))
}

/// One datagram as the receiving tasks hand it to a node's loop.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub tag: u64,
    pub from: SocketAddr,
    /// `None` when the payload was not bytes at all (someone used madsim's
    /// raw API with another type): counted as a decode error.
    pub bytes: Option<Vec<u8>>,
}

/// Sends one datagram without waiting: madsim charges every send a sleep
/// (at least 1 ms of virtual time), so a node that sent its messages one after
/// another would spend a millisecond per peer. Datagrams are unordered anyway.
pub(crate) fn send_detached(ep: &Endpoint, dst: SocketAddr, tag: u64, bytes: Vec<u8>) {
    let ep = ep.clone();
    madsim::task::spawn(async move {
        let _ = ep.send_to_raw(dst, tag, Box::new(bytes)).await;
    });
}

/// Receives datagrams with `tag` forever, forwarding them to `tx`. Each
/// receive costs madsim a (1 ms minimum) sleep, so a node runs several of
/// these per tag to keep a busy peer from queueing behind that delay.
pub(crate) async fn receive_loop(
    ep: Endpoint,
    tag: u64,
    tx: tokio::sync::mpsc::UnboundedSender<Datagram>,
) -> io::Result<()> {
    loop {
        let (payload, from) = ep.recv_from_raw(tag).await?;
        let bytes = payload.downcast::<Vec<u8>>().ok().map(|b| *b);
        if tx.send(Datagram { tag, from, bytes }).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_reject_garbage() {
        let e = encode_envelope(42, b"body");
        assert_eq!(decode_envelope(&e, 1024), Ok((42, &b"body"[..])));
        assert_eq!(
            decode_envelope(&e[..e.len() - 1], 1024).unwrap_err(),
            EnvelopeError::Frame(FrameError::Truncated {
                needed: e.len(),
                available: e.len() - 1
            })
        );
        let mut short = Vec::new();
        encode_frame(b"1234567", &mut short);
        assert_eq!(decode_envelope(&short, 1024), Err(EnvelopeError::NoId));
    }

    #[test]
    fn addresses_count_up_from_the_subnet() {
        assert_eq!(server_ip(1).to_string(), "10.0.0.1");
        assert_eq!(server_ip(256).to_string(), "10.0.1.0");
        assert_eq!(client_ip(3).to_string(), "10.1.0.3");
    }
}

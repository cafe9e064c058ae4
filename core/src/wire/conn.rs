//! The first byte of a connection to the server port selects its protocol,
//! as in Consul (`agent/pool/conn.go`): small type bytes for plain protocols,
//! and anything above the largest type byte is the start of a native TLS
//! handshake (a ClientHello's record type is 22).
//!
//! [`first_step`], [`inner_step`] and [`alpn_step`] are the server port's
//! whole preamble as pure decisions (`io-tokio/src/net.rs` performs them):
//! the first byte; for `RPC_TLS`, the handshake and then an inner type byte,
//! never TLS again; for a ClientHello, the handshake and then the ALPN
//! protocol it settled on. The `sniff` fuzz target checks their rules.

/// Plain RPC (Consul's `RPCConsul`); Tern uses it for the join handshake.
pub const RPC_CONSUL: u8 = 0;
/// Raft and forwarded requests between servers (Consul's `RPCRaft`).
pub const RPC_RAFT: u8 = 1;
/// A client's multiplexed connection (Consul's `RPCMultiplexV2`, which its
/// clients use for every RPC): framed [`Call`](super::Call)s in, framed
/// [`CallReply`](super::CallReply)s out, several in flight, answered by id.
pub const RPC_MULTIPLEX_V2: u8 = 4;
/// "Switch to TLS, then an inner type byte" (Consul's `RPCTLS`).
pub const RPC_TLS: u8 = 3;
/// Consul's `RPCTLSInsecure`: TLS without a client certificate, for
/// auto-encrypt. Not served; inside TLS it is TLS in TLS.
pub const RPC_TLS_INSECURE: u8 = 7;
/// The largest type byte Consul 1.8 assigns; above it is native TLS.
pub const RPC_MAX_TYPE: u8 = 7;

/// What a connection's first byte asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// Consul's msgpack RPC: recognised, not served (Tern's client agents
    /// call over `Multiplex`; servers find each other through gossip).
    Rpc,
    Raft,
    /// Client calls, answered on the same connection.
    Multiplex,
    /// TLS first, then an inner type byte.
    UpgradeTls,
    /// A TLS ClientHello (ALPN selects the protocol).
    NativeTls,
    /// A type byte no Tern server speaks: close with one log line.
    Unknown(u8),
}

/// Classify a connection by its first byte. Total: every byte has an answer.
pub fn classify_first_byte(b: u8) -> ConnKind {
    match b {
        RPC_CONSUL => ConnKind::Rpc,
        RPC_RAFT => ConnKind::Raft,
        RPC_TLS => ConnKind::UpgradeTls,
        RPC_MULTIPLEX_V2 => ConnKind::Multiplex,
        b if b > RPC_MAX_TYPE => ConnKind::NativeTls,
        b => ConnKind::Unknown(b),
    }
}

/// ALPN protocols of the native-TLS path (DESIGN.md §6), as Consul's
/// `consul/rpc-multi`, `consul/raft`, `consul/wan-gossip/*`.
pub const ALPN_RPC: &[u8] = b"tern/rpc";
pub const ALPN_RAFT: &[u8] = b"tern/raft";
pub const ALPN_WAN_GOSSIP_PACKET: &[u8] = b"tern/wan-gossip/packet";
pub const ALPN_WAN_GOSSIP_STREAM: &[u8] = b"tern/wan-gossip/stream";
/// Every protocol the native-TLS path advertises.
pub const ALPN_ALL: [&[u8]; 4] = [
    ALPN_RPC,
    ALPN_RAFT,
    ALPN_WAN_GOSSIP_PACKET,
    ALPN_WAN_GOSSIP_STREAM,
];

/// What the server port's TLS configuration lets it answer.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PortTls {
    /// A certificate: `RPC_TLS` can be answered.
    pub rpc_tls: bool,
    /// Mutual TLS with ALPN: a ClientHello as the first byte can be answered.
    pub native_tls: bool,
    /// `verify_incoming`: nothing but TLS is served.
    pub verify_incoming: bool,
}

/// What the server port does after a connection's first byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstStep {
    /// A TLS handshake on the bytes as they are (the first byte is the
    /// ClientHello's); then [`alpn_step`].
    NativeTls,
    /// A TLS handshake after the first byte; then [`inner_step`].
    UpgradeTls,
    /// Serve this protocol in plain text.
    Serve(Protocol),
    /// Close the connection.
    Refuse(Refusal),
}

/// A protocol the server port serves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Raft messages and forwarded requests from a server.
    Raft,
    /// A client's calls, answered on the same connection.
    Multiplex,
}

/// Why the server port closes a connection in its preamble.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `verify_incoming` is set and this first byte is not TLS.
    Plaintext(u8),
    /// `RPC_TLS`, but this server has no certificate.
    NoCertificate,
    /// Inside TLS, a type byte asking for TLS again.
    TlsInTls(u8),
    /// A type byte this server does not serve.
    NotServed(u8, ConnKind),
    /// Native TLS that settled on an ALPN protocol reserved for later.
    ReservedAlpn(Vec<u8>),
    /// Native TLS without an ALPN protocol.
    NoAlpn,
}

/// The first byte: total, every byte and configuration has an answer.
pub fn first_step(tls: PortTls, first: u8) -> FirstStep {
    let kind = classify_first_byte(first);
    if kind == ConnKind::NativeTls && tls.native_tls {
        return FirstStep::NativeTls;
    }
    if tls.verify_incoming && kind != ConnKind::UpgradeTls {
        return FirstStep::Refuse(Refusal::Plaintext(first));
    }
    match kind {
        ConnKind::UpgradeTls if tls.rpc_tls => FirstStep::UpgradeTls,
        ConnKind::UpgradeTls => FirstStep::Refuse(Refusal::NoCertificate),
        kind => match served(first, kind, false) {
            Ok(p) => FirstStep::Serve(p),
            Err(r) => FirstStep::Refuse(r),
        },
    }
}

/// The type byte inside an `RPC_TLS` connection.
pub fn inner_step(inner: u8) -> Result<Protocol, Refusal> {
    served(inner, classify_first_byte(inner), true)
}

/// The ALPN protocol a native-TLS handshake settled on.
pub fn alpn_step(alpn: Option<&[u8]>) -> Result<Protocol, Refusal> {
    match alpn {
        Some(ALPN_RAFT) => Ok(Protocol::Raft),
        Some(ALPN_RPC) => Ok(Protocol::Multiplex),
        Some(p) => Err(Refusal::ReservedAlpn(p.to_vec())),
        None => Err(Refusal::NoAlpn),
    }
}

fn served(byte: u8, kind: ConnKind, in_tls: bool) -> Result<Protocol, Refusal> {
    match kind {
        ConnKind::Raft => Ok(Protocol::Raft),
        ConnKind::Multiplex => Ok(Protocol::Multiplex),
        _ if in_tls && (byte == RPC_TLS || byte == RPC_TLS_INSECURE) => {
            Err(Refusal::TlsInTls(byte))
        }
        kind => Err(Refusal::NotServed(byte, kind)),
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Plaintext(b) => write!(f, "first byte {b:#04x} is not TLS: verify_incoming is set"),
            Refusal::NoCertificate => write!(
                f,
                "TLS asked for (first byte 3), but this server has no certificate (tls.defaults.cert_file)"
            ),
            Refusal::TlsInTls(_) => write!(f, "TLS connection attempting to establish inner TLS connection"),
            Refusal::NotServed(b, kind) => write!(f, "first byte {b:#04x} ({kind:?}) is not served"),
            Refusal::ReservedAlpn(p) => write!(
                f,
                "ALPN protocol {:?} is reserved and not served yet",
                String::from_utf8_lossy(p)
            ),
            Refusal::NoAlpn => write!(f, "native TLS without an ALPN protocol"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_is_classified() {
        assert_eq!(classify_first_byte(0), ConnKind::Rpc);
        assert_eq!(classify_first_byte(1), ConnKind::Raft);
        assert_eq!(classify_first_byte(3), ConnKind::UpgradeTls);
        assert_eq!(classify_first_byte(4), ConnKind::Multiplex);
        assert_eq!(classify_first_byte(22), ConnKind::NativeTls);
        for b in [2u8, 5, 6, 7] {
            assert_eq!(classify_first_byte(b), ConnKind::Unknown(b));
        }
        for b in 8..=255u8 {
            assert_eq!(classify_first_byte(b), ConnKind::NativeTls);
        }
    }

    #[test]
    fn the_preamble_follows_the_server_ports_rules() {
        let plain = PortTls::default();
        let mtls = PortTls {
            rpc_tls: true,
            native_tls: true,
            verify_incoming: false,
        };
        let strict = PortTls {
            verify_incoming: true,
            ..mtls
        };
        assert_eq!(first_step(plain, 1), FirstStep::Serve(Protocol::Raft));
        assert_eq!(first_step(plain, 4), FirstStep::Serve(Protocol::Multiplex));
        assert_eq!(
            first_step(plain, 3),
            FirstStep::Refuse(Refusal::NoCertificate)
        );
        assert_eq!(
            first_step(plain, 22),
            FirstStep::Refuse(Refusal::NotServed(22, ConnKind::NativeTls))
        );
        assert_eq!(first_step(mtls, 22), FirstStep::NativeTls);
        assert_eq!(first_step(mtls, 3), FirstStep::UpgradeTls);
        assert_eq!(first_step(mtls, 1), FirstStep::Serve(Protocol::Raft));
        assert_eq!(first_step(strict, 22), FirstStep::NativeTls);
        assert_eq!(first_step(strict, 3), FirstStep::UpgradeTls);
        for b in [0u8, 1, 4, 7] {
            assert_eq!(
                first_step(strict, b),
                FirstStep::Refuse(Refusal::Plaintext(b))
            );
        }
        // Consul's handleConn: no TLS inside TLS, by either TLS byte.
        assert_eq!(inner_step(3), Err(Refusal::TlsInTls(3)));
        assert_eq!(inner_step(7), Err(Refusal::TlsInTls(7)));
        assert_eq!(inner_step(1), Ok(Protocol::Raft));
        assert_eq!(inner_step(0), Err(Refusal::NotServed(0, ConnKind::Rpc)));
        assert_eq!(alpn_step(Some(ALPN_RAFT)), Ok(Protocol::Raft));
        assert_eq!(alpn_step(Some(ALPN_RPC)), Ok(Protocol::Multiplex));
        assert_eq!(
            alpn_step(Some(ALPN_WAN_GOSSIP_PACKET)),
            Err(Refusal::ReservedAlpn(ALPN_WAN_GOSSIP_PACKET.to_vec()))
        );
        assert_eq!(alpn_step(None), Err(Refusal::NoAlpn));
    }
}

//! The first byte of a connection to the server port selects its protocol,
//! as in Consul (`agent/pool/conn.go`): small type bytes for plain protocols,
//! and anything above the largest type byte is the start of a native TLS
//! handshake (a ClientHello's record type is 22).

/// Plain RPC (Consul's `RPCConsul`); Tern uses it for the join handshake.
pub const RPC_CONSUL: u8 = 0;
/// Raft and forwarded requests between servers (Consul's `RPCRaft`).
pub const RPC_RAFT: u8 = 1;
/// A client's multiplexed connection (Consul's `RPCMultiplexV2`, which its
/// clients use for every RPC): framed [`Call`](super::Call)s in, framed
/// [`CallReply`](super::CallReply)s out, several in flight, answered by id.
pub const RPC_MULTIPLEX_V2: u8 = 4;
/// "Switch to TLS, then an inner type byte" (Consul's `RPCTLS`); a later issue.
pub const RPC_TLS: u8 = 3;
/// The largest type byte Consul 1.8 assigns; above it is native TLS.
pub const RPC_MAX_TYPE: u8 = 7;

/// What a connection's first byte asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnKind {
    Rpc,
    Raft,
    /// Client calls, answered on the same connection.
    Multiplex,
    /// Recognised, not served yet: TLS arrives in a later issue.
    UpgradeTls,
    /// A TLS ClientHello (ALPN selects the protocol); a later issue.
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
}

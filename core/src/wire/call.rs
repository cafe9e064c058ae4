//! Client calls over the server port: what a client agent sends a server on
//! a multiplexed connection (first byte [`RPC_MULTIPLEX_V2`]), and what the
//! server answers on the same connection.
//!
//! Each frame's payload is one [`Call`] (client to server) or one
//! [`CallReply`] (server to client), encoded like every other wire type:
//! `[CODEC_VERSION][postcard]`, strict and canonical. The `id` is the
//! client's: unique among its calls in flight on that connection, echoed in
//! the reply, so several calls share one connection and are answered in any
//! order (Consul multiplexes its client RPCs over one yamux session per
//! server, `agent/pool/pool.go`).
//!
//! [`RPC_MULTIPLEX_V2`]: super::conn::RPC_MULTIPLEX_V2

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, DecodeError};
use crate::rpc::{Request, Response};

/// A request from a client, tagged with the client's id for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: u64,
    pub request: Request,
}

/// The server's answer to the [`Call`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReply {
    pub id: u64,
    pub response: Response,
}

pub fn encode_call(c: &Call) -> Vec<u8> {
    encode(c)
}

/// Total: any bytes give a call or an error value.
pub fn decode_call(b: &[u8]) -> Result<Call, DecodeError> {
    decode(b)
}

pub fn encode_call_reply(r: &CallReply) -> Vec<u8> {
    encode(r)
}

/// Total: any bytes give a reply or an error value.
pub fn decode_call_reply(b: &[u8]) -> Result<CallReply, DecodeError> {
    decode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Datacenter;
    use crate::rpc::{Op, ReadMode, RpcError};
    use crate::wire::CODEC_VERSION;

    fn call() -> Call {
        Call {
            id: 300,
            request: Request {
                datacenter: Datacenter("dc1".into()),
                read_mode: ReadMode::Default,
                blocking: None,
                op: Op::KvGet { key: "k".into() },
            },
        }
    }

    #[test]
    fn calls_and_replies_round_trip() {
        let c = call();
        let b = encode_call(&c);
        assert_eq!(b[0], CODEC_VERSION);
        assert_eq!(decode_call(&b), Ok(c));
        let r = CallReply {
            id: u64::MAX,
            response: Err(RpcError::NoLeader),
        };
        assert_eq!(decode_call_reply(&encode_call_reply(&r)), Ok(r));
    }

    #[test]
    fn bad_bytes_are_an_error_value() {
        let b = encode_call(&call());
        for cut in 0..b.len() {
            assert!(decode_call(&b[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(decode_call(&long), Err(DecodeError::TrailingBytes(1)));
        let mut other = b;
        other[0] = 9;
        assert_eq!(decode_call(&other), Err(DecodeError::UnknownVersion(9)));
    }
}

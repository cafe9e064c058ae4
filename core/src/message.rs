//! What one server sends another over the server port.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::raft::RaftMessage;
use crate::rpc::{Request, Response};

/// The longest `from_address` a server takes from a peer; a message naming a
/// longer one is refused (a host name is at most 253 bytes, plus a port).
pub const ADDRESS_BYTES_MAX: usize = 512;

/// A message between servers, addressed by node id.
///
/// `from_address` is the sender's own server-port address, as hashicorp/raft
/// puts the sender's address in every RPC header (`RPCHeader.Addr`): a
/// server answers a peer it knows no address for (one that restarted with an
/// empty log and was made a voter while it was down learns the others only
/// from their messages) instead of dropping the answer. It is a hint about an
/// unknown peer and never overrides an address the configuration names.
/// Empty when the sender does not say (messages of codec version 1).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub from_address: String,
    pub to: NodeId,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageBody {
    Raft(RaftMessage),
    /// A client request forwarded to the leader; `id` is the forwarder's.
    Forward {
        id: u64,
        request: Request,
    },
    /// The leader's answer to a `Forward`.
    ForwardReply {
        id: u64,
        response: Response,
    },
}

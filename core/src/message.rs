//! What one server sends another over the server port.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::raft::RaftMessage;
use crate::rpc::{Request, Response};

/// A message between servers, addressed by node id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
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

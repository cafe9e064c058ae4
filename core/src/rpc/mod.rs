//! Client requests and replies, and how a server routes them.

mod types;

pub use types::{
    Blocking, CatalogOp, CatalogReply, Op, RaftServer, ReadMode, Reply, ReplyBody, Request,
    Response, RpcError,
};

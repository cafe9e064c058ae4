//! Client requests and replies, how a server routes them, and how a client
//! agent retries them.

pub mod retry;
mod types;

pub use types::{
    Blocking, CatalogOp, CatalogReply, Op, RaftServer, ReadMode, Reply, ReplyBody, Request,
    Response, RpcError,
};

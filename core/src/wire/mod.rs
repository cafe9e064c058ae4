//! Everything that decodes bytes from outside. Every decoder is total: lengths
//! are checked against a limit before anything is allocated, trailing bytes
//! are rejected, and bad input gives an error value, never a panic.
//!
//! - [`conn`]: what a connection's first bytes ask for, and the order the
//!   server port reads them in.
//! - [`client_hello`]: the server name and ALPN protocols of a TLS
//!   ClientHello, read without terminating TLS (for SNI routing and logs).
//! - [`frame`]: the 4-byte big-endian length prefix on a connection.
//! - [`codec`]: the versioned postcard encoding of messages, requests,
//!   responses and commands.
//! - [`call`]: client calls and their replies on a multiplexed connection.
//! - [`wal`]: write-ahead-log records, crash recovery and replay.
//! - [`fuzz_check`]: the fuzz targets' bodies, also run over the checked-in
//!   corpus by the test suite.

pub mod call;
pub mod client_hello;
pub mod codec;
pub mod conn;
pub mod frame;
pub mod fuzz_check;
pub mod wal;

pub use call::{decode_call, decode_call_reply, encode_call, encode_call_reply, Call, CallReply};
pub use client_hello::{peek_client_hello, ClientHello, Peek};
pub use codec::{
    decode_command, decode_message, decode_request, decode_response, encode_command,
    encode_message, encode_request, encode_response, DecodeError, CODEC_VERSION,
};
pub use frame::{decode_frame, encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN};
pub use wal::{
    encode_record, recover, replay, snapshot_piece_header, snapshot_piece_header_for, Recovered,
    TornTail, WalError, WalRecord, WAL_RECORD_BYTES_MAX,
};

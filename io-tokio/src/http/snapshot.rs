//! `GET /v1/snapshot` (save) and `PUT /v1/snapshot` (restore), as
//! Consul's agent/snapshot_endpoint.go: the body is a snapshot archive
//! (`crate::snapshot`), `?stale` lets any server answer a save, and errors
//! are 500s with the reason as text.
//!
//! **Save** reads the state's index the way any read is served (through
//! the leader unless `?stale`, so the snapshot is at least as new as every
//! write acknowledged before it), waits until this server has applied that
//! far, takes an O(1) view of the state and encodes it off the agent task.
//! Only server agents can save: a client agent would have to bring the
//! whole state across the server port in one frame.
//!
//! **Restore** checks the archive (SHA256SUMS, size limit) and that its
//! state decodes, then sends it to the leader in chunks, each a write
//! through the log (`Op::SnapshotRestore`); the state is swapped in on
//! every server by the last one (see `core/src/fsm/restore.rs`). A client
//! agent can restore: each chunk is an ordinary forwarded write.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use tern_core::fsm::{ApplyResult, Fsm, RestoreChunk, RESTORE_CHUNK_BYTES_MAX};
use tern_core::rpc::{Op, ReadMode, ReplyBody};

use super::params::{Params, QueryOptions};
use super::read;
use super::reply::{ApiError, ApiResult, Meta};
use crate::agent::AgentHandle;
use crate::snapshot::{read_archive, write_archive, ArchiveMeta, ConfigServer, Configuration};

/// How long a save waits for this server to apply through the index the
/// leader gave (it is normally there within a heartbeat).
const SAVE_CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a compressed archive may add to the state's size limit (gzip of
/// incompressible data, tar headers, meta.json, SHA256SUMS).
const ARCHIVE_OVERHEAD_BYTES: usize = 16 << 20;

pub(crate) async fn save(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    opts.blocking = None;
    let (reply, mut meta) = read(&agent, &opts, Op::SnapshotIndex).await?;
    let state = tokio::time::timeout(SAVE_CATCH_UP_WAIT, agent.save_state(reply.index))
        .await
        .map_err(|_| {
            ApiError::internal(format!(
                "this server did not apply through index {} within {}s; try ?stale or another server",
                reply.index,
                SAVE_CATCH_UP_WAIT.as_secs()
            ))
        })?
        .map_err(ApiError::internal)?;
    let index = state.view.index();
    let archive = tokio::task::spawn_blocking(move || {
        let data = state.view.encode();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let meta = ArchiveMeta {
            version: 1,
            id: format!("{}-{}-{now_ms}", state.term, index),
            index,
            term: state.term,
            configuration: Configuration {
                servers: Some(
                    state
                        .servers
                        .into_iter()
                        .map(|(id, address, voter)| ConfigServer {
                            suffrage: if voter { 0 } else { 1 },
                            id,
                            address,
                        })
                        .collect(),
                ),
            },
            size: 0,
            tern_state_format: None,
        };
        write_archive(&meta, &data)
    })
    .await
    .map_err(|e| ApiError::internal(format!("failed to encode the snapshot: {e}")))?;
    meta.index = index;
    let response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-gzip")],
        archive,
    )
        .into_response();
    Ok(meta.apply(response))
}

pub(crate) async fn restore(
    State(agent): State<AgentHandle>,
    Query(query): Query<Vec<(String, String)>>,
    body: Body,
) -> ApiResult {
    let opts = QueryOptions::parse(&Params::new(query), agent.options())?;
    let state_max = agent.options().core.snapshot_bytes_max;
    let archive_max = usize::try_from(state_max)
        .unwrap_or(usize::MAX)
        .saturating_add(ARCHIVE_OVERHEAD_BYTES);
    let archive = axum::body::to_bytes(body, archive_max)
        .await
        .map_err(|e| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            text: format!("Request body too large, max size: {archive_max} bytes ({e})"),
        })?;
    let state = tokio::task::spawn_blocking(move || check(&archive, state_max))
        .await
        .map_err(|e| ApiError::internal(format!("failed to read the snapshot: {e}")))??;

    let id = restore_id();
    let total = state.len() as u64;
    let mut offset = 0usize;
    loop {
        let end = (offset + RESTORE_CHUNK_BYTES_MAX).min(state.len());
        let chunk = RestoreChunk {
            id,
            offset: offset as u64,
            total,
            data: state[offset..end].to_vec(),
        };
        let mut request = opts.request(Op::SnapshotRestore(chunk));
        request.read_mode = ReadMode::Default;
        request.blocking = None;
        let reply = agent.call(request).await?;
        let meta = Meta::of(&reply, ReadMode::Default);
        match reply.body {
            ReplyBody::Applied(ApplyResult::Restore(Ok(p))) => {
                if p.restored_index.is_some() {
                    return Ok(meta.apply(StatusCode::OK.into_response()));
                }
                offset = p.received as usize;
            }
            ReplyBody::Applied(ApplyResult::Restore(Err(e))) => {
                return Err(ApiError::internal(e.to_string()))
            }
            _ => return Err(ApiError::unexpected_reply("snapshot restore")),
        }
    }
}

/// The state inside `archive`, once it is known to restore: a state that
/// would be refused is refused here, before any of it enters the log.
fn check(archive: &[u8], state_max: u64) -> Result<Vec<u8>, ApiError> {
    let (meta, state) = read_archive(archive, state_max).map_err(|e| ApiError::internal(e.0))?;
    if let Err(e) = Fsm::restore(&state) {
        if meta.tern_state_format.is_none() {
            return Err(ApiError::internal(format!(
                "this snapshot (index {}) was not saved by Tern; Consul's state cannot be restored into Tern: {e}",
                meta.index
            )));
        }
        return Err(ApiError::internal(format!("snapshot restore failed: {e}")));
    }
    Ok(state)
}

/// A restore's id: chunks of different restores must not mix, and nothing
/// in the core depends on its value, so the OS's randomness is fine here.
fn restore_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

//! The data dir, from the `tern-storage` crate (shared with the simulator:
//! one code path for what is written where and how it is read back), on
//! real files.

pub use tern_storage::{
    read_snapshot_data, remove_superseded, write_snapshot_file, DataDir, FsError, MemStorage,
    SnapshotLane, StdFs, Storage, StorageError, SEGMENT_BYTES_MAX,
};

/// A data dir on real files.
pub type StdDataDir = DataDir<StdFs>;

/// Opens (creating if absent) `<dir>/raft/` on real files and recovers it:
/// the data dir, the state to start from, and warnings (torn tails cut).
pub fn open_data_dir(
    dir: &std::path::Path,
    segment_bytes_max: u64,
) -> Result<(StdDataDir, tern_core::raft::Durable, Vec<String>), StorageError> {
    DataDir::open(StdFs::new(), dir, segment_bytes_max)
}

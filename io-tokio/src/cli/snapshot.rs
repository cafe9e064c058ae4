//! `tern snapshot save|restore|inspect` (Consul's command/snapshot): save
//! and restore go through the agent's `/v1/snapshot`; inspect reads a file
//! and needs no agent.

use super::{command, fail, Io};
use crate::snapshot::{read_archive, write_file_atomically, ArchiveMeta};

/// A snapshot file read back by save and inspect may be as large as the
/// state limit allows.
const STATE_BYTES_MAX: u64 = 16 << 30;

/// How long a save or restore may take: a large state is encoded, sent
/// and (for a restore) committed chunk by chunk.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub(crate) const SAVE_USAGE: &str = "\
Usage: tern snapshot save [options] FILE

  Saves an atomic, point-in-time snapshot of the servers' state (KV, the
  catalog, autopilot's configuration) to FILE, as Consul's snapshot save
  does: written to FILE.unverified, read back and checked, then renamed.
  The snapshot is taken by a server once it has applied every write the
  leader had acknowledged; with -stale any server answers with what it has
  (useful when there is no leader).

      $ tern snapshot save backup.snap
      $ tern snapshot save -stale backup.snap

  -http-addr=ADDR  -datacenter=DC  -token=T  -stale";

pub(crate) const RESTORE_USAGE: &str = "\
Usage: tern snapshot restore [options] FILE

  Replaces the servers' whole state with the snapshot in FILE (one that
  tern snapshot save wrote). The restore goes through the Raft log, so it
  is applied on every server at the same point or not at all; blocking
  queries are answered at once when it lands. Consul's snapshots cannot be
  restored into Tern (their state is Consul's encoding).

      $ tern snapshot restore backup.snap

  -http-addr=ADDR  -datacenter=DC  -token=T";

pub(crate) const INSPECT_USAGE: &str = "\
Usage: tern snapshot inspect FILE

  Prints the metadata of the snapshot in FILE (its ID, size, index, term
  and version) and what its state holds, after checking its SHA256SUMS.
  Reads the file only: no agent is needed.

      $ tern snapshot inspect backup.snap";

/// Consul's argument check: exactly one FILE.
fn one_file(args: &[String], io: &mut Io) -> Result<String, i32> {
    match args {
        [] => Err(fail(io, "Missing FILE argument".into())),
        [file] => Ok(file.clone()),
        more => Err(fail(
            io,
            format!("Too many arguments (expected 1, got {})", more.len()),
        )),
    }
}

pub(crate) fn save(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "snapshot save", io) {
        Ok((p, c)) => (p, c.with_timeout(SNAPSHOT_TIMEOUT)),
        Err(code) => return code,
    };
    let file = match one_file(&p.args, io) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let archive = match client
        .get_large("/v1/snapshot", &[], STATE_BYTES_MAX + (64 << 20))
        .and_then(|r| r.success())
    {
        Ok(b) => b,
        Err(e) => return fail(io, format!("Error saving snapshot: {e}")),
    };
    let meta = match read_archive(&archive, STATE_BYTES_MAX) {
        Ok((meta, _)) => meta,
        Err(e) => return fail(io, format!("Error verifying snapshot file: {e}")),
    };
    if let Err(e) = write_file_atomically(std::path::Path::new(&file), &archive) {
        return fail(io, format!("Error writing snapshot file {file:?}: {e}"));
    }
    io.line(&format!(
        "Saved and verified snapshot to index {}",
        meta.index
    ));
    0
}

pub(crate) fn restore(args: &[String], io: &mut Io) -> i32 {
    let (p, client) = match command(args, &[], "snapshot restore", io) {
        Ok((p, c)) => (p, c.with_timeout(SNAPSHOT_TIMEOUT)),
        Err(code) => return code,
    };
    let file = match one_file(&p.args, io) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => return fail(io, format!("Error opening snapshot file: {e}")),
    };
    match client
        .put("/v1/snapshot", &[], &bytes)
        .and_then(|r| r.success())
    {
        Ok(_) => {
            io.line("Restored snapshot");
            0
        }
        Err(e) => fail(io, format!("Error restoring snapshot: {e}")),
    }
}

pub(crate) fn inspect(args: &[String], io: &mut Io) -> i32 {
    let doc = super::help::find("snapshot inspect").expect("help");
    let p = match super::flags::parse(args, &[]) {
        Ok(p) if p.help => {
            io.bytes(super::help::command_help(doc).as_bytes());
            return 0;
        }
        Ok(p) => p,
        Err(e) => {
            let _ = write!(io.err, "{e}\n\n{}", super::help::command_help(doc));
            return 1;
        }
    };
    let file = match one_file(&p.args, io) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => return fail(io, format!("Error opening snapshot file: {e}")),
    };
    let (meta, state) = match read_archive(&bytes, STATE_BYTES_MAX) {
        Ok(x) => x,
        Err(e) => return fail(io, format!("Error extracting snapshot data: {e}")),
    };
    for line in describe(&meta, &state) {
        io.line(&line);
    }
    0
}

/// Consul's `inspect` layout: the metadata block, then what the state
/// holds by type (Tern's tables, counted).
fn describe(meta: &ArchiveMeta, state: &[u8]) -> Vec<String> {
    let mut lines = vec![
        format!(" {:<13}{}", "ID", meta.id),
        format!(" {:<13}{}", "Size", meta.size),
        format!(" {:<13}{}", "Index", meta.index),
        format!(" {:<13}{}", "Term", meta.term),
        format!(" {:<13}{}", "Version", meta.version),
        String::new(),
    ];
    match tern_core::fsm::Fsm::restore(state) {
        Ok(fsm) => {
            let (nodes, services, checks) = fsm.catalog_counts();
            let rows = [
                ("KV", fsm.kv_list("").len()),
                ("Tombstone", fsm.tombstone_count()),
                ("Node", nodes),
                ("Service", services),
                ("Check", checks),
                ("Autopilot", usize::from(fsm.autopilot().is_some())),
            ];
            lines.push(format!(" {:<13}{}", "Type", "Count"));
            lines.push(format!(" {:<13}{}", "----", "----"));
            for (name, count) in rows {
                lines.push(format!(" {name:<13}{count}"));
            }
            let total: usize = rows.iter().map(|(_, c)| c).sum();
            lines.push(format!(" {:<13}{}", "----", "----"));
            lines.push(format!(" {:<13}{total}", "Total"));
        }
        Err(e) => lines.push(format!(
            " The state is not one this Tern can read ({e}); {}",
            if meta.tern_state_format.is_none() {
                "it looks like a Consul snapshot"
            } else {
                "it was saved by another Tern release"
            }
        )),
    }
    lines
}

//! The client commands, talking to an agent over its HTTP API as Consul's CLI
//! does: `kv get|put|delete`, `operator raft list-peers|remove-peer`,
//! `operator autopilot get-config|set-config|state`, `members`, `join`,
//! `force-leave`, `leave`.
//!
//! Output follows Consul's CLI. Every error is one line on stderr and the
//! exit code is 1 (Consul's code for usage and request errors alike).

mod autopilot;
mod client;
pub(crate) mod flags;
mod kv;
mod members;
mod operator;
mod table;

use std::io::{Read, Write};

use flags::{flag, value, Parsed, Spec};

/// Run a client command (`args` start at the subcommand, e.g. `["kv", "get",
/// "foo"]`) on the real stdin, stdout and stderr; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let code = run_with(args, &mut stdout.lock(), &mut stderr.lock());
    let _ = std::io::stdout().flush();
    code
}

/// [`run`] writing to `out` and `err` (reading stdin for `kv put KEY -`).
pub fn run_with(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    run_with_input(args, &mut std::io::stdin().lock(), out, err)
}

/// [`run`] with every stream given.
pub fn run_with_input(
    args: &[String],
    input: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut io = Io { input, out, err };
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["kv", "get", ..] => kv::get(&args[2..], &mut io),
        ["kv", "put", ..] => kv::put(&args[2..], &mut io),
        ["kv", "delete", ..] => kv::delete(&args[2..], &mut io),
        ["operator", "raft", "list-peers", ..] => operator::list_peers(&args[3..], &mut io),
        ["operator", "raft", "remove-peer", ..] => operator::remove_peer(&args[3..], &mut io),
        ["operator", "autopilot", "get-config", ..] => autopilot::get_config(&args[3..], &mut io),
        ["operator", "autopilot", "set-config", ..] => autopilot::set_config(&args[3..], &mut io),
        ["operator", "autopilot", "state", ..] => autopilot::state(&args[3..], &mut io),
        ["members", ..] => members::members(&args[1..], &mut io),
        ["join", ..] => members::join(&args[1..], &mut io),
        ["force-leave", ..] => members::force_leave(&args[1..], &mut io),
        ["leave", ..] => operator::leave(&args[1..], &mut io),
        [] | ["help" | "-h" | "-help" | "--help"] => {
            io.line(USAGE);
            0
        }
        _ => fail(
            &mut io,
            format!(
                "unknown command {:?}; commands: {COMMANDS}",
                words.join(" ")
            ),
        ),
    }
}

/// Whether `word` (the first argument) names a client command, for a
/// dispatcher that also knows `agent` and `version`.
pub fn is_command(word: &str) -> bool {
    matches!(
        word,
        "kv" | "operator" | "members" | "join" | "force-leave" | "leave"
    )
}

/// One line listing the client commands.
pub const COMMANDS: &str =
    "kv get|put|delete, operator raft list-peers|remove-peer, operator autopilot get-config|set-config|state, members, join, force-leave, leave";

const USAGE: &str = "\
Usage: tern <command> [options]

  kv get|put|delete                 read and write the key/value store
  operator raft list-peers          show the Raft configuration
  operator raft remove-peer         remove a server from it
  operator autopilot get-config     show the autopilot configuration
  operator autopilot set-config     change the autopilot configuration
  operator autopilot state          show autopilot's view of every server
  members                           list the gossip pool's members
  join                              join the cluster through a member's gossip address
  force-leave                       make a failed member leave
  leave                             make the agent leave and shut down

Every command takes -http-addr=ADDR (or TERN_HTTP_ADDR / CONSUL_HTTP_ADDR,
default 127.0.0.1:8500). Run `tern <command> -h` for its options.";

/// The streams a command writes to.
pub(crate) struct Io<'a> {
    pub input: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Io<'_> {
    pub fn line(&mut self, s: &str) {
        let _ = writeln!(self.out, "{s}");
    }

    pub fn bytes(&mut self, b: &[u8]) {
        let _ = self.out.write_all(b);
    }
}

/// Print one error line and give the exit code.
pub(crate) fn fail(io: &mut Io, message: String) -> i32 {
    let _ = writeln!(io.err, "{}", client::one_line(&message));
    1
}

/// Flags every client command takes.
const COMMON: [Spec; 4] = [
    value("http-addr"),
    value("datacenter"),
    value("token"),
    flag("stale"),
];

/// Parse a command's flags (its own and the common ones) and make its
/// client. `-h` prints `usage` and exits 0; a bad flag is one line, exit 1.
pub(crate) fn command(
    args: &[String],
    own: &[Spec],
    usage: &str,
    io: &mut Io,
) -> Result<(Parsed, client::Client), i32> {
    let specs: Vec<Spec> = own.iter().chain(COMMON.iter()).copied().collect();
    let parsed = flags::parse(args, &specs).map_err(|e| fail(io, e))?;
    if parsed.help {
        io.line(usage);
        return Err(0);
    }
    let client = client::Client::from_flags(&parsed).map_err(|e| fail(io, e))?;
    Ok((parsed, client))
}

//! The command line: help for every command (`help.rs`), and the client
//! commands, talking to an agent over its HTTP API as Consul's CLI does:
//! `kv get|put|delete|export|import`, `catalog datacenters|nodes|services`,
//! `operator raft list-peers|remove-peer|transfer-leader`,
//! `operator autopilot get-config|set-config|state`, `services
//! register|deregister`, `members`, `join`, `force-leave`, `leave`, `keygen`,
//! `keyring`, `version` (and `bench kv`, in `crate::bench`).
//!
//! Output follows Consul's CLI. A request or value error is one line on
//! stderr and exit code 1 (Consul's code for usage and request errors
//! alike); an unknown flag is Go's error line followed by the command's
//! help, also exit 1.

mod autopilot;
mod catalog;
mod client;
mod client_tls;
pub(crate) mod flags;
mod help;
mod keyring;
mod kv;
mod lock;
mod members;
mod operator;
mod semaphore;
mod services;
mod snapshot;
mod table;
mod tls;

use std::io::{Read, Write};

use flags::{flag, value, Parsed, Spec};
use help::Resolved;

/// Run a command (`args` are everything after `tern`, e.g. `["kv", "get",
/// "foo"]`) on the real stdin, stdout and stderr; returns the exit code.
/// `tern agent` is run by the binary itself (see [`agent_args`]); here it
/// only has help.
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
    let (doc, rest) = match help::resolve(args) {
        Resolved::Run(doc, rest) => (doc, rest),
        Resolved::Help(text) => {
            let _ = io.out.write_all(text.as_bytes());
            return 0;
        }
        Resolved::Refuse(text, code) => {
            let _ = io.err.write_all(text.as_bytes());
            return code;
        }
        Resolved::Version => return version(&[], &mut io),
    };
    match doc.path {
        "kv get" => kv::get(rest, &mut io),
        "kv put" => kv::put(rest, &mut io),
        "kv delete" => kv::delete(rest, &mut io),
        "kv export" => kv::export(rest, &mut io),
        "kv import" => kv::import(rest, &mut io),
        "operator raft list-peers" => operator::list_peers(rest, &mut io),
        "operator raft remove-peer" => operator::remove_peer(rest, &mut io),
        "operator autopilot get-config" => autopilot::get_config(rest, &mut io),
        "operator autopilot set-config" => autopilot::set_config(rest, &mut io),
        "operator autopilot state" => autopilot::state(rest, &mut io),
        "catalog datacenters" => catalog::datacenters(rest, &mut io),
        "catalog nodes" => catalog::nodes(rest, &mut io),
        "catalog services" => catalog::services(rest, &mut io),
        "operator raft transfer-leader" => operator::transfer_leader(rest, &mut io),
        "members" => members::members(rest, &mut io),
        "keygen" => keyring::keygen(rest, &mut io),
        "keyring" => keyring::keyring(rest, &mut io),
        "join" => members::join(rest, &mut io),
        "force-leave" => members::force_leave(rest, &mut io),
        "leave" => operator::leave(rest, &mut io),
        "lock" => lock::lock(rest, &mut io),
        "services register" => services::register(rest, &mut io),
        "services deregister" => services::deregister(rest, &mut io),
        "snapshot save" => snapshot::save(rest, &mut io),
        "snapshot restore" => snapshot::restore(rest, &mut io),
        "snapshot inspect" => snapshot::inspect(rest, &mut io),
        "tls ca create" => tls::ca_create(rest, &mut io),
        "tls cert create" => tls::cert_create(rest, &mut io),
        "version" => version(rest, &mut io),
        "bench kv" => crate::bench::command(rest, io.out, io.err),
        "bench tls" => crate::bench_tls::command(rest, io.out, io.err),
        // The binary runs the agent before it gets here (`agent_args`).
        other => fail(
            &mut io,
            format!("{other}: run this command with the tern binary"),
        ),
    }
}

/// The arguments of `tern agent ...` when `args` ask to run the agent (not
/// for its help, and with no flags before `agent`); the binary runs it.
pub fn agent_args(args: &[String]) -> Option<&[String]> {
    match help::resolve(args) {
        Resolved::Run(doc, rest) if doc.path == "agent" => Some(rest),
        _ => None,
    }
}

/// Check `tern agent`'s flags before the agent reads its configuration: a
/// flag it does not know (or one missing its value) gives Go's error line,
/// then the agent's help, as Consul's agent command prints them.
pub fn check_agent_flags(args: &[String]) -> Result<(), String> {
    flags::parse(args, crate::config::AGENT_FLAGS)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{e}\n\n{}",
                help::command_help(help::find("agent").expect("agent"))
            )
        })
}

/// `tern version [-format=pretty|json]` (Consul's command/version).
fn version(args: &[String], io: &mut Io) -> i32 {
    let doc = help::find("version").expect("version is a command");
    let parsed = match parse_or_help(args, &[value("format")], doc, io) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(extra) = parsed.args.first() {
        return fail(io, format!("unexpected argument {extra:?}"));
    }
    match parsed.last("format").unwrap_or("pretty") {
        "pretty" => io.bytes(crate::version::pretty().as_bytes()),
        "json" => io.line(&crate::version::json()),
        other => return fail(io, format!("Unknown format: {other}")),
    }
    0
}

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
/// client. `-h` prints the command's help on stdout and exits 0; an unknown
/// flag prints Go's error line and the help on stderr, exit 1; a bad value
/// is one line, exit 1.
pub(crate) fn command(
    args: &[String],
    own: &[Spec],
    path: &str,
    io: &mut Io,
) -> Result<(Parsed, client::Client), i32> {
    let doc = help::find(path).expect("every command has help");
    let specs: Vec<Spec> = own
        .iter()
        .chain(COMMON.iter())
        .chain(client_tls::TLS_FLAGS.iter())
        .copied()
        .collect();
    let parsed = parse_or_help(args, &specs, doc, io)?;
    let client = client::Client::from_flags(&parsed).map_err(|e| fail(io, e))?;
    Ok((parsed, client))
}

/// Parse `args` against `specs`; on `-h` or a flag error, print as
/// [`command`] says and give the exit code.
fn parse_or_help(
    args: &[String],
    specs: &[Spec],
    doc: &help::CommandDoc,
    io: &mut Io,
) -> Result<Parsed, i32> {
    match flags::parse(args, specs) {
        Ok(p) if p.help => {
            let _ = io.out.write_all(help::command_help(doc).as_bytes());
            Err(0)
        }
        Ok(p) => Ok(p),
        Err(e) => {
            let _ = write!(io.err, "{e}\n\n{}", help::command_help(doc));
            Err(1)
        }
    }
}

/// The full help of the command at `path`, for commands that print it
/// after a usage error (`join` without an address).
pub(crate) fn help_of(path: &str) -> String {
    help::command_help(help::find(path).expect("every command has help"))
}

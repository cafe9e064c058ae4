//! Every command's name, one-line synopsis and help, and how the first
//! arguments pick a command, as Consul's CLI (mitchellh/cli) does it:
//!
//! - `tern -h`, `tern --help`, `tern -help` and `tern help` print the list of
//!   commands on stdout and exit 0; `tern` alone and an unknown command print
//!   it on stderr and exit 127 (cli.go `Run`: "command not found").
//! - `-h`, `-help` or `--help` anywhere before `--` prints the command's help
//!   on stdout and exits 0; `tern help <command>` does the same (Tern's
//!   addition: Consul has no `help` command).
//! - A command with subcommands run without one (`tern kv`) prints its help,
//!   subcommands listed, on stderr and exits 1 (`RunResultHelp`).
//! - Flags before the command (`tern -x kv get`) are refused with the
//!   command's help, exit 1; `-v`, `-version`, `--version` there print the
//!   version.
//! - Nested commands are found by the longest run of leading words that
//!   names one (`tern kv get put` runs `kv get` with the argument `put`).

/// One command: its full name (`"kv get"`), synopsis and help text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommandDoc {
    pub path: &'static str,
    pub synopsis: &'static str,
    pub help: &'static str,
}

/// Every command, sorted by path (the help lists them in this order).
pub(crate) const COMMANDS: &[CommandDoc] = &[
    CommandDoc {
        path: "agent",
        synopsis: "Runs a Tern agent (a server, or a client agent)",
        help: crate::config::AGENT_HELP,
    },
    CommandDoc {
        path: "bench",
        synopsis: "Measures a cluster's write throughput and latency",
        help: BENCH_HELP,
    },
    CommandDoc {
        path: "bench kv",
        synopsis: "Runs closed-loop KV puts and reports writes/s and latency",
        help: crate::bench::BENCH_KV_HELP,
    },
    CommandDoc {
        path: "bench tls",
        synopsis: "Measures TLS handshakes, full and resumed, one at a time",
        help: crate::bench_tls::BENCH_TLS_HELP,
    },
    CommandDoc {
        path: "catalog",
        synopsis: "Lists the catalog's datacenters, nodes and services",
        help: super::catalog::CATALOG_HELP,
    },
    CommandDoc {
        path: "catalog datacenters",
        synopsis: "Lists the known datacenters",
        help: super::catalog::DATACENTERS_USAGE,
    },
    CommandDoc {
        path: "catalog nodes",
        synopsis: "Lists the nodes in the catalog",
        help: super::catalog::NODES_USAGE,
    },
    CommandDoc {
        path: "catalog services",
        synopsis: "Lists the services in the catalog",
        help: super::catalog::SERVICES_USAGE,
    },
    CommandDoc {
        path: "force-leave",
        synopsis: "Marks a failed member as having left the cluster",
        help: super::members::FORCE_LEAVE_USAGE,
    },
    CommandDoc {
        path: "join",
        synopsis: "Asks the agent to join a cluster through a member's address",
        help: super::members::JOIN_USAGE,
    },
    CommandDoc {
        path: "keygen",
        synopsis: "Generates a new encryption key",
        help: super::keyring::KEYGEN_USAGE,
    },
    CommandDoc {
        path: "keyring",
        synopsis: "Manages gossip layer encryption keys",
        help: super::keyring::KEYRING_USAGE,
    },
    CommandDoc {
        path: "kv",
        synopsis: "Reads and writes the key/value store",
        help: KV_HELP,
    },
    CommandDoc {
        path: "kv delete",
        synopsis: "Deletes a key, or every key under a prefix",
        help: super::kv::DELETE_USAGE,
    },
    CommandDoc {
        path: "kv export",
        synopsis: "Writes the keys under a prefix as JSON",
        help: super::kv::EXPORT_USAGE,
    },
    CommandDoc {
        path: "kv get",
        synopsis: "Reads a key's value, or lists keys under a prefix",
        help: super::kv::GET_USAGE,
    },
    CommandDoc {
        path: "kv import",
        synopsis: "Writes keys from the JSON that kv export prints",
        help: super::kv::IMPORT_USAGE,
    },
    CommandDoc {
        path: "kv put",
        synopsis: "Writes a value at a key",
        help: super::kv::PUT_USAGE,
    },
    CommandDoc {
        path: "leave",
        synopsis: "Makes the agent leave the cluster gracefully and stop",
        help: super::operator::LEAVE_USAGE,
    },
    CommandDoc {
        path: "lock",
        synopsis: "Runs a command while holding a lock in the KV store",
        help: super::lock::LOCK_USAGE,
    },
    CommandDoc {
        path: "members",
        synopsis: "Lists the members of the agent's gossip pool",
        help: super::members::MEMBERS_USAGE,
    },
    CommandDoc {
        path: "operator",
        synopsis: "Tools for the operators of a cluster (Raft, autopilot)",
        help: OPERATOR_HELP,
    },
    CommandDoc {
        path: "operator autopilot",
        synopsis: "Shows and changes autopilot's configuration and state",
        help: AUTOPILOT_HELP,
    },
    CommandDoc {
        path: "operator autopilot get-config",
        synopsis: "Shows autopilot's configuration",
        help: super::autopilot::GET_CONFIG_USAGE,
    },
    CommandDoc {
        path: "operator autopilot set-config",
        synopsis: "Changes autopilot's configuration",
        help: super::autopilot::SET_CONFIG_USAGE,
    },
    CommandDoc {
        path: "operator autopilot state",
        synopsis: "Shows autopilot's view of every server",
        help: super::autopilot::STATE_USAGE,
    },
    CommandDoc {
        path: "operator raft",
        synopsis: "Shows and changes the Raft configuration",
        help: RAFT_HELP,
    },
    CommandDoc {
        path: "operator raft list-peers",
        synopsis: "Lists the servers in the Raft configuration",
        help: super::operator::LIST_PEERS_USAGE,
    },
    CommandDoc {
        path: "operator raft remove-peer",
        synopsis: "Removes a server from the Raft configuration",
        help: super::operator::REMOVE_PEER_USAGE,
    },
    CommandDoc {
        path: "operator raft transfer-leader",
        synopsis: "Hands Raft leadership to another voter",
        help: super::operator::TRANSFER_LEADER_USAGE,
    },
    CommandDoc {
        path: "services",
        synopsis: "Registers and deregisters services with the local agent",
        help: super::services::SERVICES_HELP,
    },
    CommandDoc {
        path: "services deregister",
        synopsis: "Deregisters a service from the local agent",
        help: super::services::DEREGISTER_USAGE,
    },
    CommandDoc {
        path: "services register",
        synopsis: "Registers a service with the local agent",
        help: super::services::REGISTER_USAGE,
    },
    CommandDoc {
        path: "snapshot",
        synopsis: "Saves, restores and inspects snapshots of the servers' state",
        help: SNAPSHOT_HELP,
    },
    CommandDoc {
        path: "snapshot inspect",
        synopsis: "Prints what a snapshot file holds",
        help: super::snapshot::INSPECT_USAGE,
    },
    CommandDoc {
        path: "snapshot restore",
        synopsis: "Replaces the servers' state with a snapshot",
        help: super::snapshot::RESTORE_USAGE,
    },
    CommandDoc {
        path: "snapshot save",
        synopsis: "Saves a snapshot of the servers' state to a file",
        help: super::snapshot::SAVE_USAGE,
    },
    CommandDoc {
        path: "tls",
        synopsis: "Makes a CA and the certificates agents use for TLS",
        help: super::tls::TLS_HELP,
    },
    CommandDoc {
        path: "tls ca",
        synopsis: "Makes the certificate authority",
        help: super::tls::CA_HELP,
    },
    CommandDoc {
        path: "tls ca create",
        synopsis: "Makes a new CA certificate and key",
        help: super::tls::CA_CREATE_USAGE,
    },
    CommandDoc {
        path: "tls cert",
        synopsis: "Makes certificates signed by the CA",
        help: super::tls::CERT_HELP,
    },
    CommandDoc {
        path: "tls cert create",
        synopsis: "Makes a server, client or cli certificate and key",
        help: super::tls::CERT_CREATE_USAGE,
    },
    CommandDoc {
        path: "version",
        synopsis: "Prints the Tern version and the Consul version it matches",
        help: VERSION_HELP,
    },
];

/// The command named exactly `path`.
pub(crate) fn find(path: &str) -> Option<&'static CommandDoc> {
    COMMANDS.iter().find(|c| c.path == path)
}

/// The commands one level below `path` ("" for the top level).
fn children(path: &str) -> Vec<&'static CommandDoc> {
    COMMANDS
        .iter()
        .filter(|c| match path {
            "" => !c.path.contains(' '),
            p => c
                .path
                .strip_prefix(p)
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|rest| !rest.contains(' ')),
        })
        .collect()
}

/// Whether `path` has subcommands (running it alone prints its help).
pub(crate) fn is_parent(path: &str) -> bool {
    !children(path).is_empty()
}

/// The list of commands (mitchellh/cli `BasicHelpFunc`): names padded to the
/// longest, four spaces, the synopsis.
pub(crate) fn root_help() -> String {
    let mut out = String::from(
        "Usage: tern [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n",
    );
    let top = children("");
    let width = top.iter().map(|c| c.path.len()).max().unwrap_or(0);
    for c in top {
        out.push_str(&format!("    {:<width$}    {}\n", c.path, c.synopsis));
    }
    out
}

/// A command's help (mitchellh/cli's default help template): its text, then
/// its subcommands with their synopses, if it has any.
pub(crate) fn command_help(doc: &CommandDoc) -> String {
    let mut out = doc.help.trim().to_string();
    // Every client command also takes the HTTPS flags (`client_tls.rs`).
    if out.contains("-http-addr=ADDR") {
        out.push_str(HTTPS_FLAGS);
    }
    let subs = children(doc.path);
    if !subs.is_empty() {
        let name = |c: &CommandDoc| c.path.rsplit(' ').next().unwrap_or(c.path);
        let width = subs.iter().map(|c| name(c).len()).max().unwrap_or(0);
        out.push_str("\n\nSubcommands:");
        for c in subs {
            out.push_str(&format!("\n    {:<width$}    {}", name(c), c.synopsis));
        }
    }
    out.push('\n');
    out
}

/// What the arguments ask for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolved<'a> {
    /// Run this command with these arguments.
    Run(&'static CommandDoc, &'a [String]),
    /// Print this text on stdout and exit 0.
    Help(String),
    /// Print this text on stderr and exit with this code.
    Refuse(String, i32),
    /// Print the version.
    Version,
}

/// The exit code of mitchellh/cli for a command that does not exist.
pub(crate) const EXIT_NOT_FOUND: i32 = 127;

fn is_help_flag(a: &str) -> bool {
    matches!(a, "-h" | "-help" | "--help")
}

/// Pick the command `args` name (the arguments after `tern`).
pub(crate) fn resolve(args: &[String]) -> Resolved<'_> {
    let flags_end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let help = args[..flags_end].iter().any(|a| is_help_flag(a));
    let first = args[..flags_end].iter().position(|a| !a.starts_with('-'));
    let top_flags: Vec<&String> = args[..first.unwrap_or(flags_end)]
        .iter()
        .filter(|a| !is_help_flag(a))
        .collect();
    let Some(first) = first else {
        if top_flags
            .iter()
            .any(|a| matches!(a.as_str(), "-v" | "-version" | "--version"))
        {
            return Resolved::Version;
        }
        return match help {
            true => Resolved::Help(root_help()),
            false => Resolved::Refuse(root_help(), EXIT_NOT_FOUND),
        };
    };
    // `tern help [command...]` (Tern's addition).
    if args[first] == "help" && top_flags.is_empty() {
        let words = command_words(&args[first + 1..flags_end]);
        if words == 0 {
            return Resolved::Help(root_help());
        }
        return match longest_command(&args[first + 1..first + 1 + words]) {
            Some((doc, n)) if n == words => Resolved::Help(command_help(doc)),
            _ => Resolved::Refuse(root_help(), EXIT_NOT_FOUND),
        };
    }
    let words = command_words(&args[first..flags_end]);
    let Some((doc, n)) = longest_command(&args[first..first + words]) else {
        return Resolved::Refuse(root_help(), EXIT_NOT_FOUND);
    };
    if help {
        return Resolved::Help(command_help(doc));
    }
    if !top_flags.is_empty() {
        return Resolved::Refuse(
            format!(
                "Invalid flags before the subcommand. If these flags are for\n\
                 the subcommand, please put them after the subcommand.\n\n{}",
                command_help(doc)
            ),
            1,
        );
    }
    if is_parent(doc.path) {
        return Resolved::Refuse(command_help(doc), 1);
    }
    Resolved::Run(doc, &args[first + n..])
}

/// How many leading arguments could be command words: not flags, not
/// empty, no spaces (mitchellh/cli's rule).
fn command_words(args: &[String]) -> usize {
    args.iter()
        .take_while(|a| !a.is_empty() && !a.starts_with('-') && !a.contains(' '))
        .count()
}

/// The command named by the most leading `words`, and how many it took.
fn longest_command(words: &[String]) -> Option<(&'static CommandDoc, usize)> {
    (1..=words.len())
        .rev()
        .find_map(|n| find(&words[..n].join(" ")).map(|doc| (doc, n)))
}

/// The HTTPS flags every client command takes, after its own.
const HTTPS_FLAGS: &str = "
  -ca-file=PATH  -ca-path=DIR  -client-cert=PATH  -client-key=PATH
  -tls-server-name=NAME   for https:// in -http-addr or CONSUL_HTTP_ADDR (or
                          CONSUL_HTTP_SSL=true); also CONSUL_CACERT,
                          CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY";

const KV_HELP: &str = "
Usage: tern kv <subcommand> [options] [args]

  Reads and writes Tern's key/value store, through the agent's HTTP API as
  Consul's kv commands do. For example:

      $ tern kv put app/config/connections 5
      $ tern kv get app/config/connections
      $ tern kv get -detailed app/config/connections
      $ tern kv export app/ > app.json
      $ tern kv import @app.json
      $ tern kv delete -recurse app/

  Run a subcommand with -h for its options.
";

const SNAPSHOT_HELP: &str = "
Usage: tern snapshot <subcommand> [options] [args]

  Saves, restores and inspects point-in-time snapshots of the servers' state
  (KV, the catalog, autopilot's configuration) for disaster recovery, as
  Consul's snapshot commands do. For example:

      $ tern snapshot save backup.snap
      $ tern snapshot inspect backup.snap
      $ tern snapshot restore backup.snap

  Run a subcommand with -h for its options.
";

const OPERATOR_HELP: &str = "
Usage: tern operator <subcommand> [options]

  Tools for the operators of a Tern cluster: the Raft configuration (which
  servers vote) and autopilot (which cleans up and promotes servers). These
  change the cluster as a whole; use them with care.
";

const RAFT_HELP: &str = "
Usage: tern operator raft <subcommand> [options]

  Shows the servers in the Raft configuration and removes one that will not
  come back (prefer `tern force-leave` while it is still a gossip member).

      $ tern operator raft list-peers
      $ tern operator raft remove-peer -id=<node id>
      $ tern operator raft transfer-leader -id=<node id>
";

const AUTOPILOT_HELP: &str = "
Usage: tern operator autopilot <subcommand> [options]

  Shows and changes the configuration of autopilot, and shows its view of
  every server's health.

      $ tern operator autopilot get-config
      $ tern operator autopilot set-config -cleanup-dead-servers=false
      $ tern operator autopilot state
";

const BENCH_HELP: &str = "
Usage: tern bench <subcommand> [options]

  Load generators that measure a running cluster. They measure and report;
  they check nothing.
";

pub(crate) const VERSION_HELP: &str = "
Usage: tern version [options]

  Prints Tern's version, the Consul version its API answers like (the same
  one /v1/agent/self reports as Config.Version), its revision and the
  protocol versions it speaks.

Command Options

  -format=<pretty|json>
     Output format. The default is pretty.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn commands_are_sorted_unique_and_every_parent_exists() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].path < pair[1].path,
                "{} {}",
                pair[0].path,
                pair[1].path
            );
        }
        for c in COMMANDS {
            if let Some((parent, _)) = c.path.rsplit_once(' ') {
                assert!(find(parent).is_some(), "{} has no parent", c.path);
            }
            assert!(
                c.help
                    .trim()
                    .starts_with(&format!("Usage: tern {}", c.path)),
                "{}",
                c.path
            );
        }
    }

    /// mitchellh/cli `BasicHelpFunc`: top-level commands only, aligned.
    #[test]
    fn the_root_help_lists_top_level_commands_aligned() {
        let help = root_help();
        assert!(help.starts_with(
            "Usage: tern [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n"
        ));
        assert!(help.contains("\n    agent          Runs a Tern agent"));
        assert!(help.contains("\n    force-leave    Marks a failed"));
        assert!(!help.contains("kv get"));
    }

    #[test]
    fn nested_commands_take_the_longest_run_of_words() {
        let a = args("kv get put -recurse");
        match resolve(&a) {
            Resolved::Run(doc, rest) => {
                assert_eq!(doc.path, "kv get");
                assert_eq!(rest, &a[2..]);
            }
            other => panic!("{other:?}"),
        }
        match resolve(&args("operator raft list-peers -stale")) {
            Resolved::Run(doc, rest) => {
                assert_eq!(doc.path, "operator raft list-peers");
                assert_eq!(rest, ["-stale"]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// cli.go `Run`: no command or an unknown one is 127 with the list on
    /// the error stream; a parent alone is its help and 1.
    #[test]
    fn exit_codes_follow_mitchellh_cli() {
        assert_eq!(resolve(&[]), Resolved::Refuse(root_help(), 127));
        assert_eq!(
            resolve(&args("frobnicate")),
            Resolved::Refuse(root_help(), 127)
        );
        assert_eq!(resolve(&args("--help")), Resolved::Help(root_help()));
        assert_eq!(resolve(&args("-h")), Resolved::Help(root_help()));
        assert_eq!(resolve(&args("help")), Resolved::Help(root_help()));
        assert_eq!(resolve(&args("--version")), Resolved::Version);
        let kv = command_help(find("kv").unwrap());
        assert_eq!(resolve(&args("kv")), Resolved::Refuse(kv.clone(), 1));
        assert_eq!(resolve(&args("kv -h")), Resolved::Help(kv.clone()));
        assert_eq!(resolve(&args("help kv")), Resolved::Help(kv));
        assert_eq!(
            resolve(&args("help kv nope")),
            Resolved::Refuse(root_help(), 127)
        );
        let get = command_help(find("kv get").unwrap());
        assert_eq!(
            resolve(&args("kv get x -help")),
            Resolved::Help(get.clone())
        );
        assert_eq!(resolve(&args("kv get -- -h")).to_run(), Some("kv get"));
        match resolve(&args("-x kv get")) {
            Resolved::Refuse(text, 1) => assert!(text.starts_with("Invalid flags before")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_commands_list_the_https_flags_and_others_do_not() {
        assert!(command_help(find("kv get").unwrap()).contains("-client-cert=PATH"));
        assert!(command_help(find("lock").unwrap()).contains("-tls-server-name=NAME"));
        assert!(!command_help(find("tls ca create").unwrap()).contains("-client-cert"));
        assert!(!command_help(find("agent").unwrap()).contains("-client-cert"));
    }

    #[test]
    fn a_parents_help_lists_its_subcommands() {
        let help = command_help(find("kv").unwrap());
        assert!(
            help.contains("\n\nSubcommands:\n    delete    Deletes"),
            "{help}"
        );
        assert!(help.contains("\n    put       Writes a value"), "{help}");
        assert!(help.ends_with('\n'));
        let leaf = command_help(find("kv put").unwrap());
        assert!(!leaf.contains("Subcommands:"));
    }

    impl Resolved<'_> {
        fn to_run(&self) -> Option<&'static str> {
            match self {
                Resolved::Run(doc, _) => Some(doc.path),
                _ => None,
            }
        }
    }
}

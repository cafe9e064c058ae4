//! The surfaces an operator touches first, on the real `tern` binary and a
//! real `tern agent` process: help on every command (mitchellh/cli's rules,
//! as Consul's CLI has them), `tern version` agreeing with `/v1/agent/self`
//! and the members' `Build`, `kv export`/`kv import`/`-base64` round trips
//! (command/kv/exp, command/kv/imp), a Consul config directory that loads
//! with warnings for the keys Tern does not implement, logs (no colour off a
//! terminal, hclog's JSON keys, a rotating log file) and `tern bench`'s live
//! line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_gossip_port, free_port, temp_dir};

/// A `tern agent` with its stdout and stderr in files, killed when dropped.
struct Agent {
    child: Child,
    http: u16,
    out: PathBuf,
    err: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// A one-server cluster on loopback with `extra` arguments.
    fn start(name: &str, extra: &[String]) -> Agent {
        let dir = temp_dir(name);
        let http = free_port();
        let mut args = vec![
            "agent".to_string(),
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-hcl=performance { raft_multiplier = 1 }".into(),
            format!("-node={name}"),
            format!("-data-dir={}", dir.join("data").display()),
            "-bind=127.0.0.1".into(),
            "-client=127.0.0.1".into(),
            format!("-http-port={http}"),
            format!("-server-port={}", free_port()),
            format!("-serf-lan-port={}", free_gossip_port()),
            format!("-serf-wan-port={}", free_gossip_port()),
        ];
        args.extend(extra.iter().cloned());
        Agent::spawn(&dir, http, &args)
    }

    /// `tern <args>` as an agent serving HTTP on `http`.
    fn spawn(dir: &Path, http: u16, args: &[String]) -> Agent {
        let (out, err) = (dir.join("stdout"), dir.join("stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start tern agent");
        Agent {
            child,
            http,
            out,
            err,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    /// Wait until the agent takes a write (it has elected itself).
    fn wait_ready(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((200, body)) = http("PUT", &format!("{}/v1/kv/ready", self.base()), b"1") {
                if body == "true" {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited ({status}): {}", self.stderr());
            }
            assert!(Instant::now() < end, "the agent never took a write");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

fn http(method: &str, url: &str, body: &[u8]) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = match method {
        "PUT" => agent.put(url).send(body).ok()?,
        _ => agent.get(url).call().ok()?,
    };
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

/// Run `tern` with `args` and `stdin`; (exit code, stdout, stderr).
fn tern_in(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tern");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("tern ran");
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tern(args: &[&str]) -> (i32, String, String) {
    tern_in(args, b"")
}

/// Every leaf command, and every command with subcommands.
const LEAVES: &[&str] = &[
    "agent",
    "bench kv",
    "bench tls",
    "catalog datacenters",
    "catalog nodes",
    "catalog services",
    "force-leave",
    "join",
    "kv delete",
    "kv export",
    "kv get",
    "kv import",
    "kv put",
    "leave",
    "lock",
    "members",
    "operator autopilot get-config",
    "operator autopilot set-config",
    "operator autopilot state",
    "operator raft list-peers",
    "operator raft remove-peer",
    "operator raft transfer-leader",
    "services deregister",
    "services register",
    "snapshot inspect",
    "snapshot restore",
    "snapshot save",
    "version",
];
const PARENTS: &[&str] = &[
    "bench",
    "catalog",
    "kv",
    "operator",
    "operator autopilot",
    "operator raft",
    "services",
    "snapshot",
];

// ---------------------------------------------------------------------------
// Help (mitchellh/cli cli.go `Run` and `processArgs`, Consul's main.go)

/// `tern`, `tern -h`, `tern --help`, `tern -help`, `tern help`: the command
/// list. On request it goes to stdout with 0; `tern` alone and an unknown
/// command put it on stderr with 127, as mitchellh/cli does for Consul.
#[test]
fn the_command_list_as_consuls_cli_prints_it() {
    for asked in [&["-h"][..], &["--help"], &["-help"], &["help"]] {
        let (code, out, err) = tern(asked);
        assert_eq!((code, err.as_str()), (0, ""), "{asked:?}");
        assert!(
            out.starts_with(
                "Usage: tern [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n"
            ),
            "{asked:?}: {out}"
        );
        for top in [
            "agent",
            "bench",
            "catalog",
            "force-leave",
            "join",
            "kv",
            "leave",
            "members",
            "operator",
            "version",
        ] {
            assert!(
                out.contains(&format!("\n    {top} ")),
                "{top} missing: {out}"
            );
        }
    }
    for refused in [&[][..], &["frobnicate"], &["help", "frobnicate"]] {
        let (code, out, err) = tern(refused);
        assert_eq!((code, out.as_str()), (127, ""), "{refused:?}");
        assert!(
            err.starts_with("Usage: tern [--version]"),
            "{refused:?}: {err}"
        );
    }
    // Flags before the command are refused with its help (cli.go topFlags).
    let (code, _, err) = tern(&["-x", "kv", "get", "k"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Invalid flags before the subcommand."),
        "{err}"
    );
    assert!(err.contains("Usage: tern kv get"), "{err}");
}

/// Every command answers `-h`, `-help`, `--help` (anywhere before `--`) and
/// `tern help <command>` with its help on stdout, exit 0; a parent lists its
/// subcommands; a parent run alone prints that on stderr and exits 1
/// (RunResultHelp); an unknown flag prints Go's error line and the command's
/// help on stderr, exit 1 (issue 10).
#[test]
fn every_command_has_help_and_an_unknown_flag_shows_it() {
    for path in LEAVES.iter().chain(PARENTS) {
        let words: Vec<&str> = path.split(' ').collect();
        let usage = format!("Usage: tern {path}");
        for flag in ["-h", "-help", "--help"] {
            let mut a = words.clone();
            a.push(flag);
            let (code, out, err) = tern(&a);
            assert_eq!((code, err.as_str()), (0, ""), "{a:?}");
            assert!(out.starts_with(&usage), "{a:?}: {out}");
        }
        let mut a = vec!["help"];
        a.extend(&words);
        let (code, out, _) = tern(&a);
        assert_eq!(code, 0, "{a:?}");
        assert!(out.starts_with(&usage), "{a:?}: {out}");
        assert_eq!(
            out.contains("\nSubcommands:\n"),
            PARENTS.contains(path),
            "{path}: {out}"
        );
    }
    for parent in PARENTS {
        let words: Vec<&str> = parent.split(' ').collect();
        let (code, out, err) = tern(&words);
        assert_eq!((code, out.as_str()), (1, ""), "{parent}");
        assert!(err.starts_with(&format!("Usage: tern {parent}")), "{err}");
        assert!(err.contains("\nSubcommands:\n    "), "{err}");
    }
    for leaf in LEAVES {
        let mut a: Vec<&str> = leaf.split(' ').collect();
        a.push("-no-such-flag");
        let (code, out, err) = tern(&a);
        assert_eq!((code, out.as_str()), (1, ""), "{a:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "flag provided but not defined: -no-such-flag\n\nUsage: tern {leaf}"
            )),
            "{a:?}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Version (command/version/formatter.go; agent/agent_endpoint.go AgentSelf)

/// `tern version`, `/v1/agent/self` and the members' `Build` name the same
/// Consul-compatible version; `-version` and `--version` print it too.
#[test]
fn version_agrees_with_agent_self_and_the_members_build() {
    let mut agent = Agent::start("version", &[]);
    agent.wait_ready();
    let (_, body) = http("GET", &format!("{}/v1/agent/self", agent.base()), b"").unwrap();
    let this: serde_json::Value = serde_json::from_str(&body).unwrap();
    let consul = this["Config"]["Version"].as_str().unwrap().to_string();
    let revision = this["Config"]["Revision"].as_str().unwrap().to_string();
    assert!(!consul.is_empty() && !revision.is_empty());
    assert_eq!(
        this["Member"]["Tags"]["build"].as_str(),
        Some(format!("{consul}:{revision}").as_str())
    );

    let (code, out, _) = tern(&["version"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "Tern v{} (Consul v{consul} compatible)",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(lines[1], format!("Revision {revision}"));
    assert_eq!(
        lines[2],
        format!(
            "Build Date {}",
            this["Config"]["BuildDate"].as_str().unwrap()
        )
    );
    for flag in ["-version", "--version", "-v"] {
        assert_eq!(tern(&[flag]).1, out, "{flag}");
    }
    let (code, json, _) = tern(&["version", "-format=json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["Version"].as_str(), Some(consul.as_str()));
    assert_eq!(json["Revision"].as_str(), Some(revision.as_str()));
    let (code, _, err) = tern(&["version", "-format=yaml"]);
    assert_eq!((code, err.as_str()), (1, "Unknown format: yaml\n"));

    // `tern members` shows the part of the build tag before the colon.
    let (code, out, _) = tern(&["members", &format!("-http-addr={}", agent.addr())]);
    assert_eq!(code, 0, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    let build = header.iter().position(|h| *h == "Build").unwrap();
    assert_eq!(row[build], consul);
}

// ---------------------------------------------------------------------------
// kv export / import / -base64 (command/kv/exp, command/kv/imp,
// command/kv/get -base64, command/kv/put -base64)

/// Tern's limit on a value (Consul's `kv_max_value_size`, 512 KiB).
const VALUE_BYTES_MAX: usize = 512 * 1024;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn kv_export_and_import_round_trip_binary_values_and_one_at_the_limit() {
    let dir = temp_dir("kv-impexp-files");
    let mut agent = Agent::start("kv-impexp", &[]);
    agent.wait_ready();
    let addr = format!("-http-addr={}", agent.addr());
    let a = addr.as_str();

    // Every byte value, written with -base64; a text value with flags; a
    // value of exactly the limit from a file; a key with characters that
    // need escaping in a URL and in Go's JSON.
    let binary: Vec<u8> = (0..=255u8).collect();
    let (code, out, err) = tern(&["kv", "put", "-base64", a, "app/binary", &b64(&binary)]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(out, "Success! Data written to: app/binary\n");
    assert_eq!(
        tern(&["kv", "put", "-flags=42", a, "app/text", "hello"]).0,
        0
    );
    let big: Vec<u8> = (0..VALUE_BYTES_MAX).map(|i| (i * 7 % 251) as u8).collect();
    let big_file = dir.join("big");
    std::fs::write(&big_file, &big).unwrap();
    let at_big = format!("@{}", big_file.display());
    assert_eq!(tern(&["kv", "put", a, "app/big", &at_big]).0, 0);
    assert_eq!(tern(&["kv", "put", a, "app/odd <&> key?", "x"]).0, 0);
    assert_eq!(tern(&["kv", "put", a, "app/empty"]).0, 0);
    assert_eq!(tern(&["kv", "put", a, "other/x", "y"]).0, 0);

    // -base64 on get: the exact bytes, also under -recurse.
    let (code, out, _) = tern(&["kv", "get", "-base64", a, "app/binary"]);
    assert_eq!((code, out), (0, format!("{}\n", b64(&binary))));
    let (_, out, _) = tern(&["kv", "get", "-recurse", "-base64", a, "app/text"]);
    assert_eq!(out, format!("app/text:{}\n", b64(b"hello")));
    // Bad base64 on put is refused before anything is written.
    let (code, _, err) = tern(&["kv", "put", "-base64", a, "app/bad", "not base64!"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error! Cannot base 64 decode data: "),
        "{err}"
    );
    assert_eq!(tern(&["kv", "get", a, "app/bad"]).0, 1);

    // Export: Consul's entries, tab-indented, sorted by key, app/ only.
    let (code, exported, err) = tern(&["kv", "export", a, "app/"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(exported
        .starts_with("[\n\t{\n\t\t\"key\": \"app/big\",\n\t\t\"flags\": 0,\n\t\t\"value\": \""));
    assert!(
        exported.contains("\"key\": \"app/odd \\u003c\\u0026\\u003e key?\""),
        "Go's HTML-safe escapes"
    );
    let entries: Vec<serde_json::Value> = serde_json::from_str(&exported).unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "app/big",
            "app/binary",
            "app/empty",
            "app/odd <&> key?",
            "app/text"
        ]
    );
    assert_eq!(entries[1]["value"].as_str(), Some(b64(&binary).as_str()));
    assert_eq!(entries[2]["value"].as_str(), Some(""));
    assert_eq!(entries[4]["flags"].as_u64(), Some(42));
    // A prefix with nothing under it exports an empty array.
    assert_eq!(tern(&["kv", "export", a, "nothing/"]).1, "[]\n");

    // Delete, then import from stdin: every key comes back byte for byte.
    assert_eq!(tern(&["kv", "delete", "-recurse", a, "app/"]).0, 0);
    let (code, out, err) = tern_in(&["kv", "import", a, "-"], exported.as_bytes());
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "Imported: app/big\nImported: app/binary\nImported: app/empty\n\
         Imported: app/odd <&> key?\nImported: app/text\n"
    );
    assert_eq!(tern(&["kv", "export", a, "app/"]).1, exported);
    let (_, out, _) = tern(&["kv", "get", "-base64", a, "app/big"]);
    assert_eq!(out.trim_end(), b64(&big));
    let (_, out, _) = tern(&["kv", "get", "-detailed", a, "app/text"]);
    assert!(out.contains("Flags            42\n"), "{out}");

    // Import from a file, into another prefix; and a literal argument.
    let moved = exported.replace("\"app/", "\"copy/");
    let file = dir.join("copy.json");
    std::fs::write(&file, &moved).unwrap();
    let at_file = format!("@{}", file.display());
    assert_eq!(tern(&["kv", "import", a, &at_file]).0, 0);
    assert_eq!(tern(&["kv", "export", a, "copy/"]).1, moved);
    let literal = format!(r#"[{{"key":"lit","flags":0,"value":"{}"}}]"#, b64(b"v"));
    assert_eq!(tern(&["kv", "import", a, &literal]).1, "Imported: lit\n");
    assert_eq!(tern(&["kv", "get", a, "lit"]).1, "v\n");

    // Past the limit: the agent's 413 stops the import at that key, after
    // the keys before it were written.
    let over = format!(
        r#"[{{"key":"first","flags":0,"value":"{}"}},{{"key":"huge","flags":0,"value":"{}"}},{{"key":"never","flags":0,"value":""}}]"#,
        b64(b"1"),
        b64(&vec![0u8; VALUE_BYTES_MAX + 1])
    );
    let (code, out, err) = tern_in(&["kv", "import", a, "-"], over.as_bytes());
    assert_eq!(code, 1);
    assert_eq!(out, "Imported: first\n");
    assert!(
        err.starts_with("Error! Failed writing data for key huge: Unexpected response code: 413"),
        "{err}"
    );
    assert_eq!(tern(&["kv", "get", a, "never"]).0, 1);

    // Bad input: one line each, nothing written.
    for (data, want) in [
        ("", "Error! Empty DATA argument"),
        ("{not json", "Cannot unmarshal data: "),
        (
            r#"[{"key":"k","value":"@@"}]"#,
            "Error base 64 decoding value for key k: ",
        ),
        (r#"{"key":"k"}"#, "Cannot unmarshal data: expected an array"),
    ] {
        let (code, _, err) = tern(&["kv", "import", a, data]);
        assert_eq!(code, 1, "{data}");
        assert!(
            err.starts_with(want) && err.lines().count() == 1,
            "{data}: {err}"
        );
    }
    let (code, _, err) = tern(&["kv", "import", a]);
    assert_eq!((code, err.as_str()), (1, "Error! Missing DATA argument\n"));
    assert_eq!(tern(&["kv", "get", a, "k"]).0, 1);
}

// ---------------------------------------------------------------------------
// A Consul config directory (agent/config/config.go, builder.go)

/// A realistic Consul server configuration, several files in HCL and JSON:
/// the agent starts, and each key Tern does not implement is one warning
/// line naming it. A key in no Consul schema is still an error.
#[test]
fn a_consul_config_directory_loads_with_one_warning_per_unsupported_key() {
    let dir = temp_dir("consul-dir");
    let conf = dir.join("consul.d");
    std::fs::create_dir_all(&conf).unwrap();
    let http = free_port();
    std::fs::write(
        conf.join("00-server.hcl"),
        format!(
            r#"
datacenter = "dc1"
data_dir   = "{data}"
server     = true
bootstrap_expect = 1
node_name  = "consul-dir"
bind_addr  = "127.0.0.1"
client_addr = "127.0.0.1"
encrypt    = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="

ports {{
  http     = {http}
  server   = {server}
  serf_lan = {lan}
  serf_wan = {wan}
  grpc     = 8502
  dns      = -1
}}

performance {{
  raft_multiplier = 1
}}

ui_config {{
  enabled = true
}}

connect {{
  enabled = true
}}
"#,
            data = dir.join("data").display(),
            server = free_port(),
            lan = free_gossip_port(),
            wan = free_gossip_port(),
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("10-acl.hcl"),
        r#"
acl {
  enabled        = true
  default_policy = "deny"
  tokens {
    initial_management = "00000000-0000-0000-0000-000000000001"
  }
}
"#,
    )
    .unwrap();
    std::fs::write(
        conf.join("20-telemetry.json"),
        r#"{
  "telemetry": {"prometheus_retention_time": "24h", "disable_hostname": true},
  "disable_update_check": true,
  "autopilot": {"cleanup_dead_servers": true},
  "log_level": "INFO"
}"#,
    )
    .unwrap();
    // Not a config file: ignored, as Consul ignores it.
    std::fs::write(conf.join("README.txt"), "ports { nonsense }").unwrap();

    let args: Vec<String> = vec!["agent".into(), format!("-config-dir={}", conf.display())];
    let mut agent = Agent::spawn(&dir, http, &args);
    agent.wait_ready();
    let log = agent.stdout();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not supported by Tern; ignored"))
        .collect();
    let mut named: Vec<String> = warnings
        .iter()
        .map(|l| {
            let from = l.find("config: key \"").expect("names the key") + 13;
            l[from..][..l[from..].find('"').unwrap()].to_string()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            "acl",
            "connect",
            "disable_update_check",
            "ports.dns",
            "ports.grpc",
            "telemetry",
            "ui_config"
        ],
        "{log}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("(in ") && w.contains("10-acl.hcl)")),
        "each warning names its file: {warnings:?}"
    );
    // Ignored security keys say so in words; the others do not.
    let not_enforced = |k: &str| {
        warnings
            .iter()
            .find(|w| w.contains(&format!("key \"{k}\" ")))
            .is_some_and(|w| w.contains("NOT enforced"))
    };
    assert!(not_enforced("acl"), "{warnings:?}");
    // `encrypt` is implemented: the pools start encrypted, no warning.
    assert!(log.contains("encrypted=true"), "{log}");
    assert!(
        !not_enforced("telemetry") && !not_enforced("ports.grpc"),
        "{warnings:?}"
    );
    drop(agent);

    // A key that is in no Consul schema, or a known key with a bad value:
    // still an error naming it, and the agent does not start.
    for (file, text, want) in [
        (
            "30-typo.hcl",
            "acls { enabled = true }\n",
            "invalid config key acls (in ",
        ),
        (
            "30-bad.json",
            r#"{"log_json": "sometimes"}"#,
            "log_json: must be true or false",
        ),
    ] {
        let bad = dir.join(format!("bad-{file}"));
        std::fs::create_dir_all(&bad).unwrap();
        for entry in std::fs::read_dir(&conf).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, bad.join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(bad.join(file), text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["agent", &format!("-config-dir={}", bad.display())])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(want) && err.lines().count() == 1,
            "{file}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Logs (logging/logger.go, logging/logfile.go, hclog's JSON format)

/// Off a terminal the agent writes no colour codes; `-log-json` gives one
/// JSON object per line with hclog's keys; `-log-file` to a directory
/// writes `tern.log` there and rotates it by size, keeping
/// `-log-rotate-max-files` old files.
#[test]
fn logs_are_plain_off_a_terminal_json_on_request_and_rotate_in_a_file() {
    let mut plain = Agent::start("logs-plain", &[]);
    plain.wait_ready();
    let text = plain.stdout();
    assert!(text.contains("Tern agent running"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
    drop(plain);

    let dir = temp_dir("logs-json-files");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut agent = Agent::start(
        "logs-json",
        &[
            "-log-json".into(),
            "-log-level=debug".into(),
            format!("-log-file={}/", logs.display()),
            // Smaller than one line: every line after the first starts a
            // new file.
            "-log-rotate-bytes=100".into(),
            "-log-rotate-max-files=2".into(),
        ],
    );
    agent.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    let stdout = agent.stdout();
    let mut lines = 0;
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["@level", "@message", "@module", "@timestamp"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        let ts = v["@timestamp"].as_str().unwrap();
        assert!(
            ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&v["@level"].as_str().unwrap())
        );
        lines += 1;
    }
    assert!(
        stdout.contains("\"@message\":\"Tern agent running"),
        "{stdout}"
    );
    // At least four lines, so at least three rotations of the file.
    assert!(lines >= 4, "{stdout}");
    let mut files: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.contains(&"tern.log".to_string()), "{files:?}");
    let rotated: Vec<&String> = files.iter().filter(|f| f.starts_with("tern-")).collect();
    assert_eq!(
        rotated.len(),
        2,
        "rotated, at most 2 kept: {files:?} ({} bytes of log)",
        stdout.len()
    );
    for f in &files {
        let text = std::fs::read_to_string(logs.join(f)).unwrap();
        assert!(!text.contains('\u{1b}'));
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["@message"].is_string());
        }
    }
}

// ---------------------------------------------------------------------------
// tern bench

/// `tern bench kv` prints a line each second on stderr while it runs, then
/// its summary on stdout.
#[test]
fn bench_prints_a_live_line_each_second_then_its_summary() {
    let mut agent = Agent::start("bench-live", &[]);
    agent.wait_ready();
    let addr = format!("-http-addr={}", agent.addr());
    let start = Instant::now();
    let (code, out, err) = tern(&[
        "bench",
        "kv",
        &addr,
        "-clients=2",
        "-duration=3s",
        "-value-size=16",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(start.elapsed() >= Duration::from_secs(3));
    let live: Vec<&str> = err.lines().collect();
    assert!(live.len() >= 2, "a line a second: {err}");
    for (i, line) in live.iter().take(2).enumerate() {
        assert!(
            line.starts_with(&format!("t={}s writes/s=", i + 1)),
            "{line}"
        );
        assert!(line.contains(" p99_ms="), "{line}");
    }
    let writes: u64 = live[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("writes/s="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(writes > 0, "{err}");
    assert!(
        out.starts_with("clients=2 value_size=16 duration_s="),
        "{out}"
    );
    assert!(
        out.contains(" writes/s=") && out.contains(" p99_ms="),
        "{out}"
    );
    let (code, _, err) = tern(&["bench", "kv", "-clients=0"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "-clients: must be a positive number, got \"0\"\n")
    );
}

// ---------------------------------------------------------------------------
// tern catalog (Consul's command/catalog/list/{dc,nodes,services})

/// `tern catalog datacenters|nodes|services` against a real agent holding
/// registrations: Consul's columns (`Node  ID  Address  DC`, the ID's first
/// group; `-detailed` with `TaggedAddresses` and `Meta` as sorted `k=v`),
/// `-service`, `-node-meta`, `-tags` (tabwriter padding), `-node`, the
/// "No ... match" line on stderr with exit 0, `-near` warned about, and a
/// refused `-filter` as the API's 400.
#[test]
fn catalog_commands_print_consuls_columns() {
    let mut agent = Agent::start("catalogcli", &[]);
    agent.wait_ready();
    let base = agent.base();
    for body in [
        r#"{"Node":"web-1","ID":"aaaaaaaa-1111-2222-3333-444444444444","Address":"10.0.0.1",
            "TaggedAddresses":{"wan":"1.2.3.4","lan":"10.0.0.1"},"NodeMeta":{"rack":"r1","env":"prod"},
            "Service":{"Service":"web","Tags":["v2","blue"],"Port":80}}"#,
        r#"{"Node":"db-1","Address":"10.0.0.2","NodeMeta":{"rack":"r2"},
            "Service":{"Service":"db","Tags":["primary"],"Port":5432}}"#,
        r#"{"Node":"web-2","Address":"10.0.0.3","NodeMeta":{"rack":"r1"},
            "Service":{"Service":"web","Tags":["v1"],"Port":80}}"#,
    ] {
        assert_eq!(
            http(
                "PUT",
                &format!("{base}/v1/catalog/register"),
                body.as_bytes()
            ),
            Some((200, "true".into()))
        );
    }
    let addr = agent.addr();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push("-http-addr");
        all.push(&addr);
        tern(&all)
    };

    let (code, out, err) = run(&["catalog", "datacenters"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "dc1\n", ""));

    // Once the agent's anti-entropy has written its node ID.
    let node_id = || {
        let (_, body) = http("GET", &format!("{base}/v1/catalog/node/catalogcli"), b"")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let id = v["Node"]["ID"].as_str().filter(|id| id.len() >= 8)?;
        Some(id[..8].to_owned())
    };
    let own = (0..100)
        .find_map(|_| {
            node_id().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            })
        })
        .expect("the agent's node ID reached the catalog");
    let (code, out, err) = run(&["catalog", "nodes"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    // The agent's own node is in the catalog too: the leader registers
    // every gossip member (serfHealth, as Consul's leader.go), and the
    // agent's anti-entropy writes its node ID (the first 8 characters
    // show, as Consul's catalog list nodes).
    assert_eq!(
        out,
        format!(
            "Node        ID        Address    DC\n\
         catalogcli  {}  127.0.0.1  dc1\n\
         db-1                  10.0.0.2   dc1\n\
         web-1       aaaaaaaa  10.0.0.1   dc1\n\
         web-2                 10.0.0.3   dc1\n",
            own
        )
    );

    let (code, out, _) = run(&["catalog", "nodes", "-detailed", "-node-meta=env=prod"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Node   ID                                    Address   DC   TaggedAddresses            Meta\n\
         web-1  aaaaaaaa-1111-2222-3333-444444444444  10.0.0.1  dc1  lan=10.0.0.1, wan=1.2.3.4  env=prod, rack=r1\n"
    );

    let (code, out, _) = run(&["catalog", "nodes", "-service=web", "-node-meta=rack=r1"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"], "{out}");

    let (code, out, err) = run(&["catalog", "nodes", "-service=nothing"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "",
            "No nodes match the given query - try expanding your search.\n"
        )
    );

    let (code, out, err) = run(&["catalog", "nodes", "-near=web-1"]);
    assert_eq!(code, 0);
    assert!(err.contains("-near is not supported"), "{err}");
    assert!(out.starts_with("Node "), "{out}");

    // -filter is passed on and evaluated by the agent (go-bexpr).
    let (code, out, _) = run(&["catalog", "nodes", "-filter=Node == web-1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "a header and web-1: {out}");
    assert!(out.lines().nth(1).unwrap().starts_with("web-1 "), "{out}");
    let (code, _, err) = run(&["catalog", "nodes", "-filter=Node =="]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error listing nodes: Unexpected response code: 400 (Failed to create boolean expression evaluator"),
        "{err}"
    );

    // `consul`: the agent is a server (its leader registers the service).
    let (code, out, err) = run(&["catalog", "services"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "consul\ndb\nweb\n", "")
    );
    let (code, out, _) = run(&["catalog", "services", "-tags"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "consul      \ndb          primary\nweb         blue,v1,v2\n"
    );
    let (code, out, _) = run(&["catalog", "services", "-node=db-1"]);
    assert_eq!((code, out.as_str()), (0, "db\n"));
    let (code, out, _) = run(&["catalog", "services", "-node-meta=rack=r2"]);
    assert_eq!((code, out.as_str()), (0, "db\n"));
    let (code, out, err) = run(&["catalog", "services", "-node=nobody"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "",
            "No services match the given query - try expanding your search.\n"
        )
    );
    let (code, _, err) = run(&["catalog", "services", "extra"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Too many arguments (expected 0)\n")
    );
}

/// `tern lock` (Consul's command/lock over api/lock.go) against a real
/// agent: two at once on one prefix run their children one after the other,
/// the key carries Consul's lock flag and the holder's session while held,
/// and both end released with their sessions destroyed; a destroyed session
/// kills the child ("Lock lost"); `-child-exit-code` gives 2 for a failing
/// child; a missing child and `-n` above 1 are refused.
#[test]
fn tern_lock_runs_children_one_at_a_time_and_releases() {
    let mut agent = Agent::start("lockcli", &[]);
    agent.wait_ready();
    let addr = format!("-http-addr={}", agent.addr());
    let base = agent.base();
    let dir = temp_dir("lockcli-out");
    let log = dir.join("log");
    let script = format!(
        "echo start $$ >> {l}; sleep 1; echo end $$ >> {l}",
        l = log.display()
    );
    let spawn = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn(&["lock", &addr, "svc/leader", &script]);
    let b = spawn(&["lock", &addr, "svc/leader", &script]);
    // While one holds it: the key has the holder's session and the flag.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, body)) = http("GET", &format!("{base}/v1/kv/svc/leader/.lock"), b"") {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            if j[0]["Session"].as_str().is_some_and(|s| !s.is_empty()) {
                assert_eq!(j[0]["Flags"].as_u64(), Some(0x2ddc_cbc0_58a5_0c18), "{j}");
                break;
            }
        }
        assert!(std::time::Instant::now() < end, "nobody took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The children never overlapped: start, end, start, end, each pair one pid.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines.iter().map(|l| l.0).collect::<Vec<_>>(),
        ["start", "end", "start", "end"],
        "{text}"
    );
    assert_eq!(lines[0].1, lines[1].1, "{text}");
    assert_eq!(lines[2].1, lines[3].1, "{text}");
    // Released, and the sessions are gone.
    let (_, body) = http("GET", &format!("{base}/v1/kv/svc/leader/.lock"), b"").unwrap();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(j[0]["Session"].is_null(), "{j}");
    let (_, sessions) = http("GET", &format!("{base}/v1/session/list"), b"").unwrap();
    assert_eq!(sessions.trim(), "[]");

    // A child that fails: 0 by default, 2 with -child-exit-code.
    let (code, _, _) = tern(&["lock", &addr, "p2", "exit 3"]);
    assert_eq!(code, 0);
    let (code, _, _) = tern(&["lock", &addr, "-child-exit-code", "p2", "exit 3"]);
    assert_eq!(code, 2);
    // Refusals.
    let (code, _, err) = tern(&["lock", &addr, "p3"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Key prefix and child command must be specified"),
        "{err}"
    );

    // A semaphore (-n 2, Consul's api/semaphore.go layout): three
    // contenders, never more than two children at once, all three run.
    let sem_log = dir.join("sem-log");
    let sem_script = format!(
        "echo start $$ >> {l}; sleep 1; echo end $$ >> {l}",
        l = sem_log.display()
    );
    let contenders: Vec<_> = (0..3)
        .map(|_| spawn(&["lock", &addr, "-n=2", "sem", &sem_script]))
        .collect();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, body)) = http("GET", &format!("{base}/v1/kv/sem/.lock"), b"") {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(j[0]["Flags"].as_u64(), Some(0xe0f6_9a2b_aa41_4de0), "{j}");
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(j[0]["Value"].as_str().unwrap())
                .unwrap();
            let lock: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(lock["Limit"], 2, "{lock}");
            let holders = lock["Holders"].as_object().unwrap().len();
            assert!(holders <= 2, "{lock}");
            if holders > 0 {
                break;
            }
        }
        assert!(std::time::Instant::now() < end, "nobody took a slot");
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in contenders {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&sem_log).unwrap();
    let (mut running, mut most, mut started) = (0i32, 0i32, 0);
    for line in text.lines() {
        if line.starts_with("start") {
            running += 1;
            started += 1;
        } else {
            running -= 1;
        }
        most = most.max(running);
    }
    assert_eq!(started, 3, "{text}");
    assert!(most <= 2, "more than two holders at once: {text}");
    // Released: no holders left, no contender entries.
    let (_, body) = http("GET", &format!("{base}/v1/kv/sem/?recurse"), b"").unwrap();
    let pairs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["sem/.lock"], "{body}");
    // Another limit on the same prefix is refused, as Consul refuses it.
    let (code, _, err) = tern(&["lock", &addr, "-n=3", "sem", "true"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Lock acquisition failed: semaphore limit conflict (lock: 2, local: 3)\n"
    );

    // A lost lock kills the child: destroy the holder's session.
    let held = spawn(&["lock", &addr, "p4", "sleep 60"]);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let session = loop {
        if let Some((200, body)) = http("GET", &format!("{base}/v1/kv/p4/.lock"), b"") {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(s) = j[0]["Session"].as_str() {
                break s.to_string();
            }
        }
        assert!(std::time::Instant::now() < end, "p4 was never locked");
        std::thread::sleep(Duration::from_millis(50));
    };
    let t = std::time::Instant::now();
    let r = http("PUT", &format!("{base}/v1/session/destroy/{session}"), b"");
    assert_eq!(r.map(|r| r.0), Some(200));
    let out = held.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Lock lost, killing child"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the child was killed at once"
    );
}

/// `tern kv put -acquire|-release -session=ID` (Consul's command/kv/put):
/// the lock taken and given up through a real agent, with Consul's lines.
#[test]
fn kv_put_acquires_and_releases_with_a_session() {
    let mut agent = Agent::start("kv-lock", &[]);
    agent.wait_ready();
    let addr = format!("-http-addr={}", agent.addr());
    let base = agent.base();
    let session = |name: &str| -> String {
        let (_, body) = http(
            "PUT",
            &format!("{base}/v1/session/create"),
            format!(r#"{{"Name":"{name}","LockDelay":"0s"}}"#).as_bytes(),
        )
        .unwrap();
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        j["ID"].as_str().unwrap().to_owned()
    };
    let (s1, s2) = (session("one"), session("two"));
    let with = |s: &str| format!("-session={s}");
    let (code, out, err) = tern(&[
        "kv",
        "put",
        &addr,
        "-acquire",
        &with(&s1),
        "app/leader",
        "me",
    ]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Success! Lock acquired on: app/leader\n"),
        "{err}"
    );
    let (_, body) = http("GET", &format!("{base}/v1/kv/app/leader"), b"").unwrap();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j[0]["Session"].as_str(), Some(s1.as_str()));
    let (code, _, err) = tern(&[
        "kv",
        "put",
        &addr,
        "-acquire",
        &with(&s2),
        "app/leader",
        "you",
    ]);
    assert_eq!((code, err.as_str()), (1, "Error! Did not acquire lock\n"));
    let (code, _, err) = tern(&["kv", "put", &addr, "-release", &with(&s2), "app/leader"]);
    assert_eq!((code, err.as_str()), (1, "Error! Did not release lock\n"));
    let (code, out, _) = tern(&["kv", "put", &addr, "-release", &with(&s1), "app/leader"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "Success! Lock released on: app/leader\n")
    );
    let (_, body) = http("GET", &format!("{base}/v1/kv/app/leader"), b"").unwrap();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(j[0]["Session"].is_null(), "{j}");
    let (code, _, err) = tern(&["kv", "put", &addr, "-acquire", "app/leader", "x"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error! Missing -session (required with -acquire and -release)\n"
        )
    );
}

//! `tern agent`'s configuration (flags and Consul-style files) and the client
//! commands against a fake Consul HTTP server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tern::agent::AgentOptions;
use tern::config::{agent_options, http_addr_from, http_addr_from_env, load};

// ---------------------------------------------------------------------------
// Helpers

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// A fresh, empty directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-config-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Options with the random parts (the RNG seed) cleared, for comparing.
fn canonical(o: &AgentOptions) -> String {
    let mut o = o.clone();
    o.core.rng_seed = 0;
    format!("{o:?}")
}

/// The error of `agent_options`, checked to be one line.
fn error_of(a: &[String]) -> String {
    let e = agent_options(a).expect_err("should be refused").to_string();
    assert!(!e.contains('\n'), "one line: {e:?}");
    e
}

const ID: &str = "8f2c1e4a-0b7d-4c3e-9a51-2d6f0e8b7c90";

// ---------------------------------------------------------------------------
// Config files

const SAME_JSON: &str = r#"{
  "datacenter": "east",
  "node_name": "s1",
  "node_id": "8f2c1e4a-0b7d-4c3e-9a51-2d6f0e8b7c90",
  "server": true,
  "bootstrap_expect": 3,
  "data_dir": "/var/lib/tern",
  "bind_addr": "10.0.0.5",
  "client_addr": "0.0.0.0",
  "retry_join": ["10.0.0.6", "10.0.0.7:8411"],
  "retry_interval": "5s",
  "retry_max": 4,
  "start_join": ["[::1]"],
  "retry_join_wan": ["10.1.0.1"],
  "ports": { "http": 8501, "server": 8310, "serf_lan": 8311, "serf_wan": 8312 },
  "performance": { "raft_multiplier": 2, "rpc_hold_timeout": "3s", "leave_drain_time": "500ms" },
  "raft_snapshot_threshold": 50000,
  "raft_trailing_logs": 20000,
  "raft_snapshot_interval": "2m",
  "log_level": "debug"
}"#;

const SAME_HCL: &str = r#"
datacenter = "east"
node_name = "s1"
node_id = "8f2c1e4a-0b7d-4c3e-9a51-2d6f0e8b7c90"
server = true
bootstrap_expect = 3
data_dir = "/var/lib/tern"
bind_addr = "10.0.0.5"
client_addr = "0.0.0.0"
retry_join = ["10.0.0.6", "10.0.0.7:8411"]
retry_interval = "5s"
retry_max = 4
start_join = ["[::1]"]
retry_join_wan = ["10.1.0.1"]
ports {
  http = 8501
  server = 8310
  serf_lan = 8311
  serf_wan = 8312
}
performance {
  raft_multiplier = 2
  rpc_hold_timeout = "3s"
  leave_drain_time = "500ms"
}
raft_snapshot_threshold = 50000
raft_trailing_logs = 20000
raft_snapshot_interval = "2m"
log_level = "debug"
"#;

/// The same settings in JSON and in HCL build the same options, and every
/// key lands where it should.
#[test]
fn json_and_hcl_files_give_the_same_options() {
    let dir = temp_dir("json-hcl");
    let json = write(&dir, "a.json", SAME_JSON);
    let hcl = write(&dir, "a.hcl", SAME_HCL);
    let from_json = load(&args(&format!("-config-file {json}"))).unwrap();
    let from_hcl = load(&args(&format!("-config-file {hcl}"))).unwrap();
    assert_eq!(canonical(&from_json.options), canonical(&from_hcl.options));
    assert_eq!(from_json.log_level, "debug");
    assert_eq!(from_hcl.log_level, "debug");

    let o = from_json.options;
    assert_eq!(o.core.datacenter.0, "east");
    assert_eq!(o.core.node_name.0, "s1");
    assert_eq!(o.core.node_id.to_string(), ID);
    assert_eq!(o.bootstrap_expect, 3);
    assert_eq!(o.data_dir, Some(PathBuf::from("/var/lib/tern")));
    assert_eq!(o.server_addr.to_string(), "10.0.0.5:8310");
    assert_eq!(o.core.address, "10.0.0.5:8310");
    assert_eq!(o.http_addr.to_string(), "0.0.0.0:8501");
    // Join addresses are gossip addresses; a missing port is the pool's own.
    assert_eq!(o.lan.bind.to_string(), "10.0.0.5:8311");
    assert_eq!(o.lan.advertise.to_string(), "10.0.0.5:8311");
    assert_eq!(o.lan.retry_join, ["10.0.0.6:8311", "10.0.0.7:8411"]);
    assert_eq!(o.lan.start_join, ["[::1]:8311"]);
    assert_eq!(o.lan.retry_interval.as_millis(), 5000);
    assert_eq!(o.lan.retry_max, 4);
    let wan = o.wan.as_ref().expect("a server has a WAN pool");
    assert_eq!(wan.bind.to_string(), "10.0.0.5:8312");
    assert_eq!(wan.retry_join, ["10.1.0.1:8312"]);
    assert_eq!(wan.retry_interval.as_millis(), 30_000);
    assert_eq!(wan.retry_max, 0);
    assert_eq!(o.core.election_timeout_min.as_millis(), 2000);
    assert_eq!(o.core.rpc_hold_timeout.as_millis(), 3000);
    assert_eq!(o.core.leave_drain_time.as_millis(), 500);
    assert_eq!(o.core.leader_lease_timeout.as_millis(), 1000);
    assert_eq!(o.core.snapshot_threshold, 50000);
    assert_eq!(o.core.trailing_logs, 20000);
    assert_eq!(o.core.snapshot_interval.as_millis(), 120_000);
    assert!(!o.dev);
}

/// Later files win for scalars; lists append (Consul's merge). A config dir
/// contributes its *.json and *.hcl files in name order and skips others.
#[test]
fn later_files_win_and_config_dir_is_read_in_name_order() {
    let dir = temp_dir("later");
    let base = write(
        &dir,
        "base.json",
        r#"{"server": true, "data_dir": "/d", "node_id": "8f2c1e4a-0b7d-4c3e-9a51-2d6f0e8b7c90",
            "datacenter": "first", "node_name": "n1", "retry_join": ["a"]}"#,
    );
    let over = write(
        &dir,
        "over.hcl",
        "datacenter = \"second\"\nretry_join = [\"b\"]\n",
    );
    let o = agent_options(&args(&format!("-config-file {base} -config-file {over}"))).unwrap();
    assert_eq!(o.core.datacenter.0, "second");
    assert_eq!(o.core.node_name.0, "n1");
    assert_eq!(o.lan.retry_join, ["a:8301", "b:8301"]);

    let conf = dir.join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    write(&conf, "20-dc.hcl", "datacenter = \"twenty\"\n");
    write(
        &conf,
        "10-dc.json",
        r#"{"datacenter": "ten", "node_name": "n2"}"#,
    );
    write(&conf, "30-ignored.txt", "not config");
    let o = agent_options(&args(&format!(
        "-config-file {base} -config-dir {}",
        conf.display()
    )))
    .unwrap();
    assert_eq!(o.core.datacenter.0, "twenty");
    assert_eq!(o.core.node_name.0, "n2");
}

/// Flags win over files, whatever their order on the command line.
#[test]
fn flags_win_over_files() {
    let dir = temp_dir("flags-win");
    let file = write(&dir, "a.json", SAME_JSON);
    let o = agent_options(&args(&format!(
        "-datacenter west -http-port 9000 -config-file {file} -node s9 -bootstrap-expect 5"
    )))
    .unwrap();
    assert_eq!(o.core.datacenter.0, "west");
    assert_eq!(o.http_addr.port(), 9000);
    assert_eq!(o.core.node_name.0, "s9");
    assert_eq!(o.bootstrap_expect, 5);
    // What the flags leave alone still comes from the file.
    assert_eq!(o.server_addr.port(), 8310);
}

/// `-flag value`, `--flag value`, `-flag=value` and `--flag=value` are all
/// the same; a bool flag is turned off only as `-flag=false`.
#[test]
fn single_dash_double_dash_and_equals_forms_agree() {
    let forms = [
        "-server -bootstrap-expect 3 -data-dir /d -node n -node-id ID -retry-join x -retry-join y",
        "--server --bootstrap-expect 3 --data-dir /d --node n --node-id ID --retry-join x --retry-join y",
        "-server=true -bootstrap-expect=3 -data-dir=/d -node=n -node-id=ID -retry-join=x -retry-join=y",
        "--server=true --bootstrap-expect=3 --data-dir=/d --node=n --node-id=ID --retry-join=x --retry-join=y",
    ];
    let built: Vec<String> = forms
        .iter()
        .map(|f| canonical(&agent_options(&args(&f.replace("ID", ID))).unwrap()))
        .collect();
    for b in &built[1..] {
        assert_eq!(b, &built[0]);
    }
    assert!(built[0].contains("server: true"), "{}", built[0]);
    // Without -server the agent is a client agent.
    let client = agent_options(&args(&format!("-server=false -data-dir /d -node-id {ID}")));
    assert!(!client.unwrap().server);
}

/// Consul's gossip defaults (agent/config/default.go: serf_lan 8301,
/// serf_wan 8302, retry_interval 30s, retry_max 0) and flags
/// (agent/config/flags.go: -serf-lan-port, -serf-wan-port, -join,
/// -retry-join, -retry-interval, -retry-max and the -wan twins); -1 on
/// serf_wan turns the WAN pool off.
#[test]
fn gossip_ports_and_joins_have_consuls_defaults_and_flags() {
    let o = agent_options(&args(&format!("-server -data-dir /d -node-id {ID}"))).unwrap();
    assert_eq!(o.lan.bind.to_string(), "0.0.0.0:8301");
    assert_eq!(o.lan.advertise.to_string(), "127.0.0.1:8301");
    assert_eq!(o.wan.as_ref().unwrap().bind.port(), 8302);
    assert_eq!(o.lan.retry_interval.as_millis(), 30_000);
    assert_eq!((o.lan.retry_max, o.lan.start_join.len()), (0, 0));

    let o = agent_options(&args(&format!(
        "-server -data-dir /d -node-id {ID} -bind 127.0.0.2 -serf-lan-port 9301 -serf-wan-port=-1 \
         -join 127.0.0.3 -retry-join host.example -retry-join [fe80::1]:7 -retry-interval 2s -retry-max 3"
    )))
    .unwrap();
    assert_eq!(o.lan.bind.to_string(), "127.0.0.2:9301");
    assert!(o.wan.is_none());
    assert_eq!(o.lan.start_join, ["127.0.0.3:9301"]);
    assert_eq!(o.lan.retry_join, ["host.example:9301", "[fe80::1]:7"]);
    assert_eq!(o.lan.retry_interval.as_millis(), 2000);
    assert_eq!(o.lan.retry_max, 3);

    let o = agent_options(&args(&format!(
        "-server -data-dir /d -node-id {ID} -serf-wan-port 9302 -join-wan 10.0.0.1 \
         -retry-join-wan 10.0.0.2:1 -retry-interval-wan 1m -retry-max-wan 7"
    )))
    .unwrap();
    let wan = o.wan.unwrap();
    assert_eq!(wan.start_join, ["10.0.0.1:9302"]);
    assert_eq!(wan.retry_join, ["10.0.0.2:1"]);
    assert_eq!((wan.retry_interval.as_millis(), wan.retry_max), (60_000, 7));
}

/// Bad gossip settings are one line naming the key or flag.
#[test]
fn bad_gossip_settings_name_the_key() {
    let ok = format!("-server -data-dir /d -node-id {ID}");
    let cases = [
        (
            "-serf-lan-port 70000",
            "-serf-lan-port: must be a port number (1 to 65535), got \"70000\"",
        ),
        (
            "-serf-lan-port=-1",
            "-serf-lan-port: must be a port number (1 to 65535), got \"-1\"",
        ),
        (
            "-serf-lan-port lan",
            "-serf-lan-port: must be a port number",
        ),
        (
            "-serf-wan-port -2",
            "-serf-wan-port: must be a port number (1 to 65535) or -1 to disable, got \"-2\"",
        ),
        (
            "-retry-interval soon",
            "-retry-interval: must be a duration such as",
        ),
        (
            "-retry-interval 0s",
            "-retry-interval: must be greater than zero",
        ),
        (
            "-retry-max -1",
            "-retry-max: must be a whole number of attempts",
        ),
        (
            "-retry-max-wan 4294967296",
            "-retry-max-wan: must be a whole number of attempts",
        ),
        (
            "-serf-wan-port=-1 -retry-join-wan x",
            "retry_join_wan: needs the WAN pool",
        ),
        (
            "-serf-lan-port 9000 -serf-wan-port 9000",
            "ports.serf_wan: 9000 is also ports.serf_lan",
        ),
    ];
    for (flags, want) in cases {
        let e = error_of(&args(&format!("{ok} {flags}")));
        assert!(e.starts_with(want), "{flags}: got {e:?}, want {want:?}");
    }
    let dir = temp_dir("bad-gossip");
    let f = write(&dir, "p.json", r#"{"ports": {"serf_lan": "x"}}"#);
    let e = error_of(&args(&format!("{ok} -config-file {f}")));
    assert!(
        e.starts_with("ports.serf_lan: must be a port number"),
        "{e}"
    );
}

/// HCL delivers a block written twice as an array; both halves count.
#[test]
fn an_hcl_block_written_twice_is_merged() {
    let dir = temp_dir("twice");
    let file = write(
        &dir,
        "a.hcl",
        r#"
server = true
data_dir = "/d"
ports {
  http = 8601
}
ports {
  server = 8401
}
performance {
  raft_multiplier = 1
}
performance {
  rpc_hold_timeout = "2s"
}
"#,
    );
    let o = agent_options(&args(&format!("-config-file {file} -node-id {ID}"))).unwrap();
    assert_eq!(o.http_addr.port(), 8601);
    assert_eq!(o.server_addr.port(), 8401);
    assert_eq!(o.core.election_timeout_min.as_millis(), 1000);
    assert_eq!(o.core.rpc_hold_timeout.as_millis(), 2000);
}

/// Every bad value is refused with exactly one line that names the key (or
/// the flag) and shows what was given.
#[test]
fn each_bad_value_gives_one_line_naming_the_key() {
    let dir = temp_dir("bad");
    let ok = format!("-server -data-dir /d -node-id {ID}");
    let file = |name: &str, text: &str| write(&dir, name, text);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            args(&format!("{ok} -config-file {}", file("p.json", r#"{"ports": {"http": "x"}}"#))),
            "ports.http: must be a port number (0 to 65535), got \"x\" (in ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("b.hcl", "bootstrap_expect = \"three\"\n"))),
            "bootstrap_expect: must be a whole number, got \"three\" (in ",
        ),
        (
            args(&format!("{ok} -bootstrap-expect three")),
            "-bootstrap-expect: must be a whole number, got \"three\"",
        ),
        (
            args(&format!("{ok} -config-file {}", file("s.json", r#"{"raft_snapshot_threshold": 0}"#))),
            "raft_snapshot_threshold: must be greater than zero",
        ),
        (
            args(&format!("{ok} -config-file {}", file("u.json", r#"{"colour": "blue"}"#))),
            "invalid config key colour (in ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("u2.hcl", "ports {\n  dnss = 53\n}\n"))),
            "invalid config key ports.dnss (in ",
        ),
        (
            args(&format!("-server -node-id {ID}")),
            "data_dir: must be set unless -dev",
        ),
        (
            args(&format!(
                "{ok} -config-file {}",
                file("d.json", r#"{"performance": {"rpc_hold_timeout": "7 parsecs"}}"#)
            )),
            "performance.rpc_hold_timeout: must be a duration such as \"7s\" or \"500ms\", got \"7 parsecs\" (in ",
        ),
        (
            args("-bootstrap-expect 3 -data-dir /d"),
            "bootstrap_expect: requires server = true (-server)",
        ),
        (
            args(&format!("{ok} -config-file {}", file("m.json", r#"{"performance": {"raft_multiplier": 11}}"#))),
            "performance.raft_multiplier: must be between 1 and 10, got 11 (in ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("z.json", r#"{"performance": {"rpc_hold_timeout": "0s"}}"#))),
            "performance.rpc_hold_timeout: must be greater than zero",
        ),
        (args(&format!("{ok} -datacenter d.c")), "datacenter: \"d.c\" must be non-empty"),
        (args(&format!("{ok} -http-port 70000")), "-http-port: must be a port number"),
        (args(&format!("{ok} -bind nowhere")), "-bind: must be an IP address, got \"nowhere\""),
        (args(&format!("{ok} -log-level loud")), "-log-level: must be one of"),
        (args("-server -data-dir /d -node-id nope"), "-node-id: must be a UUID, got \"nope\""),
        (args(&format!("{ok} -foo")), "flag provided but not defined: -foo"),
        (args(&format!("{ok} --foo=1")), "flag provided but not defined: -foo"),
        (args(&format!("{ok} -retry-join")), "flag needs an argument: -retry-join"),
        (args(&format!("{ok} -log-rotate-max-files=-2")), "-log-rotate-max-files: must be a whole number of files"),
        (args(&format!("{ok} -log-rotate-duration=0s")), "-log-rotate-duration: must be greater than zero"),
        (args(&format!("{ok} -log-rotate-bytes=lots")), "-log-rotate-bytes: must be a whole number"),
        (args(&format!("{ok} -log-json=maybe")), "-log-json: must be true or false"),
        (args(&format!("{ok} stray")), "unexpected argument \"stray\""),
        (
            args(&format!("{ok} -config-file {}", file("bad.json", "{ not json"))),
            "invalid JSON: ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("bad.hcl", "ports {{{ \n"))),
            "invalid HCL at line 1, column 8: invalid block body",
        ),
        (args(&format!("{ok} -config-file /no/such.json")), "-config-file: cannot read \"/no/such.json\": "),
        (args(&format!("{ok} -config-file {}", file("c.yaml", "x: 1"))), "-config-file: \""),
        (args(&format!("{ok} -config-dir /no/such/dir")), "-config-dir: cannot read \"/no/such/dir\": "),
        (
            args(&format!("{ok} -config-file {}", file("a1.json", r#"{"autopilot": {"last_contact_threshold": "soon"}}"#))),
            "autopilot.last_contact_threshold: must be a duration such as \"7s\" or \"500ms\", got \"soon\" (in ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("a2.hcl", "autopilot {\n  max_trailing_logs = -1\n}\n"))),
            "autopilot.max_trailing_logs: must be a whole number, got -1 (in ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("a3.json", r#"{"autopilot": {"cleanup_dead_servers": "maybe"}}"#))),
            "autopilot.cleanup_dead_servers: ",
        ),
        (
            args(&format!("{ok} -config-file {}", file("a4.json", r#"{"autopilot": {"last_contact_threshold": "0s"}}"#))),
            "autopilot.last_contact_threshold: must be greater than zero",
        ),
        (
            args(&format!("{ok} -config-file {}", file("a5.json", r#"{"autopilot": {"min_quorum": 4294967296}}"#))),
            "autopilot.min_quorum: must be at most 4294967295",
        ),
        (
            args(&format!("{ok} -config-file {}", file("a6.hcl", "autopilot {\n  bogus = 1\n}\n"))),
            "invalid config key autopilot.bogus (in ",
        ),
    ];
    for (a, want) in cases {
        let e = error_of(&a);
        assert!(
            e.starts_with(want),
            "{a:?}\n  got  {e:?}\n  want {want:?}..."
        );
    }
}

/// Consul's `autopilot { ... }` stanza (agent/config/config.go) reaches the
/// core's configuration, every key of it.
#[test]
fn the_autopilot_stanza_sets_every_key() {
    let dir = temp_dir("autopilot");
    let hcl = write(
        &dir,
        "a.hcl",
        r#"
autopilot {
  cleanup_dead_servers = false
  last_contact_threshold = "1s"
  max_trailing_logs = 1000
  min_quorum = 3
  server_stabilization_time = "30s"
  redundancy_zone_tag = "zone"
  disable_upgrade_migration = true
  upgrade_version_tag = "build"
}
"#,
    );
    let o = agent_options(&args(&format!("-dev -config-file {hcl}"))).unwrap();
    let a = &o.core.autopilot;
    assert!(!a.cleanup_dead_servers);
    assert_eq!(a.last_contact_threshold, tern_core::Duration::from_secs(1));
    assert_eq!(a.max_trailing_logs, 1000);
    assert_eq!(a.min_quorum, 3);
    assert_eq!(
        a.server_stabilization_time,
        tern_core::Duration::from_secs(30)
    );
    assert_eq!(a.redundancy_zone_tag, "zone");
    assert!(a.disable_upgrade_migration);
    assert_eq!(a.upgrade_version_tag, "build");
    // Without the stanza: Consul's defaults.
    let o = agent_options(&args("-dev")).unwrap();
    assert_eq!(
        o.core.autopilot,
        tern_core::autopilot::AutopilotConfig::default()
    );
}

/// `-dev`: an in-memory server on loopback that bootstraps alone and elects
/// itself within a fraction of a second; data_dir is not needed.
#[test]
fn dev_defaults() {
    let c = load(&args("-dev")).unwrap();
    let o = c.options;
    assert!(o.dev);
    assert_eq!(o.data_dir, None);
    assert_eq!(o.bootstrap_expect, 1);
    assert_eq!(o.http_addr.to_string(), "127.0.0.1:8500");
    assert_eq!(o.server_addr.to_string(), "127.0.0.1:8300");
    assert_eq!(o.core.address, "127.0.0.1:8300");
    assert_eq!(o.core.datacenter.0, "dc1");
    assert!(!o.core.node_name.0.is_empty());
    assert_ne!(o.core.node_id.0, 0);
    assert_eq!(o.core.election_timeout_min.as_millis(), 100);
    assert_eq!(o.core.election_timeout_max.as_millis(), 200);
    assert_eq!(o.core.heartbeat_interval.as_millis(), 10);
    assert_eq!(o.core.rpc_hold_timeout.as_millis(), 7000);
    assert_eq!(o.core.leave_drain_time.as_millis(), 5000);
    assert_eq!(c.log_level, "info");
    // A random id each time in -dev.
    let again = agent_options(&args("-dev")).unwrap();
    assert_ne!(again.core.node_id, o.core.node_id);
    // Flags still override the dev defaults.
    let o = agent_options(&args("--dev -http-port 0 -node dev1")).unwrap();
    assert_eq!(o.http_addr.port(), 0);
    assert_eq!(o.core.node_name.0, "dev1");
}

/// Consul's timings at raft_multiplier 1 are 1000 ms; the multiplier scales
/// them. Without one Tern uses Consul's default of 5.
#[test]
fn raft_multiplier_scales_the_timings() {
    let timings = |extra: &str| {
        let o = agent_options(&args(&format!(
            "-server -data-dir /d -node-id {ID} {extra}"
        )))
        .unwrap();
        (
            o.core.election_timeout_min.as_millis(),
            o.core.election_timeout_max.as_millis(),
            o.core.heartbeat_interval.as_millis(),
        )
    };
    assert_eq!(timings(""), (5000, 10000, 500));
    assert_eq!(
        timings("-hcl performance{raft_multiplier=1}"),
        (1000, 2000, 100)
    );
    assert_eq!(
        timings("-hcl performance{raft_multiplier=10}"),
        (10000, 20000, 1000)
    );
    // An explicit multiplier also applies in -dev.
    let o = agent_options(&args("-dev -hcl performance{raft_multiplier=1}")).unwrap();
    assert_eq!(o.core.election_timeout_min.as_millis(), 1000);
}

/// Outside -dev the node id is made once and kept in `<data_dir>/node-id`.
#[test]
fn node_id_is_persisted_in_the_data_dir() {
    let dir = temp_dir("node-id").join("data");
    let a = args(&format!("-server -data-dir {}", dir.display()));
    let first = agent_options(&a).unwrap().core.node_id;
    let stored = std::fs::read_to_string(dir.join("node-id")).unwrap();
    assert_eq!(stored, first.to_string());
    assert_eq!(agent_options(&a).unwrap().core.node_id, first);
    // A configured id wins over the file.
    let o = agent_options(&args(&format!("{} -node-id {ID}", a.join(" ")))).unwrap();
    assert_eq!(o.core.node_id.to_string(), ID);
    // A damaged file is reported, not replaced.
    std::fs::write(dir.join("node-id"), "garbage").unwrap();
    let e = error_of(&a);
    assert!(e.starts_with("node_id: ") && e.contains("garbage"), "{e}");
}

/// Bound to 0.0.0.0 a server advertises 127.0.0.1 unless told otherwise.
#[test]
fn a_wildcard_bind_advertises_loopback_unless_told() {
    let base = format!("-server -data-dir /d -node-id {ID}");
    let o = agent_options(&args(&base)).unwrap();
    assert_eq!(o.server_addr.to_string(), "0.0.0.0:8300");
    assert_eq!(o.core.address, "127.0.0.1:8300");
    let o = agent_options(&args(&format!("{base} -advertise 10.1.2.3"))).unwrap();
    assert_eq!(o.core.address, "10.1.2.3:8300");
    let o = agent_options(&args(&format!("{base} -bind 10.1.2.4 -server-port 8400"))).unwrap();
    assert_eq!(o.core.address, "10.1.2.4:8400");
}

/// The environment is process-wide and tests run in parallel threads.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// `-http-addr`, then TERN_HTTP_ADDR, then CONSUL_HTTP_ADDR, then the default.
#[test]
fn http_addr_precedence() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let both = &[
        ("TERN_HTTP_ADDR", "10.0.0.1:1"),
        ("CONSUL_HTTP_ADDR", "http://10.0.0.2:2"),
    ];
    assert_eq!(http_addr_from(Some("http://f:3/"), env(both)), "f:3");
    assert_eq!(http_addr_from(None, env(both)), "10.0.0.1:1");
    assert_eq!(http_addr_from(None, env(&both[1..])), "10.0.0.2:2");
    assert_eq!(http_addr_from(None, env(&[])), "127.0.0.1:8500");
    assert_eq!(
        http_addr_from(None, env(&[("TERN_HTTP_ADDR", "")])),
        "127.0.0.1:8500"
    );

    // The same through the real environment.
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let saved: Vec<_> = ["TERN_HTTP_ADDR", "CONSUL_HTTP_ADDR"]
        .iter()
        .map(|k| (*k, std::env::var(k).ok()))
        .collect();
    std::env::remove_var("TERN_HTTP_ADDR");
    std::env::set_var("CONSUL_HTTP_ADDR", "http://10.9.9.9:8500");
    assert_eq!(http_addr_from_env(None), "10.9.9.9:8500");
    std::env::set_var("TERN_HTTP_ADDR", "10.8.8.8:8500");
    assert_eq!(http_addr_from_env(None), "10.8.8.8:8500");
    assert_eq!(http_addr_from_env(Some("1.2.3.4:5")), "1.2.3.4:5");
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
}

// ---------------------------------------------------------------------------
// A fake Consul agent: canned answers by "METHOD /path?query".

struct Fake {
    addr: String,
    /// "METHOD /path?query body" of every request, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

fn fake(routes: &[(&str, u16, &str)]) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let routes: Vec<(String, u16, String)> = routes
        .iter()
        .map(|(r, s, b)| (r.to_string(), *s, b.to_string()))
        .collect();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut parts = request_line.split_whitespace();
            let route = format!("{} {}", parts.next().unwrap(), parts.next().unwrap());
            log.lock().unwrap().push(
                format!("{route} {}", String::from_utf8_lossy(&body))
                    .trim()
                    .to_string(),
            );
            let (status, answer) = routes
                .iter()
                .find(|(r, _, _)| *r == route)
                .map(|(_, s, b)| (*s, b.clone()))
                .unwrap_or((404, String::new()));
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nX-Consul-Index: 1\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    Fake { addr, seen }
}

impl Fake {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Run a CLI command against `addr` with `stdin`; (exit code, stdout, stderr).
fn cli_in(command: &str, addr: &str, stdin: &str) -> (i32, String, String) {
    let mut a = args(command);
    a.push(format!("-http-addr={addr}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tern::cli::run_with_input(&a, &mut stdin.as_bytes(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn cli(command: &str, addr: &str) -> (i32, String, String) {
    cli_in(command, addr, "")
}

/// Exit 1 with exactly one line on stderr starting with `want`, nothing on stdout.
fn assert_one_error_line((code, out, err): (i32, String, String), want: &str) {
    assert_eq!(code, 1, "stderr: {err}");
    assert_eq!(out, "");
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err:?}");
    assert!(err.starts_with(want), "got {err:?}, want {want:?}...");
}

// "test" and "second" in base64.
const PAIR: &str = r#"[{"LockIndex":0,"Key":"app/one","Flags":42,"Value":"dGVzdA==","CreateIndex":7,"ModifyIndex":9}]"#;
const PAIRS: &str = r#"[{"Key":"app/one","Value":"dGVzdA==","Flags":0,"CreateIndex":7,"ModifyIndex":9,"LockIndex":0},
 {"Key":"app/two","Value":"c2Vjb25k","Flags":0,"CreateIndex":8,"ModifyIndex":8,"LockIndex":0},
 {"Key":"app/empty","Value":null,"Flags":0,"CreateIndex":10,"ModifyIndex":10,"LockIndex":0}]"#;

// ---------------------------------------------------------------------------
// kv

#[test]
fn kv_get_prints_the_raw_value() {
    let f = fake(&[("GET /v1/kv/app/one", 200, PAIR)]);
    assert_eq!(
        cli("kv get app/one", &f.addr),
        (0, "test\n".into(), String::new())
    );
}

#[test]
fn kv_get_of_a_missing_key_says_so_and_exits_1() {
    let f = fake(&[]);
    assert_one_error_line(
        cli("kv get nope", &f.addr),
        "Error! No key exists at: nope\n",
    );
}

#[test]
fn kv_get_recurse_prints_key_value_lines() {
    let f = fake(&[("GET /v1/kv/app/?recurse", 200, PAIRS)]);
    let (code, out, _) = cli("kv get -recurse app/", &f.addr);
    assert_eq!(code, 0);
    assert_eq!(out, "app/one:test\napp/two:second\napp/empty:\n");
    // Nothing under the prefix: no output, success.
    let (code, out, err) = cli("kv get app/zzz --recurse", &f.addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn kv_get_keys_lists_keys_up_to_the_separator() {
    let f = fake(&[
        (
            "GET /v1/kv/app?keys&separator=%2F",
            200,
            r#"["app/","apple"]"#,
        ),
        ("GET /v1/kv/app?keys&separator=-", 200, r#"["app-"]"#),
    ]);
    assert_eq!(cli("kv get -keys app", &f.addr).1, "app/\napple\n");
    assert_eq!(cli("kv get -keys -separator=- app", &f.addr).1, "app-\n");
}

#[test]
fn kv_get_detailed_prints_every_field() {
    let f = fake(&[("GET /v1/kv/app/one", 200, PAIR)]);
    let (code, out, _) = cli("kv get -detailed app/one", &f.addr);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "CreateIndex      7\nFlags            42\nKey              app/one\nLockIndex        0\n\
         ModifyIndex      9\nSession          -\nValue            test\n"
    );
}

#[test]
fn kv_get_reports_an_agent_error_on_one_line() {
    let f = fake(&[("GET /v1/kv/k", 500, "No cluster leader\n")]);
    assert_one_error_line(
        cli("kv get k", &f.addr),
        "Error querying Consul agent: Unexpected response code: 500 (No cluster leader)\n",
    );
}

#[test]
fn kv_put_writes_the_value_and_flags() {
    let f = fake(&[
        ("PUT /v1/kv/app/one", 200, "true"),
        ("PUT /v1/kv/app/one?flags=42", 200, "true"),
    ]);
    assert_eq!(
        cli("kv put app/one hello", &f.addr),
        (
            0,
            "Success! Data written to: app/one\n".into(),
            String::new()
        )
    );
    assert_eq!(cli("kv put -flags=42 app/one x", &f.addr).0, 0);
    assert_eq!(
        f.seen(),
        ["PUT /v1/kv/app/one hello", "PUT /v1/kv/app/one?flags=42 x"]
    );
}

#[test]
fn kv_put_reads_stdin_and_files() {
    let f = fake(&[("PUT /v1/kv/k", 200, "true")]);
    assert_eq!(cli_in("kv put k -", &f.addr, "from stdin").0, 0);
    let dir = temp_dir("put-file");
    let file = write(&dir, "v.txt", "from a file");
    assert_eq!(cli(&format!("kv put k @{file}"), &f.addr).0, 0);
    assert_eq!(
        f.seen(),
        ["PUT /v1/kv/k from stdin", "PUT /v1/kv/k from a file"]
    );
    assert_one_error_line(
        cli("kv put k @/no/such/file", &f.addr),
        "Error! Failed to read file /no/such/file: ",
    );
}

#[test]
fn kv_put_cas_reports_a_lost_race() {
    let f = fake(&[
        ("PUT /v1/kv/k?cas=5", 200, "false"),
        ("PUT /v1/kv/k?cas=6", 200, "true"),
    ]);
    assert_one_error_line(
        cli("kv put -cas -modify-index=5 k v", &f.addr),
        "Error! Did not write to k: CAS failed\n",
    );
    assert_eq!(cli("kv put -cas -modify-index 6 k v", &f.addr).0, 0);
}

#[test]
fn kv_put_reports_an_agent_error_on_one_line() {
    let f = fake(&[("PUT /v1/kv/k", 413, "Value exceeds 524288 byte limit\nmore")]);
    assert_one_error_line(
        cli("kv put k v", &f.addr),
        "Error! Failed writing data: Unexpected response code: 413 (Value exceeds 524288 byte limit more)\n",
    );
}

#[test]
fn kv_delete_deletes_a_key_or_a_prefix() {
    let f = fake(&[
        ("DELETE /v1/kv/k", 200, "true"),
        ("DELETE /v1/kv/app/?recurse", 200, "true"),
        ("DELETE /v1/kv/k?cas=3", 200, "false"),
    ]);
    assert_eq!(
        cli("kv delete k", &f.addr),
        (0, "Success! Deleted key: k\n".into(), String::new())
    );
    assert_eq!(
        cli("kv delete -recurse app/", &f.addr),
        (
            0,
            "Success! Deleted keys with prefix: app/\n".into(),
            String::new()
        )
    );
    assert_one_error_line(
        cli("kv delete -cas -modify-index 3 k", &f.addr),
        "Error! Did not delete key k: CAS failed\n",
    );
    assert_one_error_line(
        cli("kv delete -cas -recurse k", &f.addr),
        "Cannot specify both -cas and -recurse!\n",
    );
    assert_one_error_line(cli("kv delete", &f.addr), "Error! Missing KEY argument\n");
}

// ---------------------------------------------------------------------------
// operator raft, members, leave

const RAFT: &str = r#"{"Servers":[
 {"ID":"11111111-1111-1111-1111-111111111111","Node":"alpha","Address":"127.0.0.1:8300","Leader":true,"ProtocolVersion":"3","Voter":true},
 {"ID":"22222222-2222-2222-2222-222222222222","Node":"b","Address":"127.0.0.2:8300","Leader":false,"ProtocolVersion":"3","Voter":false}
],"Index":0}"#;

#[test]
fn list_peers_prints_an_aligned_table() {
    let f = fake(&[("GET /v1/operator/raft/configuration", 200, RAFT)]);
    let (code, out, err) = cli("operator raft list-peers", &f.addr);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "Node   ID                                    Address         State     Voter  RaftProtocol\n\
         alpha  11111111-1111-1111-1111-111111111111  127.0.0.1:8300  leader    true   3\n\
         b      22222222-2222-2222-2222-222222222222  127.0.0.2:8300  follower  false  3\n"
    );
    let f = fake(&[("GET /v1/operator/raft/configuration?stale", 200, RAFT)]);
    assert_eq!(cli("operator raft list-peers -stale", &f.addr).0, 0);
}

#[test]
fn list_peers_reports_errors_on_one_line() {
    let f = fake(&[(
        "GET /v1/operator/raft/configuration",
        500,
        "No cluster leader",
    )]);
    assert_one_error_line(
        cli("operator raft list-peers", &f.addr),
        "Error getting peers: Unexpected response code: 500 (No cluster leader)\n",
    );
}

#[test]
fn remove_peer_by_id_or_address() {
    let f = fake(&[
        ("DELETE /v1/operator/raft/peer?id=abc", 200, ""),
        (
            "DELETE /v1/operator/raft/peer?address=127.0.0.2%3A8300",
            200,
            "",
        ),
    ]);
    assert_eq!(
        cli("operator raft remove-peer -id abc", &f.addr),
        (0, "Removed peer with id \"abc\"\n".into(), String::new())
    );
    assert_eq!(
        cli(
            "operator raft remove-peer --address=127.0.0.2:8300",
            &f.addr
        )
        .1,
        "Removed peer with address \"127.0.0.2:8300\"\n"
    );
    assert_one_error_line(
        cli("operator raft remove-peer", &f.addr),
        "Error removing peer: an address or id is required for the peer to remove\n",
    );
    assert_one_error_line(
        cli("operator raft remove-peer -id zzz", &f.addr),
        "Error removing peer: Unexpected response code: 404 ()\n",
    );
}

/// Two servers (one failed) and a client, in the agent's order (by name).
const MEMBERS: &str = r#"[
 {"Name":"c1","Addr":"10.0.0.9","Port":8301,"Status":1,
  "Tags":{"role":"node","dc":"east","build":"1.17.0:abc","vsn":"2","id":"c"}},
 {"Name":"s1","Addr":"10.0.0.1","Port":8301,"Status":1,
  "Tags":{"role":"consul","dc":"east","build":"1.17.0:abc","vsn":"2","port":"8300"}},
 {"Name":"s2","Addr":"::1","Port":8301,"Status":4,
  "Tags":{"role":"consul","dc":"east","build":"1.17.0:abc","vsn":"2","port":"8300"}}]"#;

/// Consul's command/members/members.go: servers first, then by name; the
/// build cut at ':'; a client's segment is `<default>`, a server's `<all>`;
/// an IPv6 gossip address in brackets.
#[test]
fn members_prints_consuls_columns_servers_first() {
    let f = fake(&[("GET /v1/agent/members?segment=_all", 200, MEMBERS)]);
    let (code, out, err) = cli("members", &f.addr);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "Node  Address        Status  Type    Build   Protocol  DC    Partition  Segment\n\
         s1    10.0.0.1:8301  alive   server  1.17.0  2         east  default    <all>\n\
         s2    [::1]:8301     failed  server  1.17.0  2         east  default    <all>\n\
         c1    10.0.0.9:8301  alive   client  1.17.0  2         east  default    <default>\n"
    );
}

/// Consul's members.go: `-status` is a regexp over serf's status names; no
/// match exits 2 with no output; a bad regexp is one error line.
#[test]
fn members_status_filters_and_no_match_exits_2() {
    let f = fake(&[("GET /v1/agent/members?segment=_all", 200, MEMBERS)]);
    let (code, out, _) = cli("members -status=failed", &f.addr);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("s2 "), "{out}");
    let (code, out, _) = cli("members -status=(left|leaving)", &f.addr);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_one_error_line(
        cli("members -status=(", &f.addr),
        "Failed to compile status regexp: ",
    );
}

/// Consul's members.go `detailedOutput`: every tag sorted as k=v.
#[test]
fn members_detailed_lists_every_tag_and_wan_asks_for_the_wan_pool() {
    let f = fake(&[("GET /v1/agent/members?segment=_all", 200, MEMBERS)]);
    let (code, out, _) = cli("members -detailed", &f.addr);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().next().unwrap(),
        "Node  Address        Status  Tags"
    );
    assert_eq!(
        out.lines().nth(1).unwrap(),
        "s1    10.0.0.1:8301  alive   build=1.17.0:abc,dc=east,port=8300,role=consul,vsn=2"
    );
    let f = fake(&[("GET /v1/agent/members?wan=1", 200, "[]")]);
    assert_eq!(cli("members -wan", &f.addr).0, 2);
    assert_eq!(f.seen(), ["GET /v1/agent/members?wan=1"]);
}

/// Consul's command/join/join.go: one PUT per address, a count of the
/// successes, an error line per failure, exit 1 only if none joined.
#[test]
fn join_contacts_each_address_and_counts_the_successes() {
    let f = fake(&[
        ("PUT /v1/agent/join/10.0.0.1", 200, ""),
        (
            "PUT /v1/agent/join/10.0.0.2%3A8301",
            500,
            "Failed to join 10.0.0.2:8301: refused",
        ),
        ("PUT /v1/agent/join/10.0.0.3%3A8302?wan=1", 200, ""),
    ]);
    let (code, out, err) = cli("join 10.0.0.1 10.0.0.2:8301", &f.addr);
    assert_eq!(code, 0);
    assert_eq!(out, "Successfully joined cluster by contacting 1 nodes.\n");
    assert_eq!(
        err,
        "Error joining address '10.0.0.2:8301': Unexpected response code: 500 (Failed to join 10.0.0.2:8301: refused)\n"
    );
    assert_eq!(cli("join -wan 10.0.0.3:8302", &f.addr).0, 0);
    let (code, _, err) = cli("join 10.0.0.2:8301", &f.addr);
    assert_eq!(code, 1);
    assert!(err.ends_with("Failed to join any nodes.\n"), "{err}");
    let (code, out, err) = cli("join", &f.addr);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("At least one address to join must be specified.\n"));
}

/// Consul's command/forceleave/forceleave.go: one node name; nothing printed
/// on success; `-prune` and `-wan` become query flags.
#[test]
fn force_leave_takes_one_name_and_passes_prune_and_wan() {
    let f = fake(&[
        ("PUT /v1/agent/force-leave/s2", 200, ""),
        ("PUT /v1/agent/force-leave/s2.east?prune=1&wan=1", 200, ""),
        (
            "PUT /v1/agent/force-leave/nobody",
            500,
            "agent: No node found with name 'nobody'",
        ),
    ]);
    assert_eq!(
        cli("force-leave s2", &f.addr),
        (0, String::new(), String::new())
    );
    assert_eq!(cli("force-leave -prune -wan s2.east", &f.addr).0, 0);
    assert_one_error_line(
        cli("force-leave nobody", &f.addr),
        "Error force leaving: Unexpected response code: 500 (agent: No node found with name 'nobody')\n",
    );
    let (code, _, err) = cli("force-leave a b", &f.addr);
    assert_eq!(code, 1);
    assert!(err.starts_with("A single node name must be specified to force leave.\n"));
}

#[test]
fn leave_asks_the_agent_to_leave() {
    let f = fake(&[("PUT /v1/agent/leave", 200, "")]);
    assert_eq!(
        cli("leave", &f.addr),
        (0, "Graceful leave complete\n".into(), String::new())
    );
    assert_eq!(f.seen(), ["PUT /v1/agent/leave"]);
    let f = fake(&[("PUT /v1/agent/leave", 500, "oops")]);
    assert_one_error_line(
        cli("leave", &f.addr),
        "Error leaving: Unexpected response code: 500 (oops)\n",
    );
}

// ---------------------------------------------------------------------------
// Usage errors and an unreachable agent

/// Consul's commands parse flags with Go's `flag` package: an unknown flag
/// is its error line, then the command's help (mitchellh/cli), exit 1.
#[test]
fn an_unknown_flag_prints_the_error_and_the_commands_help() {
    let f = fake(&[]);
    let (code, out, err) = cli("kv get -bogus k", &f.addr);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with("flag provided but not defined: -bogus\n\nUsage: tern kv get [options]"),
        "{err}"
    );
    let (code, _, err) = cli("operator raft list-peers -id=x", &f.addr);
    assert_eq!(code, 1);
    assert!(
        err.contains("\nUsage: tern operator raft list-peers"),
        "{err}"
    );
    assert!(f.seen().is_empty(), "no request for a usage error");
}

#[test]
fn usage_errors_are_one_line_and_exit_1() {
    let f = fake(&[]);
    assert_one_error_line(cli("kv get", &f.addr), "Error! Missing KEY argument\n");
    assert_one_error_line(
        cli("kv get a b", &f.addr),
        "Too many arguments (expected 1, got 2)\n",
    );
    assert_one_error_line(
        cli("kv put -flags=x k v", &f.addr),
        "-flags: must be a whole number, got \"x\"\n",
    );
    assert_one_error_line(
        cli("members extra", &f.addr),
        "unexpected argument \"extra\"\n",
    );
    assert!(f.seen().is_empty(), "no request for a usage error");
    // -h prints the command's usage on stdout and succeeds.
    let (code, out, _) = cli("kv put -h", &f.addr);
    assert_eq!(code, 0);
    assert!(out.starts_with("Usage: tern kv put"));
    // An unknown command: the command list on stderr, mitchellh/cli's 127.
    let (code, out, err) = cli("frobnicate", &f.addr);
    assert_eq!((code, out.as_str()), (127, ""));
    assert!(err.starts_with("Usage: tern [--version] [--help] <command> [<args>]"));
}

#[test]
fn an_unreachable_agent_is_one_error_line() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    assert_one_error_line(
        cli("kv get k", &addr),
        &format!("Error querying Consul agent: Get \"http://{addr}/v1/kv/k\": "),
    );
    assert_one_error_line(cli("leave", &addr), "Error leaving: Put \"http://");
    // HTTPS is spoken now (tests/tls.rs); an unreachable one is one line
    // too, and a scheme that is neither is refused by name.
    assert_one_error_line(
        cli("kv get k", &format!("https://{addr}")),
        &format!("Error querying Consul agent: Get \"https://{addr}/v1/kv/k\": "),
    );
    assert_one_error_line(
        cli("kv get k", "ftp://127.0.0.1:8501"),
        "-http-addr: unknown scheme \"ftp\" (http:// or https://)",
    );
}

// ---------------------------------------------------------------------------
// operator autopilot

/// Consul's `operator autopilot get-config` output, line for line
/// (command/operator/autopilot/get/operator_autopilot_get.go).
#[test]
fn autopilot_get_config_prints_consuls_lines() {
    let f = fake(&[(
        "GET /v1/operator/autopilot/configuration",
        200,
        r#"{"CleanupDeadServers":true,"LastContactThreshold":"200ms","MaxTrailingLogs":250,
            "MinQuorum":0,"ServerStabilizationTime":"10s","RedundancyZoneTag":"",
            "DisableUpgradeMigration":false,"UpgradeVersionTag":"","CreateIndex":0,"ModifyIndex":0}"#,
    )]);
    let (code, out, err) = cli("operator autopilot get-config", &f.addr);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "CleanupDeadServers = true\nLastContactThreshold = 200ms\nMaxTrailingLogs = 250\n\
         MinQuorum = 0\nServerStabilizationTime = 10s\nRedundancyZoneTag = \"\"\n\
         DisableUpgradeMigration = false\nUpgradeVersionTag = \"\"\n"
    );
    let f = fake(&[(
        "GET /v1/operator/autopilot/configuration",
        500,
        "No cluster leader",
    )]);
    assert_one_error_line(
        cli("operator autopilot get-config", &f.addr),
        "Error querying Autopilot configuration: Unexpected response code: 500 (No cluster leader)",
    );
}

#[test]
fn autopilot_state_prints_pretty_or_json_and_refuses_other_formats() {
    let body = r#"{"Healthy":false,"FailureTolerance":0,"OptimisticFailureTolerance":1,"Servers":{},"Leader":"x","Voters":["x"]}"#;
    let f = fake(&[("GET /v1/operator/autopilot/state", 200, body)]);
    let (code, out, _) = cli("operator autopilot state", &f.addr);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Healthy:                      false\nFailure Tolerance:            0\n"),
        "{out}"
    );
    let (code, out, _) = cli("operator autopilot state -format=json", &f.addr);
    assert_eq!(code, 0);
    assert!(
        out.contains("\n    \"Healthy\": false,"),
        "four-space indent as Go's MarshalIndent: {out}"
    );
    assert_one_error_line(
        cli("operator autopilot state -format=yaml", &f.addr),
        "Unknown format: yaml",
    );
}

/// `limits.https_handshake_timeout` (Consul's agent/config/default.go: 5s):
/// the default, a value, and a bad one named in one line; the HTTPS API
/// uses what the options hold (`http/https.rs`).
#[test]
fn https_handshake_timeout_has_consuls_default_and_names_itself_when_bad() {
    use std::time::Duration;
    let dir = temp_dir("https-handshake-timeout");
    let base = format!("-data-dir {}", dir.join("data").display());
    let o = agent_options(&args(&base)).unwrap();
    assert_eq!(o.limits.https_handshake_timeout, Duration::from_secs(5));
    let hcl = write(
        &dir,
        "limits.hcl",
        "limits {\n  https_handshake_timeout = \"750ms\"\n}\n",
    );
    let o = agent_options(&args(&format!("{base} -config-file {hcl}"))).unwrap();
    assert_eq!(o.limits.https_handshake_timeout, Duration::from_millis(750));
    for bad in ["\"0s\"", "\"-1s\"", "5", "\"later\""] {
        let f = write(
            &dir,
            "bad.hcl",
            &format!("limits {{\n  https_handshake_timeout = {bad}\n}}\n"),
        );
        let e = error_of(&args(&format!("{base} -config-file {f}")));
        assert!(e.contains("limits.https_handshake_timeout: "), "{bad}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

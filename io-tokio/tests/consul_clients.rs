//! Existing Consul clients, unchanged, against a real `tern agent`:
//! py-consul (installed with pip by this test if missing) runs
//! `tests/py_consul.py`, which asserts what it gets back; rs-consul (a
//! dev-dependency) is driven from Rust below.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_single_server};

/// A one-server `tern agent` on free ports with its own data dir, started
/// and waited on until it has a leader; killed and cleaned up on drop.
struct Agent {
    child: Child,
    dir: PathBuf,
    http: u16,
}

impl Agent {
    fn start(node: &str) -> Agent {
        let dir = std::env::temp_dir().join(format!(
            "tern-{node}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let http = free_port();
        let server = free_port();
        let child = spawn_single_server(node, &dir, http, server);
        let mut agent = Agent { child, dir, http };
        agent.wait_for_leader(Duration::from_secs(15));
        agent
    }

    /// Polls `/v1/status/leader` until it names a leader (`""` means none).
    fn wait_for_leader(&mut self, within: Duration) {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let url = format!("{}/v1/status/leader", self.base());
        let end = Instant::now() + within;
        loop {
            let leader = http
                .get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok());
            if leader.is_some_and(|l| l.trim() != "\"\"") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tern agent exited before electing a leader: {status}");
            }
            assert!(Instant::now() < end, "no leader within {within:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have_py_consul() -> bool {
    Command::new("python3")
        .args(["-c", "import consul"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn py_consul_works_unchanged() {
    if !have_py_consul() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "py-consul",
            ])
            .status()
            .expect("python3 is needed for this test");
        assert!(status.success(), "pip install py-consul failed");
    }
    let agent = Agent::start("py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py_consul.py");
    let out = Command::new("python3")
        .arg(script)
        .env("TERN_HTTP_PORT", agent.http.to_string())
        .output()
        .unwrap();
    drop(agent);
    assert!(
        out.status.success(),
        "py-consul checks failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

mod rs {
    //! rs-consul 0.15 has KV (and sessions, catalog, ACLs, which Tern does
    //! not serve) but no status or operator calls, so this is its KV API.
    //!
    //! Two of its habits meet Consul's "flags count by presence" rule, and
    //! Tern must answer them exactly as Consul's `kvs_endpoint.go` does:
    //! `read_key` and `delete_key` always send `?recurse=<bool>`, so even
    //! `recurse: false` is a prefix read / delete-tree; and a `delete_key`
    //! with `check_and_set` sends `?recurse=false&cas=N`, which Consul
    //! refuses as conflicting flags.

    use std::time::{Duration, Instant};

    use rs_consul::{
        Config, ConsistencyMode, Consul, ConsulError, CreateOrUpdateKeyRequest, DeleteKeyRequest,
        ReadKeyRequest, ReadKeyResponse, ResponseMeta,
    };

    fn client(base: &str) -> Consul {
        Consul::new(Config {
            address: base.to_string(),
            ..Config::default()
        })
    }

    fn put(key: &str) -> CreateOrUpdateKeyRequest<'_> {
        CreateOrUpdateKeyRequest {
            key,
            ..Default::default()
        }
    }

    fn get(key: &str) -> ReadKeyRequest<'_> {
        ReadKeyRequest {
            key,
            ..Default::default()
        }
    }

    /// `(Key, Value, Flags)` of each entry, in the order returned.
    fn kvs(r: &ResponseMeta<Vec<ReadKeyResponse>>) -> Vec<(&str, Option<&str>, u64)> {
        r.response
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.flags))
            .collect()
    }

    /// The status and body of a non-200 answer.
    fn http_error<T: std::fmt::Debug>(r: Result<T, ConsulError>) -> (u16, String) {
        match r {
            Err(ConsulError::UnexpectedResponseCode(status, body)) => {
                (status.as_u16(), body.unwrap_or_default())
            }
            other => panic!("expected an HTTP error, got {other:?}"),
        }
    }

    pub(super) async fn checks(base: &str) {
        let c = client(base);

        // Plain put; as from Consul, a PUT carries no X-Consul-Index (0).
        assert_eq!(
            c.create_or_update_key(put("rs/a"), b"1".to_vec())
                .await
                .unwrap(),
            (true, 0)
        );
        // With flags.
        let flagged = CreateOrUpdateKeyRequest {
            flags: 42,
            ..put("rs/b")
        };
        assert!(
            c.create_or_update_key(flagged, b"2".to_vec())
                .await
                .unwrap()
                .0
        );

        // A single read (a prefix read, see above: only rs/a matches yet).
        let a = c.read_key(get("rs/a")).await.unwrap();
        assert_eq!(kvs(&a), [("rs/a", Some("1"), 0)]);
        let entry = &a.response[0];
        assert!(entry.create_index > 0);
        assert_eq!(entry.create_index, entry.modify_index);
        assert_eq!((entry.lock_index, entry.session.as_deref()), (0, None));
        assert!(
            a.index >= entry.modify_index as u64,
            "X-Consul-Index {}",
            a.index
        );
        let b = c.read_key(get("rs/b")).await.unwrap();
        assert_eq!(kvs(&b), [("rs/b", Some("2"), 42)]);

        // `?recurse=false` is a recurse, as in Consul: rs/a finds rs/ab too.
        assert!(
            c.create_or_update_key(put("rs/ab"), b"x".to_vec())
                .await
                .unwrap()
                .0
        );
        let a = c.read_key(get("rs/a")).await.unwrap();
        assert_eq!(kvs(&a), [("rs/a", Some("1"), 0), ("rs/ab", Some("x"), 0)]);

        // Check-and-set: the current ModifyIndex wins, a stale one loses.
        let index = a.response[0].modify_index;
        let cas = |idx| CreateOrUpdateKeyRequest {
            check_and_set: Some(idx),
            ..put("rs/a")
        };
        assert_eq!(
            c.create_or_update_key(cas(index), b"3".to_vec())
                .await
                .unwrap(),
            (true, 0)
        );
        assert_eq!(
            c.create_or_update_key(cas(index), b"4".to_vec())
                .await
                .unwrap(),
            (false, 0),
            "a stale cas must fail"
        );
        // cas=0 creates only.
        assert!(
            !c.create_or_update_key(cas(0), b"5".to_vec())
                .await
                .unwrap()
                .0
        );
        let new = CreateOrUpdateKeyRequest {
            check_and_set: Some(0),
            ..put("rs/new")
        };
        assert!(
            c.create_or_update_key(new.clone(), b"n".to_vec())
                .await
                .unwrap()
                .0
        );
        assert!(!c.create_or_update_key(new, b"m".to_vec()).await.unwrap().0);
        // An empty value reads back as a null Value.
        assert!(
            c.create_or_update_key(put("rs/empty"), Vec::new())
                .await
                .unwrap()
                .0
        );

        // Recurse, and the consistency modes.
        let all = c
            .read_key(ReadKeyRequest {
                recurse: true,
                ..get("rs/")
            })
            .await
            .unwrap();
        let expected = [
            ("rs/a", Some("3"), 0),
            ("rs/ab", Some("x"), 0),
            ("rs/b", Some("2"), 42),
            ("rs/empty", None, 0),
            ("rs/new", Some("n"), 0),
        ];
        assert_eq!(kvs(&all), expected);
        let max_modify = all.response.iter().map(|e| e.modify_index).max().unwrap();
        assert!(all.index >= max_modify as u64);
        for consistency in [ConsistencyMode::Consistent, ConsistencyMode::Stale] {
            let r = c
                .read_key(ReadKeyRequest {
                    recurse: true,
                    consistency: consistency.clone(),
                    ..get("rs/")
                })
                .await
                .unwrap();
            assert_eq!(kvs(&r), expected, "{consistency:?}");
        }

        // A missing key: Consul's 404 with an empty body.
        assert_eq!(
            http_error(c.read_key(get("nope/x")).await),
            (404, String::new())
        );

        // A blocking query returns when the key changes...
        assert!(
            c.create_or_update_key(put("rs/w"), b"0".to_vec())
                .await
                .unwrap()
                .0
        );
        let w = c.read_key(get("rs/w")).await.unwrap();
        let writer = {
            let c = client(base);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.create_or_update_key(put("rs/w"), b"1".to_vec()).await
            })
        };
        let t = Instant::now();
        let changed = c
            .read_key(ReadKeyRequest {
                index: Some(w.index),
                wait: Duration::from_secs(10),
                ..get("rs/w")
            })
            .await
            .unwrap();
        let waited = t.elapsed();
        assert!(writer.await.unwrap().unwrap().0);
        assert_eq!(kvs(&changed), [("rs/w", Some("1"), 0)]);
        assert!(changed.index > w.index);
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
            "returned after {waited:?}"
        );
        // ... and after its wait (plus up to wait/16 of jitter) if it doesn't.
        let t = Instant::now();
        let same = c
            .read_key(ReadKeyRequest {
                index: Some(changed.index),
                wait: Duration::from_secs(1),
                ..get("rs/w")
            })
            .await
            .unwrap();
        let waited = t.elapsed();
        assert_eq!(kvs(&same), [("rs/w", Some("1"), 0)]);
        assert_eq!(same.index, changed.index);
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "returned after {waited:?}"
        );

        // Delete with `recurse: false` is a delete-tree, as in Consul.
        let del = |key| DeleteKeyRequest {
            key,
            ..Default::default()
        };
        assert!(c.delete_key(del("rs/a")).await.unwrap());
        assert_eq!(http_error(c.read_key(get("rs/a")).await).0, 404);
        assert_eq!(
            kvs(&c.read_key(get("rs/b")).await.unwrap()),
            [("rs/b", Some("2"), 42)]
        );
        // A cas delete sends `recurse=false&cas=N`: Consul's conflicting flags.
        let b_index = c.read_key(get("rs/b")).await.unwrap().response[0].modify_index;
        let (status, text) = http_error(
            c.delete_key(DeleteKeyRequest {
                check_and_set: b_index as u32,
                ..del("rs/b")
            })
            .await,
        );
        assert_eq!(
            (status, text),
            (
                400,
                format!("Conflicting flags: cas={b_index}&recurse=false\n")
            )
        );
        assert_eq!(c.read_key(get("rs/b")).await.unwrap().response.len(), 1);
        // The whole prefix.
        let tree = DeleteKeyRequest {
            recurse: true,
            ..del("rs/")
        };
        assert!(c.delete_key(tree).await.unwrap());
        let gone = c
            .read_key(ReadKeyRequest {
                recurse: true,
                ..get("rs/")
            })
            .await;
        assert_eq!(http_error(gone).0, 404);
    }

    /// The blocking (ureq) put, called outside the runtime; read back with
    /// the async client.
    /// rs-consul's catalog calls: register, the service names, the nodes,
    /// deregister (its PascalCase bodies, with the fields it leaves out).
    pub(super) async fn catalog_checks(base: &str) {
        use rs_consul::{
            DeregisterEntityPayload, GetNodesRequest, RegisterEntityCheck, RegisterEntityPayload,
            RegisterEntityService,
        };
        let c = client(base);
        let payload = RegisterEntityPayload {
            ID: None,
            Node: "rs-node".into(),
            Address: "10.0.0.5".into(),
            Datacenter: None,
            TaggedAddresses: Default::default(),
            NodeMeta: [("role".to_string(), "cache".to_string())].into(),
            Service: Some(RegisterEntityService {
                ID: Some("memcached1".into()),
                Service: "memcached".into(),
                Tags: vec!["a".into()],
                TaggedAddresses: Default::default(),
                Meta: Default::default(),
                Port: Some(11211),
                Namespace: None,
            }),
            Checks: vec![RegisterEntityCheck {
                Node: None,
                CheckID: None,
                Name: "memcached up".into(),
                Notes: None,
                Status: Some("passing".into()),
                ServiceID: Some("memcached1".into()),
                Definition: [("TCP".to_string(), "10.0.0.5:11211".to_string())].into(),
            }],
            SkipNodeUpdate: None,
        };
        c.register_entity(&payload).await.unwrap();
        // The agent's own node ("rs", a server: service `consul`) is in the
        // catalog too, registered by its leader from gossip.
        let names = c.get_all_registered_service_names(None).await.unwrap();
        // rs-consul collects the names through a hash map: any order.
        let mut sorted = names.response.clone();
        sorted.sort();
        assert_eq!(sorted, ["consul", "memcached"]);
        assert!(names.index > 0);
        let nodes: Vec<_> = c
            .get_nodes(GetNodesRequest::default(), None)
            .await
            .unwrap()
            .response
            .into_iter()
            .filter(|n| n.node != "rs")
            .collect();
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            (
                nodes[0].node.as_str(),
                nodes[0].address.as_str(),
                nodes[0].datacenter.as_str()
            ),
            ("rs-node", "10.0.0.5", "dc1")
        );
        assert_eq!(nodes[0].TaggedAddresses, None, "registered without: null");
        let dereg = DeregisterEntityPayload {
            Node: Some("rs-node".into()),
            Datacenter: None,
            CheckID: None,
            ServiceID: None,
            Namespace: None,
        };
        c.deregister_entity(&dereg).await.unwrap();
        let nodes = c.get_nodes(GetNodesRequest::default(), None).await.unwrap();
        assert_eq!(
            nodes
                .response
                .iter()
                .map(|n| n.node.as_str())
                .collect::<Vec<_>>(),
            ["rs"]
        );
    }

    pub(super) fn sync_checks(base: &str, rt: &tokio::runtime::Runtime) {
        let c = client(base);
        assert!(c
            .create_or_update_key_sync(put("rs/sync"), b"s".to_vec())
            .unwrap());
        let cas = CreateOrUpdateKeyRequest {
            check_and_set: Some(0),
            ..put("rs/sync")
        };
        assert!(!c.create_or_update_key_sync(cas, b"t".to_vec()).unwrap());
        let read = rt.block_on(c.read_key(get("rs/sync"))).unwrap();
        assert_eq!(kvs(&read), [("rs/sync", Some("s"), 0)]);
    }
}

#[test]
fn rs_consul_works_unchanged() {
    let agent = Agent::start("rs");
    let base = agent.base();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rs::checks(&base));
    rs::sync_checks(&base, &rt);
    rt.block_on(rs::catalog_checks(&base));
}

//! The HTTP API over real TCP against a scripted agent: proves the HTTP layer
//! speaks Consul's dialect (status codes, error strings, meta headers, JSON
//! shapes, presence flags) and turns each call into the right `Request`.
//!
//! The fake agent keeps a `BTreeMap` as its KV store and records every
//! request it is sent, so a test can check both what a client sees and what
//! reached the agent. Requests are raw HTTP/1.1 over a `TcpStream`, so the
//! tests control every header (or its absence, like python `requests`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tern::agent::{AgentHandle, AgentOptions, AgentStatus, PoolOptions, ToAgent};
use tern_core::autopilot::{GossipStatus, HealthReply, ServerHealthReply};
use tern_core::fsm::{ApplyResult, KvCommand, KvEntry};
use tern_core::rpc::{
    Blocking, Op, RaftServer, ReadMode, Reply, ReplyBody, Request, Response, RpcError,
};
use tern_core::{Config, Datacenter, Duration, LogIndex, NodeId, NodeName, Term};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE_A: NodeId = NodeId(0x0a);
const NODE_B: NodeId = NodeId(0x0b);

// ---------------------------------------------------------------- the fake agent

/// What the scripted agent knows and what it was asked.
#[derive(Default)]
struct Script {
    kv: BTreeMap<String, KvEntry>,
    index: u64,
    leader: Option<String>,
    requests: Vec<Request>,
    leaves: usize,
    health: HealthReply,
    autopilot: Option<tern_core::fsm::StoredAutopilot>,
}

type Shared = Arc<Mutex<Script>>;

impl Script {
    fn answer(&mut self, request: Request) -> Response {
        self.requests.push(request.clone());
        if request.datacenter.0 != "dc1" {
            return Err(RpcError::NoPathToDatacenter);
        }
        let body = match request.op {
            Op::KvGet { key } => match key.as_str() {
                "err/no-leader" => return Err(RpcError::NoLeader),
                "err/busy" => return Err(RpcError::Busy),
                "err/not-ready" => return Err(RpcError::NotReadyForConsistentReads),
                "err/unknown" => return Err(RpcError::Unknown("leadership lost".into())),
                _ => ReplyBody::Kv(self.kv.get(&key).cloned()),
            },
            Op::KvList { prefix } => ReplyBody::KvList(
                self.kv
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
            Op::KvKeys { prefix, separator } => ReplyBody::Keys(self.keys(&prefix, separator)),
            Op::KvApply(command) => ReplyBody::Applied(ApplyResult::Kv(self.apply(command))),
            Op::StatusLeader => ReplyBody::Leader(self.leader.clone()),
            Op::StatusPeers => ReplyBody::Peers(vec!["10.0.0.1:8300".into()]),
            Op::RaftConfiguration => ReplyBody::Configuration {
                servers: vec![
                    raft_server(NODE_A, "a", "10.0.0.1:8300", true),
                    raft_server(NODE_B, "b", "10.0.0.2:8300", false),
                ],
                index: 7,
            },
            Op::RaftRemovePeer { .. } => ReplyBody::Done,
            Op::RaftTransferLeadership { .. } => ReplyBody::Done,
            Op::Catalog(tern_core::rpc::CatalogOp::Nodes { .. }) => {
                ReplyBody::Catalog(tern_core::rpc::CatalogReply::Nodes(vec![]))
            }
            Op::AutopilotHealth => ReplyBody::AutopilotHealth(self.health.clone()),
            Op::AutopilotGetConfig => ReplyBody::AutopilotConfig(self.autopilot.clone().unwrap_or(
                tern_core::fsm::StoredAutopilot {
                    config: Default::default(),
                    create_index: 0,
                    modify_index: 0,
                },
            )),
            // The state machine's CAS (its own tests pin it), in brief.
            Op::AutopilotSetConfig { config, cas } => {
                let current = self.autopilot.as_ref().map_or(0, |a| a.modify_index);
                let held = cas.is_none_or(|c| c == current);
                if held {
                    self.index += 1;
                    self.autopilot = Some(tern_core::fsm::StoredAutopilot {
                        config,
                        create_index: self
                            .autopilot
                            .as_ref()
                            .map_or(self.index, |a| a.create_index),
                        modify_index: self.index,
                    });
                }
                ReplyBody::Applied(ApplyResult::Autopilot(held))
            }
            _ => return Err(RpcError::BadRequest("not scripted".into())),
        };
        Ok(Reply {
            // The real core clamps too; the HTTP layer must not rely on it.
            index: self.index,
            known_leader: self.leader.is_some(),
            last_contact_ms: 42,
            body,
        })
    }

    fn keys(&self, prefix: &str, separator: Option<String>) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for key in self.kv.keys().filter(|k| k.starts_with(prefix)) {
            let rolled = match separator.as_deref() {
                Some(sep) => match key[prefix.len()..].find(sep) {
                    Some(at) => key[..prefix.len() + at + sep.len()].to_string(),
                    None => key.clone(),
                },
                None => key.clone(),
            };
            if keys.last() != Some(&rolled) {
                keys.push(rolled);
            }
        }
        keys
    }

    fn apply(&mut self, command: KvCommand) -> bool {
        self.index += 1;
        let index = self.index;
        let modify_index = |kv: &BTreeMap<String, KvEntry>, key: &str| {
            kv.get(key).map_or(0, |e: &KvEntry| e.modify_index)
        };
        match command {
            KvCommand::Set(w) => {
                self.put(w.key, w.flags, w.value.to_vec(), index);
                true
            }
            KvCommand::Cas {
                write,
                modify_index: want,
            } => {
                let held = modify_index(&self.kv, &write.key) == want;
                if held {
                    self.put(write.key, write.flags, write.value.to_vec(), index);
                }
                held
            }
            KvCommand::Delete { key } => {
                self.kv.remove(&key);
                true
            }
            KvCommand::DeleteCas {
                key,
                modify_index: want,
            } => {
                // As the core: a missing key is "deleted" at any index.
                let held = !self.kv.contains_key(&key) || modify_index(&self.kv, &key) == want;
                if held {
                    self.kv.remove(&key);
                }
                held
            }
            KvCommand::DeleteTree { prefix } => {
                self.kv.retain(|k, _| !k.starts_with(&prefix));
                true
            }
            // This fake has no sessions: real agents test locks.
            KvCommand::Lock { .. } | KvCommand::Unlock { .. } => false,
        }
    }

    fn put(&mut self, key: String, flags: u64, value: Vec<u8>, index: u64) {
        let create_index = self.kv.get(&key).map_or(index, |e| e.create_index);
        self.kv.insert(
            key.clone(),
            KvEntry {
                key,
                flags,
                value: value.into(),
                create_index,
                modify_index: index,
                lock_index: 0,
            },
        );
    }
}

fn raft_server(id: NodeId, node: &str, address: &str, leader: bool) -> RaftServer {
    RaftServer {
        id,
        node: NodeName(node.into()),
        address: address.into(),
        leader,
        voter: true,
    }
}

fn options() -> AgentOptions {
    AgentOptions {
        core: Config::new(NODE_A, "node-a", "dc1", "10.0.0.1:8300"),
        data_dir: None,
        http_addr: "127.0.0.1:8500".parse().unwrap(),
        server_addr: "10.0.0.1:8300".parse().unwrap(),
        lan: PoolOptions {
            bind: "10.0.0.1:8301".parse().unwrap(),
            advertise: "10.0.0.1:8301".parse().unwrap(),
            start_join: vec![],
            retry_join: vec![],
            retry_interval: tern_core::Duration::from_secs(30),
            retry_max: 0,
        },
        wan: None,
        bootstrap_expect: 3,
        dev: false,
        server: true,
        tls: Default::default(),
        services: Vec::new(),
        checks: Vec::new(),
        encrypt: Default::default(),
        limits: Default::default(),
        node_meta: Default::default(),
    }
}

fn leader_status() -> AgentStatus {
    AgentStatus {
        node_id: NODE_A,
        node_name: "node-a".into(),
        datacenter: "dc1".into(),
        server_addr: "10.0.0.1:8300".into(),
        leader: Some(NODE_A),
        leader_addr: Some("10.0.0.1:8300".into()),
        role: "Leader".into(),
        term: Term(3),
        commit_index: LogIndex(17),
        applied_index: LogIndex(16),
        last_log_index: LogIndex(18),
        last_contact_ms: 0,
        num_peers: 2,
        known_leader: true,
        client: false,
    }
}

/// A served router over a scripted agent.
struct Harness {
    addr: SocketAddr,
    script: Shared,
}

impl Harness {
    async fn start() -> Harness {
        let (handle, mut rx) = AgentHandle::detached(options());
        let script: Shared = Arc::new(Mutex::new(Script {
            index: 0,
            leader: Some("10.0.0.1:8300".into()),
            ..Script::default()
        }));
        let agent_script = script.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ToAgent::Request(request, reply) => {
                        let answer = agent_script.lock().unwrap().answer(request);
                        let _ = reply.send(answer);
                    }
                    ToAgent::Status(reply) => {
                        let _ = reply.send(leader_status());
                    }
                    ToAgent::Leave(reply) => {
                        agent_script.lock().unwrap().leaves += 1;
                        let _ = reply.send(());
                    }
                    ToAgent::SaveState(_, reply) => {
                        let _ = reply.send(Err("scripted agents hold no state".into()));
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(tern::http::serve(listener, handle));
        Harness { addr, script }
    }

    fn last_request(&self) -> Request {
        self.script
            .lock()
            .unwrap()
            .requests
            .last()
            .cloned()
            .unwrap()
    }

    fn request_count(&self) -> usize {
        self.script.lock().unwrap().requests.len()
    }

    async fn get(&self, target: &str) -> HttpResponse {
        http(self.addr, "GET", target, &[]).await
    }

    async fn put(&self, target: &str, body: &[u8]) -> HttpResponse {
        http(self.addr, "PUT", target, body).await
    }

    async fn delete(&self, target: &str) -> HttpResponse {
        http(self.addr, "DELETE", target, &[]).await
    }
}

// ---------------------------------------------------------------- a raw HTTP/1.1 client

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// None of the query-meta headers (endpoints that return an RPC's reply
    /// without Consul's `setMeta`).
    fn assert_no_meta(&self) {
        for h in [
            "X-Consul-Index",
            "X-Consul-KnownLeader",
            "X-Consul-LastContact",
            "X-Consul-Effective-Consistency",
        ] {
            assert_eq!(self.header(h), None, "{h}");
        }
    }

    /// The three query-meta headers every read sends.
    fn assert_meta(&self) {
        let index: u64 = self.header("X-Consul-Index").unwrap().parse().unwrap();
        assert!(index >= 1, "X-Consul-Index is never 0");
        assert!(matches!(
            self.header("X-Consul-KnownLeader"),
            Some("true" | "false")
        ));
        assert_eq!(self.header("X-Consul-LastContact"), Some("42"));
    }
}

/// One request with `Connection: close` and no `Content-Type`, as python
/// `requests` sends a `data=` body. The body is written while the response is
/// read, so a server that answers early (413) does not stall the test.
async fn http(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(addr, request).await
}

/// Sends `request` exactly as given and reads the response.
async fn http_raw(addr: SocketAddr, request: Vec<u8>) -> HttpResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).await.unwrap();
    drop(write.await);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"),
        "this little client reads only sized bodies"
    );
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

// ---------------------------------------------------------------- KV reads

#[tokio::test]
async fn kv_reads_send_meta_headers_also_on_a_404() {
    let h = Harness::start().await;

    // A missing key: 404, empty body, and still the three headers (py-consul
    // raises "Missing index header" otherwise). The agent said index 0.
    let r = h.get("/v1/kv/missing").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    r.assert_meta();
    assert_eq!(r.header("X-Consul-Index"), Some("1"));
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));

    // A present key: the same headers, the agent's index.
    assert_eq!(h.put("/v1/kv/here", b"v").await.status, 200);
    let r = h.get("/v1/kv/here").await;
    assert_eq!(r.status, 200);
    r.assert_meta();
    assert_eq!(r.header("X-Consul-Index"), Some("1"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

#[tokio::test]
async fn an_empty_recurse_is_a_404_with_headers_and_keys_at_the_root_is_an_empty_list() {
    let h = Harness::start().await;

    // Consul answers an empty recurse with 404 (py-consul's test_kv_recurse
    // expects `None`), not with `[]`.
    let r = h.get("/v1/kv/foo/?recurse").await;
    assert_eq!(r.status, 404);
    r.assert_meta();

    // `?keys` at the root is `[]`, never `null`; under a prefix, 404.
    let r = h.get("/v1/kv/?keys").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!([]));
    r.assert_meta();
    let r = h.get("/v1/kv/foo/?keys").await;
    assert_eq!(r.status, 404);
    r.assert_meta();
}

#[tokio::test]
async fn values_are_base64_and_an_empty_value_is_null() {
    let h = Harness::start().await;
    assert_eq!(
        h.put("/v1/kv/greeting?flags=42", b"hello").await.json(),
        true
    );
    assert_eq!(h.put("/v1/kv/empty", b"").await.json(), true);

    let r = h.get("/v1/kv/greeting").await;
    assert_eq!(
        r.json(),
        serde_json::json!([{
            "LockIndex": 0, "Key": "greeting", "Flags": 42, "Value": "aGVsbG8=",
            "CreateIndex": 1, "ModifyIndex": 1,
        }])
    );
    assert_eq!(
        h.get("/v1/kv/empty").await.json()[0]["Value"],
        serde_json::Value::Null
    );

    // Recurse lists every entry under the prefix, in key order.
    h.put("/v1/kv/greeting/x", b"1").await;
    let keys: Vec<String> = h
        .get("/v1/kv/greeting?recurse")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["greeting", "greeting/x"]);
    assert_eq!(
        h.last_request().op,
        Op::KvList {
            prefix: "greeting".into()
        }
    );
}

#[tokio::test]
async fn raw_returns_the_bytes_as_text_plain() {
    let h = Harness::start().await;
    h.put("/v1/kv/blob", &[0, 159, 146, 150, b'x']).await;
    let r = h.get("/v1/kv/blob?raw").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, [0, 159, 146, 150, b'x']);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    r.assert_meta();
}

#[tokio::test]
async fn keys_roll_up_at_the_separator() {
    let h = Harness::start().await;
    for k in ["app/a", "app/b/c", "app/b/d", "other"] {
        h.put(&format!("/v1/kv/{k}"), b"1").await;
    }
    let r = h.get("/v1/kv/app/?keys&separator=/").await;
    assert_eq!(r.json(), serde_json::json!(["app/a", "app/b/"]));
    assert_eq!(
        h.last_request().op,
        Op::KvKeys {
            prefix: "app/".into(),
            separator: Some("/".into())
        }
    );
    // No separator (or an empty one): every key.
    let r = h.get("/v1/kv/?keys&separator=").await;
    assert_eq!(
        r.json(),
        serde_json::json!(["app/a", "app/b/c", "app/b/d", "other"])
    );
}

#[tokio::test]
async fn keys_are_percent_decoded_and_keep_slashes() {
    let h = Harness::start().await;
    assert_eq!(h.put("/v1/kv/a%2Fb/c%20d/", b"1").await.status, 200);
    let r = h.get("/v1/kv/a/b/c%20d/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["Key"], "a/b/c d/");
    assert_eq!(
        h.last_request().op,
        Op::KvGet {
            key: "a/b/c d/".into()
        }
    );
}

// ---------------------------------------------------------------- KV writes

#[tokio::test]
async fn a_put_without_content_type_stores_the_body_as_is() {
    let h = Harness::start().await;
    // `http` sends no Content-Type at all; the body is JSON-looking on purpose.
    let r = h.put("/v1/kv/config", br#"{"a": 1}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), true);
    let Op::KvApply(KvCommand::Set(write)) = h.last_request().op else {
        panic!("expected a Set");
    };
    assert_eq!(write.key, "config");
    assert_eq!(write.value, br#"{"a": 1}"#);
    assert_eq!(write.flags, 0);
}

#[tokio::test]
async fn cas_answers_true_or_false() {
    let h = Harness::start().await;
    // cas=0: create only.
    assert_eq!(h.put("/v1/kv/lock?cas=0", b"first").await.json(), true);
    assert_eq!(h.put("/v1/kv/lock?cas=0", b"second").await.json(), false);
    let index = h.get("/v1/kv/lock").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        h.put(&format!("/v1/kv/lock?cas={}", index + 5), b"x")
            .await
            .json(),
        false
    );
    assert_eq!(
        h.put(&format!("/v1/kv/lock?cas={index}"), b"x")
            .await
            .json(),
        true
    );

    // Delete with cas: false on a stale index, true on the current one.
    let index = h.get("/v1/kv/lock").await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(h.delete("/v1/kv/lock?cas=1").await.json(), false);
    assert_eq!(
        h.delete(&format!("/v1/kv/lock?cas={index}")).await.json(),
        true
    );
    assert_eq!(
        h.last_request().op,
        Op::KvApply(KvCommand::DeleteCas {
            key: "lock".into(),
            modify_index: index
        })
    );
    assert_eq!(h.get("/v1/kv/lock").await.status, 404);
}

#[tokio::test]
async fn delete_recurse_removes_the_prefix_and_the_root_needs_recurse() {
    let h = Harness::start().await;
    for k in ["t/a", "t/b", "u"] {
        h.put(&format!("/v1/kv/{k}"), b"1").await;
    }
    let r = h.delete("/v1/kv/t/?recurse").await;
    assert_eq!(r.json(), true);
    assert_eq!(
        h.last_request().op,
        Op::KvApply(KvCommand::DeleteTree {
            prefix: "t/".into()
        })
    );
    assert_eq!(h.get("/v1/kv/t/?recurse").await.status, 404);
    assert_eq!(h.get("/v1/kv/u").await.status, 200);

    // py-consul's cleanup: DELETE /v1/kv/?recurse=1 (axum's `{*key}` does
    // not match `/v1/kv/`).
    assert_eq!(h.delete("/v1/kv/?recurse=1").await.json(), true);
    assert_eq!(h.get("/v1/kv/u").await.status, 404);

    // A plain delete of a missing key is still `true`; the root without
    // recurse is a 400.
    assert_eq!(h.delete("/v1/kv/nothing").await.json(), true);
    let r = h.delete("/v1/kv/").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
}

#[tokio::test]
async fn a_value_one_byte_over_512_kib_is_413_and_never_reaches_the_agent() {
    let h = Harness::start().await;
    let at_limit = vec![b'x'; 512 * 1024];
    assert_eq!(h.put("/v1/kv/big", &at_limit).await.json(), true);
    let before = h.request_count();

    let over = vec![b'x'; 512 * 1024 + 1];
    let r = h.put("/v1/kv/big", &over).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        "Request body(524289 bytes) too large, max size: 524288 bytes. \
         See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
    );
    assert_eq!(h.request_count(), before);
}

#[tokio::test]
async fn a_chunked_value_over_the_limit_is_413_too() {
    let h = Harness::start().await;
    // No Content-Length to check up front: the read itself is bounded.
    let chunk = vec![b'x'; 64 * 1024];
    let mut request =
        b"PUT /v1/kv/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..9 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let r = http_raw(h.addr, request).await;
    assert_eq!(r.status, 413);
    assert!(r
        .text()
        .starts_with("Request body too large, max size: 524288 bytes."));
    assert_eq!(h.request_count(), 0);
}

#[tokio::test]
async fn hostile_requests_get_an_answer_and_the_server_keeps_serving() {
    let h = Harness::start().await;
    let cases = [
        ("GET", "/v1/kv/%FF%FE", 400),
        ("GET", "/v1/kv/k%zz?x=%zz", 404),
        ("GET", "/v1/kv/k?index=99999999999999999999999", 400),
        ("GET", "/v1/kv/k?index=1&wait=99999999999999999999h", 400),
        (
            "GET",
            "/v1/kv/k?index=1&wait=1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
            404,
        ),
        ("GET", "/v1/kv/k?index=1&wait=-5s", 404),
        ("PUT", "/v1/kv/k?flags=18446744073709551616", 400),
        ("GET", "/v1/status/leader?dc=%00", 500),
    ];
    for (method, target, status) in cases {
        let r = http(h.addr, method, target, b"").await;
        assert_eq!(r.status, status, "{method} {target}: {}", r.text());
    }
    // A negative wait means Consul's default.
    assert_eq!(
        h.script.lock().unwrap().requests[2]
            .blocking
            .unwrap()
            .max_wait,
        Duration::from_secs(300)
    );
    assert_eq!(h.get("/v1/status/leader").await.status, 200);
}

#[tokio::test]
async fn put_and_get_of_the_empty_key_are_400() {
    let h = Harness::start().await;
    for r in [h.put("/v1/kv/", b"v").await, h.get("/v1/kv/").await] {
        assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
    }
    assert_eq!(h.request_count(), 0);
}

// ---------------------------------------------------------------- query parameters

#[tokio::test]
async fn stale_with_consistent_is_400() {
    let h = Harness::start().await;
    let r = h.get("/v1/kv/k?stale&consistent").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Cannot specify ?stale with ?consistent, conflicting semantics."
    );
    assert_eq!(h.request_count(), 0);

    // Each alone picks the read mode, whatever its value (presence counts).
    h.get("/v1/kv/k?stale=false").await;
    assert_eq!(h.last_request().read_mode, ReadMode::Stale);
    h.get("/v1/kv/k?consistent").await;
    assert_eq!(h.last_request().read_mode, ReadMode::Consistent);
    h.get("/v1/kv/k").await;
    assert_eq!(h.last_request().read_mode, ReadMode::Default);
}

#[tokio::test]
async fn bad_query_values_are_400_naming_the_parameter() {
    let h = Harness::start().await;
    let cases = [
        ("PUT", "/v1/kv/k?cas=abc", "?cas"),
        ("PUT", "/v1/kv/k?flags=-1", "?flags"),
        ("DELETE", "/v1/kv/k?cas=1x", "?cas"),
        ("GET", "/v1/kv/k?index=x", "Invalid index"),
        ("GET", "/v1/kv/k?index=1&wait=forever", "Invalid wait time"),
        ("GET", "/v1/kv/k?wait=10", "Invalid wait time"),
        (
            "DELETE",
            "/v1/kv/k?recurse&cas=1",
            "Conflicting flags: cas=1&recurse=",
        ),
        ("PUT", "/v1/kv/k?cas=1&acquire=s", "Conflicting flags"),
        (
            "GET",
            "/v1/kv/k?max_stale=1",
            "Invalid max_stale value \"1\"",
        ),
    ];
    for (method, target, needle) in cases {
        let r = http(h.addr, method, target, b"").await;
        assert_eq!(r.status, 400, "{method} {target}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{method} {target}: {:?}",
            r.text()
        );
        assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    }
    assert_eq!(h.request_count(), 0);
}

#[tokio::test]
async fn a_blocking_query_passes_index_and_wait_to_the_request() {
    let h = Harness::start().await;
    h.get("/v1/kv/k?index=5&wait=10s").await;
    assert_eq!(
        h.last_request().blocking,
        Some(Blocking {
            min_index: 5,
            max_wait: Duration::from_secs(10)
        })
    );
    h.get("/v1/kv/k?recurse&index=9&wait=100ms").await;
    assert_eq!(
        h.last_request().blocking,
        Some(Blocking {
            min_index: 9,
            max_wait: Duration::from_millis(100)
        })
    );
    // No wait: Consul's default 5 minutes; over 10 minutes: capped.
    h.get("/v1/kv/k?index=5").await;
    assert_eq!(
        h.last_request().blocking.unwrap().max_wait,
        Duration::from_secs(300)
    );
    h.get("/v1/kv/k?index=5&wait=1h").await;
    assert_eq!(
        h.last_request().blocking.unwrap().max_wait,
        Duration::from_secs(600)
    );
    // A wait without an index does not block.
    h.get("/v1/kv/k?wait=5m").await;
    assert_eq!(h.last_request().blocking, None);
}

#[tokio::test]
async fn dc_selects_the_datacenter_and_defaults_to_the_agents() {
    let h = Harness::start().await;
    h.get("/v1/kv/k").await;
    assert_eq!(h.last_request().datacenter, Datacenter("dc1".into()));
    let r = h.get("/v1/kv/k?dc=dc2").await;
    assert_eq!(h.last_request().datacenter, Datacenter("dc2".into()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "No path to datacenter")
    );
}

#[tokio::test]
async fn agent_errors_map_to_consuls_status_codes_and_strings() {
    let h = Harness::start().await;
    let cases = [
        ("err/no-leader", 500, "No cluster leader"),
        ("err/not-ready", 500, "Not ready to serve consistent reads"),
        ("err/busy", 429, "Server is busy, try again later"),
        ("err/unknown", 500, "outcome unknown: leadership lost"),
    ];
    for (key, status, text) in cases {
        let r = h.get(&format!("/v1/kv/{key}")).await;
        assert_eq!((r.status, r.text().as_str()), (status, text), "{key}");
    }
}

// ---------------------------------------------------------------- status, agent, operator

#[tokio::test]
async fn status_leader_is_an_empty_string_with_200_when_there_is_none() {
    let h = Harness::start().await;
    let r = h.get("/v1/status/leader").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!("10.0.0.1:8300"))
    );
    // Any server answers: the read is stale.
    assert_eq!(h.last_request().read_mode, ReadMode::Stale);
    assert_eq!(h.last_request().op, Op::StatusLeader);

    h.script.lock().unwrap().leader = None;
    let r = h.get("/v1/status/leader").await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!("")));

    let r = h.get("/v1/status/peers").await;
    assert_eq!(r.json(), serde_json::json!(["10.0.0.1:8300"]));
    // `?pretty` indents, and ends with a newline as Consul's does.
    let r = h.get("/v1/status/peers?pretty").await;
    assert_eq!(r.text(), "[\n  \"10.0.0.1:8300\"\n]\n");
}

#[tokio::test]
async fn agent_self_has_consuls_shape_with_string_stats() {
    let h = Harness::start().await;
    let r = h.get("/v1/agent/self").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let config = &v["Config"];
    assert_eq!(config["Datacenter"], "dc1");
    assert_eq!(config["NodeName"], "node-a");
    assert_eq!(config["NodeID"], NODE_A.to_string());
    assert_eq!(config["Server"], true);
    assert!(config["Version"].as_str().unwrap().starts_with("1."));
    assert!(config["Revision"].is_string());

    let member = &v["Member"];
    assert_eq!(member["Name"], "node-a");
    assert_eq!(member["Addr"], "10.0.0.1");
    assert_eq!(member["Port"], 8300);
    assert_eq!(member["Status"], 1);
    assert_eq!(member["Tags"]["role"], "consul");
    assert_eq!(member["Tags"]["dc"], "dc1");

    // Every value under Stats is a string.
    for (group, stats) in v["Stats"].as_object().unwrap() {
        for (name, value) in stats.as_object().unwrap() {
            assert!(value.is_string(), "Stats.{group}.{name} = {value}");
        }
    }
    let raft = &v["Stats"]["raft"];
    assert_eq!(raft["state"], "Leader");
    assert_eq!(raft["term"], "3");
    assert_eq!(raft["commit_index"], "17");
    assert_eq!(raft["applied_index"], "16");
    assert_eq!(raft["last_log_index"], "18");
    assert_eq!(raft["num_peers"], "2");
    assert_eq!(raft["last_contact"], "0");
    let consul = &v["Stats"]["consul"];
    assert_eq!(consul["server"], "true");
    assert_eq!(consul["leader"], "true");
    assert_eq!(consul["leader_addr"], "10.0.0.1:8300");
    assert_eq!(consul["known_datacenters"], "1");
    assert_eq!(consul["bootstrap"], "false");
}

#[tokio::test]
async fn agent_leave_answers_200_with_an_empty_body() {
    let h = Harness::start().await;
    let r = h.put("/v1/agent/leave", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(h.script.lock().unwrap().leaves, 1);
}

#[tokio::test]
async fn operator_raft_configuration_lists_servers() {
    let h = Harness::start().await;
    let r = h.get("/v1/operator/raft/configuration?stale").await;
    assert_eq!(r.status, 200);
    // Consul's `OperatorRaftConfiguration` returns the reply without
    // `setMeta`: no query-meta headers.
    r.assert_no_meta();
    assert_eq!(
        r.json(),
        serde_json::json!({
            "Servers": [
                {"ID": NODE_A.to_string(), "Node": "a", "Address": "10.0.0.1:8300",
                 "Leader": true, "ProtocolVersion": "3", "Voter": true},
                {"ID": NODE_B.to_string(), "Node": "b", "Address": "10.0.0.2:8300",
                 "Leader": false, "ProtocolVersion": "3", "Voter": true},
            ],
            "Index": 7,
        })
    );
    assert_eq!(h.last_request().read_mode, ReadMode::Stale);
}

#[tokio::test]
async fn remove_peer_needs_exactly_one_of_id_or_address() {
    let h = Harness::start().await;
    let r = h.delete("/v1/operator/raft/peer").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"
    );
    let r = h.delete("/v1/operator/raft/peer?id=&address=").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Must specify only one of ?id or ?address")
    );
    // Server IDs are UUIDs: any other id names no server, Consul's RPC
    // error (500) with what the user sent (operator_raft_endpoint.go).
    let r = h.delete("/v1/operator/raft/peer?id=n0000").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "id \"n0000\" was not found in the Raft configuration")
    );
    assert_eq!(h.request_count(), 0);

    let r = h
        .delete("/v1/operator/raft/peer?address=10.0.0.2:8300")
        .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(
        h.last_request().op,
        Op::RaftRemovePeer {
            id: None,
            address: Some("10.0.0.2:8300".into())
        }
    );
    let r = h
        .delete(&format!("/v1/operator/raft/peer?id={NODE_B}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.last_request().op,
        Op::RaftRemovePeer {
            id: Some(NODE_B),
            address: None
        }
    );
}

/// agent/http.go: an unknown path is Consul's catch-all `Index`, a 404 with
/// an empty body; a method a pattern does not register is `wrap`'s
/// `MethodNotAllowedError`, 405 `method X not allowed` with `Allow:
/// OPTIONS,<methods>` (agent/http_register.go); `OPTIONS` is a 200 with the
/// same `Allow` and no body. None reaches the agent.
#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = Harness::start().await;
    for target in ["/v1/nope", "/v2/kv/a", "/", "/v1/coordinate/datacenters"] {
        let r = h.get(target).await;
        assert_eq!((r.status, r.body.len()), (404, 0), "{target}");
    }
    let cases = [
        ("POST", "/v1/kv/k", "OPTIONS,GET,PUT,DELETE"),
        ("PATCH", "/v1/kv/", "OPTIONS,GET,PUT,DELETE"),
        ("HEAD", "/v1/kv/k", "OPTIONS,GET,PUT,DELETE"),
        ("PUT", "/v1/status/leader", "OPTIONS,GET"),
        ("GET", "/v1/agent/leave", "OPTIONS,PUT"),
        ("GET", "/v1/operator/raft/peer", "OPTIONS,DELETE"),
        ("GET", "/v1/operator/raft/transfer-leader", "OPTIONS,POST"),
        (
            "DELETE",
            "/v1/operator/autopilot/configuration",
            "OPTIONS,GET,PUT",
        ),
        ("POST", "/v1/catalog/service/web", "OPTIONS,GET"),
        ("PUT", "/v1/agent/metrics", "OPTIONS,GET"),
    ];
    for (method, target, allow) in cases {
        let r = http(h.addr, method, target, b"").await;
        assert_eq!(r.status, 405, "{method} {target}");
        assert_eq!(r.header("Allow"), Some(allow), "{method} {target}");
        if method != "HEAD" {
            assert_eq!(r.text(), format!("method {method} not allowed"));
        }
    }
    for (target, allow) in [
        ("/v1/kv/k", "OPTIONS,GET,PUT,DELETE"),
        ("/v1/catalog/register", "OPTIONS,PUT"),
    ] {
        let r = http(h.addr, "OPTIONS", target, b"").await;
        assert_eq!((r.status, r.body.len()), (200, 0), "{target}");
        assert_eq!(r.header("Allow"), Some(allow));
    }
    assert_eq!(h.request_count(), 0);
}

/// go-cleanhttp's `PrintablePathCheckHandler`, which agent/http.go wraps
/// around the whole mux: a path whose decoded form holds a character Go's
/// `unicode.IsPrint` refuses is a 400 with an empty body, for every method,
/// before any routing; printable non-ASCII keys pass.
#[tokio::test]
async fn paths_with_non_printable_characters_are_400_with_no_body() {
    let h = Harness::start().await;
    for bad in [
        "%0A",
        "%00",
        "%09",
        "%0D",
        "%1B",
        "%7F",
        "%C2%85",
        "%C2%A0",
        "%E2%80%8B",
        "%EF%BB%BF",
        "%E2%80%A8",
        "%EE%80%80",
    ] {
        for method in ["GET", "PUT", "DELETE", "POST"] {
            let r = http(h.addr, method, &format!("/v1/kv/a{bad}b"), b"v").await;
            assert_eq!((r.status, r.body.len()), (400, 0), "{method} {bad}");
        }
        // Anywhere in the path, unknown routes included.
        let r = h.get(&format!("/v1/nope{bad}")).await;
        assert_eq!((r.status, r.body.len()), (400, 0), "{bad}");
    }
    assert_eq!(h.request_count(), 0);
    assert_eq!(
        h.put("/v1/kv/caf%C3%A9%20au%20lait", b"v").await.json(),
        true
    );
    assert_eq!(h.put("/v1/kv/%E6%97%A5%E6%9C%AC", b"v").await.json(), true);
    let keys = h.get("/v1/kv/?keys").await.json();
    assert_eq!(keys, serde_json::json!(["café au lait", "日本"]));
}

/// Go's `ServeMux` (net/http `cleanPath`, Go 1.22+ on the path as sent),
/// which Consul's router is: `//`, `.` and `..` elements are a 301 to the
/// cleaned path with the query kept, for every method; the handler never
/// sees them. Encoded slashes are left as sent.
#[tokio::test]
async fn dot_segments_and_double_slashes_are_redirected_to_the_clean_path() {
    let h = Harness::start().await;
    for (target, location) in [
        ("/v1/kv//a", "/v1/kv/a"),
        ("/v1//kv/a?recurse", "/v1/kv/a?recurse"),
        ("/v1/kv/./a", "/v1/kv/a"),
        ("/v1/kv/a/../b?cas=1&flags=2", "/v1/kv/b?cas=1&flags=2"),
        ("/v1/kv/..", "/v1"),
        ("/v1/kv/a/./", "/v1/kv/a/"),
        ("//v1/status/leader", "/v1/status/leader"),
        ("/v1/nope/../kv/x", "/v1/kv/x"),
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let r = http(h.addr, method, target, b"v").await;
            assert_eq!(r.status, 301, "{method} {target}");
            assert_eq!(r.header("Location"), Some(location), "{method} {target}");
            assert_eq!(r.body.is_empty(), method != "GET", "{method} {target}");
        }
    }
    assert_eq!(h.request_count(), 0);
    // Not cleaned: the encoded form reaches the key checks.
    let r = h.get("/v1/kv/a%2F..%2Fb").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "key contains invalid path traversal sequence")
    );
}

/// Go's `ServeMux` behind Consul's router (net/http server.go
/// `redirectToPathSlash`; agent/http.go registers `/v1/kv/` and the other
/// subtrees with a trailing slash): a subtree root named without its slash
/// is a 301 to the slashed path, the query kept, with Go's small HTML body
/// for a GET and none for a PUT; the agent sees no request.
#[tokio::test]
async fn a_subtree_root_without_its_slash_is_redirected() {
    let h = Harness::start().await;
    let r = h.get("/v1/kv?recurse=1&keys").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/v1/kv/?recurse=1&keys"));
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "<a href=\"/v1/kv/?recurse=1&amp;keys\">Moved Permanently</a>.\n\n"
    );
    let r = http(h.addr, "PUT", "/v1/kv", b"x").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/v1/kv/"));
    assert!(r.body.is_empty());
    for root in ["/v1/catalog/service", "/v1/health/state", "/v1/agent/join"] {
        let r = h.get(root).await;
        assert_eq!(r.status, 301, "{root}");
        assert_eq!(r.header("Location"), Some(format!("{root}/").as_str()));
    }
    assert!(h.script.lock().unwrap().requests.is_empty());
}

/// Consul's key checks: a leading `/` and path traversal (plain, with a
/// backslash, or still percent-encoded) are 400 with Consul's text, for
/// every method, and never reach the agent; ordinary keys with dots and
/// file-like names pass.
#[tokio::test]
async fn keys_with_path_traversal_or_a_leading_slash_are_400() {
    let h = Harness::start().await;
    let cases = [
        ("/v1/kv/%2Fetc", "key must not begin with a '/'"),
        (
            "/v1/kv/a/..%2Fb",
            "key contains invalid path traversal sequence",
        ),
        (
            "/v1/kv/a/..%5Cb",
            "key contains invalid path traversal sequence",
        ),
        (
            "/v1/kv/a/%252e%252e%252fb",
            "key contains encoded path traversal sequence",
        ),
        (
            "/v1/kv/%2E%2E",
            "key contains path traversal sequence after normalization",
        ),
    ];
    for (target, why) in cases {
        for r in [
            h.get(target).await,
            h.put(target, b"v").await,
            h.delete(target).await,
        ] {
            assert_eq!((r.status, r.text().as_str()), (400, why), "{target}");
        }
    }
    assert_eq!(h.request_count(), 0);
    assert_eq!(h.put("/v1/kv/app/config.json", b"{}").await.json(), true);
    assert_eq!(h.put("/v1/kv/a..b/.c", b"v").await.json(), true);
}

// ---------------------------------------------------------------- autopilot

fn health(healthy_b: bool) -> HealthReply {
    let server = |id, name: &str, leader, voter, healthy, contact| ServerHealthReply {
        id,
        name: NodeName(name.into()),
        address: format!("10.0.0.{}:8300", id.0),
        serf_status: GossipStatus::Alive,
        leader,
        voter,
        last_contact: contact,
        last_term: Term(3),
        last_index: LogIndex(17),
        healthy,
        stable_for: Duration::from_secs(5),
    };
    HealthReply {
        healthy: healthy_b,
        failure_tolerance: 0,
        optimistic_failure_tolerance: 0,
        servers: vec![
            server(NODE_A, "a", true, true, true, Some(Duration::ZERO)),
            server(
                NODE_B,
                "b",
                false,
                false,
                healthy_b,
                if healthy_b {
                    Some(Duration::from_micros(27_291))
                } else {
                    None
                },
            ),
        ],
    }
}

/// Consul's `OperatorServerHealth` (agent/operator_endpoint.go): the
/// leader's health with api `OperatorHealthReply`'s field names, 200 when
/// healthy and 429 with the same body when not; always asked of the leader.
#[tokio::test]
async fn autopilot_health_is_200_when_healthy_and_429_when_not() {
    let h = Harness::start().await;
    h.script.lock().unwrap().health = health(true);
    let r = h.get("/v1/operator/autopilot/health?stale").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let req = h.last_request();
    assert_eq!(req.op, Op::AutopilotHealth);
    assert_eq!(
        req.read_mode,
        ReadMode::Default,
        "the leader answers, never stale"
    );
    let j = r.json();
    assert_eq!(j["Healthy"], true);
    assert_eq!(j["FailureTolerance"], 0);
    let s = &j["Servers"][1];
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "ID",
        "Name",
        "Address",
        "SerfStatus",
        "Version",
        "Leader",
        "LastContact",
        "LastTerm",
        "LastIndex",
        "Healthy",
        "Voter",
        "StableSince",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(s["ID"], NODE_B.to_string());
    assert_eq!(s["SerfStatus"], "alive");
    assert_eq!(s["LastContact"], "27.291ms");
    assert_eq!(s["Voter"], false);
    assert_eq!(j["Servers"][0]["LastContact"], "0s");
    let since = s["StableSince"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.len() >= 20, "{since}");

    h.script.lock().unwrap().health = health(false);
    let r = h.get("/v1/operator/autopilot/health").await;
    assert_eq!(r.status, 429);
    let j = r.json();
    assert_eq!(j["Healthy"], false);
    assert_eq!(j["Servers"][1]["Healthy"], false);
    assert_eq!(j["Servers"][1]["LastContact"], "-1ns");
}

/// api `AutopilotState` as Consul's CE fills it: servers by ID with their
/// status, the leader and the voters.
#[tokio::test]
async fn autopilot_state_names_the_leader_and_the_voters() {
    let h = Harness::start().await;
    h.script.lock().unwrap().health = health(true);
    let r = h.get("/v1/operator/autopilot/state").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["Leader"], NODE_A.to_string());
    assert_eq!(j["Voters"], serde_json::json!([NODE_A.to_string()]));
    let b = &j["Servers"][NODE_B.to_string()];
    assert_eq!(b["Status"], "non-voter");
    assert_eq!(b["NodeStatus"], "alive");
    assert_eq!(b["NodeType"], "voter");
    assert_eq!(b["Meta"], serde_json::json!({}));
    assert_eq!(j["Servers"][NODE_A.to_string()]["Status"], "leader");
}

/// api `AutopilotConfiguration` (agent/operator_endpoint.go
/// `OperatorAutopilotConfiguration`): the stored configuration with its
/// indexes; `PUT` sends the whole body (a missing key is zero, as Go
/// decodes it) and answers `true`, or with `?cas=` whether it held; a bad
/// body or cas is a 400 in Consul's words.
#[tokio::test]
async fn autopilot_configuration_has_consuls_fields_and_a_cas_put() {
    let h = Harness::start().await;
    let r = h.get("/v1/operator/autopilot/configuration").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({
            "CleanupDeadServers": true,
            "LastContactThreshold": "200ms",
            "MaxTrailingLogs": 250,
            "MinQuorum": 0,
            "ServerStabilizationTime": "10s",
            "RedundancyZoneTag": "",
            "DisableUpgradeMigration": false,
            "UpgradeVersionTag": "",
            "CreateIndex": 0,
            "ModifyIndex": 0
        })
    );
    let body = br#"{"CleanupDeadServers": false, "LastContactThreshold": "300ms",
                    "MaxTrailingLogs": 100, "ServerStabilizationTime": "20s"}"#;
    let r = h.put("/v1/operator/autopilot/configuration", body).await;
    assert_eq!((r.status, r.text().trim()), (200, "true"));
    let sent = h.script.lock().unwrap().requests.last().cloned().unwrap();
    let Op::AutopilotSetConfig { config, cas } = sent.op else {
        panic!("sent {:?}", sent.op);
    };
    assert_eq!(cas, None);
    assert!(!config.cleanup_dead_servers);
    assert_eq!(config.last_contact_threshold, Duration::from_millis(300));
    assert_eq!(config.max_trailing_logs, 100);
    let r = h.get("/v1/operator/autopilot/configuration").await;
    let j = r.json();
    assert_eq!(j["ServerStabilizationTime"], "20s");
    let modify = j["ModifyIndex"].as_u64().unwrap();
    assert!(modify > 0);

    let stale = format!("/v1/operator/autopilot/configuration?cas={}", modify + 1);
    let r = h.put(&stale, body).await;
    assert_eq!((r.status, r.text().trim()), (200, "false"));
    let fresh = format!("/v1/operator/autopilot/configuration?cas={modify}");
    let r = h.put(&fresh, body).await;
    assert_eq!((r.status, r.text().trim()), (200, "true"));

    let r = h
        .put("/v1/operator/autopilot/configuration?cas=x", body)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text().starts_with("Error parsing cas value: "),
        "{}",
        r.text()
    );
    let r = h
        .put(
            "/v1/operator/autopilot/configuration",
            b"{\"MinQuorum\": true}",
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .starts_with("Error parsing autopilot config: MinQuorum"),
        "{}",
        r.text()
    );
}

// ---------------------------------------------------------------- issue 10: Consul's details

/// agent/http.go `parseConsistency`: a positive `?max_stale` makes the read
/// stale (and conflicts with `?consistent`); a bad one is 400 `Invalid
/// max_stale value "x"`. agent/catalog_endpoint.go `RETRY_ONCE`: a stale
/// catalog read whose server's last contact (42 ms here) is older than
/// `max_stale` is asked again as a default read, answered with the
/// leader's meta; a newer one is kept. Consul's KV endpoint has no retry.
#[tokio::test]
async fn max_stale_retries_an_old_stale_catalog_read_on_the_leader() {
    let h = Harness::start().await;
    let r = h.get("/v1/catalog/nodes?max_stale=10ms").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    let modes: Vec<ReadMode> = h
        .script
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| r.read_mode)
        .collect();
    assert_eq!(modes, [ReadMode::Stale, ReadMode::Default]);

    // At the edge: 42 ms is not older than 42 ms.
    for fresh in ["42ms", "1m"] {
        let before = h.request_count();
        let r = h.get(&format!("/v1/catalog/nodes?max_stale={fresh}")).await;
        assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("stale"));
        assert_eq!(h.request_count(), before + 1, "{fresh}");
        assert_eq!(h.last_request().read_mode, ReadMode::Stale);
    }
    let before = h.request_count();
    let r = h.get("/v1/catalog/nodes?max_stale=41ms").await;
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(h.request_count(), before + 2);

    // KV: stale, never retried.
    h.put("/v1/kv/k", b"v").await;
    let before = h.request_count();
    let r = h.get("/v1/kv/k?max_stale=1ns").await;
    assert_eq!(r.status, 200);
    assert_eq!(h.request_count(), before + 1);
    assert_eq!(h.last_request().read_mode, ReadMode::Stale);

    // Zero or negative: no effect.
    h.get("/v1/kv/k?max_stale=0s").await;
    assert_eq!(h.last_request().read_mode, ReadMode::Default);
    h.get("/v1/kv/k?max_stale=-1s").await;
    assert_eq!(h.last_request().read_mode, ReadMode::Default);

    let before = h.request_count();
    let r = h.get("/v1/kv/k?max_stale=soon").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Invalid max_stale value \"soon\"")
    );
    let r = h.get("/v1/catalog/nodes?max_stale=1s&consistent").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics."
        )
    );
    assert_eq!(h.request_count(), before);
}

/// Query-meta headers only where Consul's handlers call `setMeta`: KV and
/// catalog reads have them; status leader and peers, the Raft configuration
/// and the autopilot configuration return the RPC's reply without them.
#[tokio::test]
async fn meta_headers_only_where_consul_sends_them() {
    let h = Harness::start().await;
    h.get("/v1/catalog/nodes").await.assert_meta();
    h.get("/v1/kv/missing").await.assert_meta();
    for target in [
        "/v1/status/leader",
        "/v1/status/peers",
        "/v1/operator/raft/configuration",
        "/v1/operator/autopilot/configuration",
    ] {
        let r = h.get(target).await;
        assert_eq!(r.status, 200, "{target}");
        r.assert_no_meta();
    }
}

/// `POST /v1/operator/raft/transfer-leader` (agent/operator_endpoint.go
/// `OperatorRaftTransferLeader`): `{"Success":true}`, the id passed on; an
/// id that is no server's UUID is Consul's not-found error.
#[tokio::test]
async fn transfer_leader_passes_the_id_and_answers_success() {
    let h = Harness::start().await;
    let r = http(h.addr, "POST", "/v1/operator/raft/transfer-leader", b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"Success": true}));
    assert_eq!(h.last_request().op, Op::RaftTransferLeadership { to: None });
    let r = http(
        h.addr,
        "POST",
        &format!("/v1/operator/raft/transfer-leader?id={NODE_B}"),
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.last_request().op,
        Op::RaftTransferLeadership { to: Some(NODE_B) }
    );
    let before = h.request_count();
    let r = http(
        h.addr,
        "POST",
        "/v1/operator/raft/transfer-leader?id=s2",
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "id \"s2\" was not found in the Raft configuration")
    );
    assert_eq!(h.request_count(), before);
}

/// `/v1/agent/metrics` (agent/agent_endpoint.go `AgentMetrics`):
/// go-metrics' JSON summary, and `?format=prometheus` in the text format
/// 0.0.4; every request to an endpoint is timed as
/// `consul.http.<METHOD>.<pattern>` (agent/http.go `handleFuncMetrics`).
#[tokio::test]
async fn agent_metrics_have_go_metrics_json_and_prometheus_text() {
    let h = Harness::start().await;
    h.put("/v1/kv/a", b"1").await;
    h.get("/v1/kv/a").await;
    h.get("/v1/status/leader").await;
    http(h.addr, "POST", "/v1/kv/a", b"").await;
    h.get("/v1/nope").await;
    let r = h.get("/v1/agent/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    // The fields in go-metrics' order.
    let text = r.text();
    let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
    assert!(at("Timestamp") < at("Gauges"), "{text}");
    assert!(at("Gauges") < at("Points") && at("Points") < at("Counters"));
    assert!(at("Counters") < at("Samples") && at("Samples") < usize::MAX);
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), 5);
    assert!(j["Timestamp"].as_str().unwrap().ends_with(" +0000 UTC"));
    let samples = j["Samples"].as_array().unwrap();
    let names: Vec<&str> = samples
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    for name in [
        "consul.http.PUT.v1.kv._",
        "consul.http.GET.v1.kv._",
        "consul.http.GET.v1.status.leader",
        "consul.http.POST.v1.kv._",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("nope")));
    let get = samples
        .iter()
        .find(|s| s["Name"] == "consul.http.GET.v1.kv._")
        .unwrap();
    for field in [
        "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels",
    ] {
        assert!(get.get(field).is_some(), "{field}");
    }
    assert_eq!(get["Count"], 1);

    let r = h.get("/v1/agent/metrics?format=prometheus").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let parsed = tern::metrics::parse_prometheus(&text).unwrap();
    assert!(
        text.contains("# TYPE consul_http_GET_v1_kv__ summary\n"),
        "{text}"
    );
    // The JSON read above is itself timed.
    assert!(parsed.contains(&("consul_http_GET_v1_agent_metrics_count".into(), 1.0)));
    // `consul.http.PUT.v1.kv._`: the `_` part and the dots all become `_`.
    assert!(parsed.contains(&("consul_http_PUT_v1_kv___count".into(), 1.0)));
}

//! A simulated local agent: the core's [`LocalAgent`] (the daemon's
//! `io-tokio/src/agent/local.rs` drives the same one) on madsim time, its
//! catalog reads and writes sent through a [`ClientAgent`] as a client
//! agent's are through its `RpcClient`, with the request and answer
//! handling the daemon uses (`tern_core::local::{catalog_reads,
//! catalog_input, write_op, write_result}`).
//!
//! What differs from the daemon, and why:
//! - **Probes** do not reach a real service: an HTTP or TCP probe takes a
//!   few simulated milliseconds and answers what the scenario's oracle says
//!   the probed service's health is.
//! - **Persistence** is not simulated: the agent's definitions are not
//!   written anywhere, and a simulated agent is not restarted (its server
//!   side is, through the world's faults).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tern_core::local::{LocalAction, LocalAgent, LocalConfig, LocalInput, LocalNode, Probe};
use tern_core::rpc::{Op, ReadMode, Request};
use tern_core::{Datacenter, Instant};
use tokio::sync::mpsc;

use crate::client_agent::ClientAgent;
use crate::node::now;

/// What a probed service answers: `(status, output)` for a check ID.
pub type Oracle = Arc<dyn Fn(&str, &Probe) -> (String, String) + Send + Sync>;

/// A handle to one simulated local agent. Cheap to clone.
#[derive(Clone)]
pub struct SimLocalAgent {
    agent: Arc<Mutex<LocalAgent>>,
    tx: mpsc::UnboundedSender<Msg>,
    stopped: Arc<AtomicBool>,
}

enum Msg {
    /// Actions a registration made (the loop performs them).
    Actions(Vec<LocalAction>),
    Done(LocalInput),
}

impl SimLocalAgent {
    /// Start an agent for `node` whose catalog traffic goes through
    /// `client`.
    pub fn spawn(
        client: ClientAgent,
        datacenter: Datacenter,
        node: LocalNode,
        config: LocalConfig,
        seed: u64,
        oracle: Oracle,
    ) -> SimLocalAgent {
        let agent = Arc::new(Mutex::new(LocalAgent::new(
            node.clone(),
            config,
            seed,
            now(),
        )));
        let (tx, rx) = mpsc::unbounded_channel();
        let me = SimLocalAgent {
            agent,
            tx,
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let task = Loop {
            agent: me.clone(),
            client,
            datacenter,
            node: node.name,
            oracle,
        };
        madsim::task::spawn(task.run(rx));
        me
    }

    /// Change the agent as the HTTP API would (register, deregister, set a
    /// TTL status); the actions it causes are performed by the agent's loop.
    pub fn with<R>(
        &self,
        f: impl FnOnce(&mut LocalAgent, Instant, &mut Vec<LocalAction>) -> R,
    ) -> R {
        let mut out = Vec::new();
        let r = f(&mut self.agent.lock().unwrap(), now(), &mut out);
        let _ = self.tx.send(Msg::Actions(out));
        r
    }

    /// Look at the agent's state.
    pub fn read<R>(&self, f: impl FnOnce(&LocalAgent) -> R) -> R {
        f(&self.agent.lock().unwrap())
    }

    /// Stop the loop (at the end of a run).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Actions(Vec::new()));
    }
}

struct Loop {
    agent: SimLocalAgent,
    client: ClientAgent,
    datacenter: Datacenter,
    node: String,
    oracle: Oracle,
}

impl Loop {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut out = Vec::new();
        while !self.agent.stopped.load(Ordering::Relaxed) {
            let deadline = {
                let mut a = self.agent.agent.lock().unwrap();
                a.handle(now(), LocalInput::Tick, &mut out);
                // The agent's indexes must always match its rows (cheap at
                // the simulated agents' sizes).
                assert!(a.indexes_consistent(), "local agent indexes drifted");
                a.poll_timeout()
            };
            for action in out.drain(..) {
                self.perform(action);
            }
            let wait = deadline.map_or(StdDuration::from_secs(3600), |t| {
                StdDuration::from_nanos(t.0.saturating_sub(now().0))
            });
            match madsim::time::timeout(wait, rx.recv()).await {
                Ok(None) => return,
                Ok(Some(Msg::Actions(actions))) => out.extend(actions),
                Ok(Some(Msg::Done(input))) => {
                    self.agent
                        .agent
                        .lock()
                        .unwrap()
                        .handle(now(), input, &mut out);
                }
                Err(_) => {}
            }
        }
    }

    fn request(&self, read_mode: ReadMode, op: tern_core::rpc::CatalogOp) -> Request {
        Request {
            datacenter: self.datacenter.clone(),
            read_mode,
            blocking: None,
            op: Op::Catalog(op),
        }
    }

    fn perform(&self, action: LocalAction) {
        let tx = self.agent.tx.clone();
        match action {
            LocalAction::Probe {
                check_id,
                generation,
                probe,
            } => {
                let oracle = self.oracle.clone();
                madsim::task::spawn(async move {
                    madsim::time::sleep(StdDuration::from_millis(5)).await;
                    let (status, output) = oracle(&check_id, &probe);
                    let _ = tx.send(Msg::Done(LocalInput::ProbeDone {
                        check_id,
                        generation,
                        status,
                        output,
                    }));
                });
            }
            LocalAction::ReadCatalog => {
                let client = self.client.clone();
                let [services, checks] = tern_core::local::catalog_reads(&self.node);
                let (services, checks) = (
                    self.request(ReadMode::Stale, services),
                    self.request(ReadMode::Stale, checks),
                );
                madsim::task::spawn(async move {
                    let s = client.call(services).await;
                    let c = client.call(checks).await;
                    let _ = tx.send(Msg::Done(tern_core::local::catalog_input(s, c)));
                });
            }
            LocalAction::Write { seq, write } => {
                let client = self.client.clone();
                let request = self.request(ReadMode::Default, tern_core::local::write_op(write));
                madsim::task::spawn(async move {
                    let result = tern_core::local::write_result(client.call(request).await);
                    let _ = tx.send(Msg::Done(LocalInput::WriteDone { seq, result }));
                });
            }
            LocalAction::Persist(_)
            | LocalAction::PersistTtl { .. }
            | LocalAction::Forget { .. }
            | LocalAction::Log(_) => {}
        }
    }
}

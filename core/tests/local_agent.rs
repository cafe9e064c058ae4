//! The local agent's decisions on exact action lists: what it writes to the
//! catalog and when, how checks change status, and what it persists
//! (Consul's agent/local/state.go, agent/ae/ae.go, agent/checks/check.go).

use std::collections::BTreeMap;

use tern_core::fsm::{Check, Node, Service};
use tern_core::local::{
    aggregate, scale_factor, CatalogWrite, CheckDef, CheckKind, LocalAction, LocalAgent,
    LocalConfig, LocalError, LocalInput, LocalLog, LocalNode, Persisted, Probe, ServiceDef,
};
use tern_core::{Duration, Instant};

const S: u64 = 1_000_000_000;

fn node() -> LocalNode {
    LocalNode {
        name: "n1".into(),
        id: String::new(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        meta: BTreeMap::new(),
        tagged_addresses: BTreeMap::new(),
    }
}

fn service(id: &str, checks: Vec<CheckDef>) -> ServiceDef {
    let mut def = ServiceDef {
        service: Service {
            id: id.into(),
            service: id.into(),
            port: 80,
            ..Service::default()
        },
        checks,
    };
    def.default_checks();
    def
}

fn ttl_check(ttl_secs: u64) -> CheckDef {
    CheckDef {
        id: String::new(),
        name: String::new(),
        notes: String::new(),
        service_id: String::new(),
        status: String::new(),
        kind: CheckKind::Ttl {
            ttl: Duration::from_secs(ttl_secs),
        },
        deregister_critical_after: None,
    }
}

fn http_check(id: &str, interval_secs: u64) -> CheckDef {
    CheckDef {
        id: id.into(),
        name: id.into(),
        notes: String::new(),
        service_id: String::new(),
        status: String::new(),
        kind: CheckKind::Http {
            url: "http://127.0.0.1:9/health".into(),
            method: String::new(),
            header: BTreeMap::new(),
            body: String::new(),
            interval: Duration::from_secs(interval_secs),
            timeout: Duration::from_secs(10),
            tls_skip_verify: false,
        },
        deregister_critical_after: None,
    }
}

struct Harness {
    agent: LocalAgent,
    now: Instant,
}

impl Drop for Harness {
    /// Whatever a test did, the agent's indexes still match its rows.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.agent.indexes_consistent(), "indexes drifted");
        }
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(LocalConfig::default())
    }

    fn with(config: LocalConfig) -> Harness {
        let now = Instant(1_000 * S);
        Harness {
            agent: LocalAgent::new(node(), config, 7, now),
            now,
        }
    }

    /// Step from timer to timer until `f` holds for an output; when.
    fn until(&mut self, f: impl Fn(&[LocalAction]) -> bool) -> (Instant, Vec<LocalAction>) {
        for _ in 0..1_000 {
            self.now = self.agent.poll_timeout().unwrap();
            let out = self.tick();
            if f(&out) {
                return (self.now, out);
            }
        }
        panic!("never happened");
    }

    fn at(&mut self, secs: u64) {
        self.now = Instant(1_000 * S + secs * S);
    }

    fn input(&mut self, input: LocalInput) -> Vec<LocalAction> {
        let mut out = Vec::new();
        self.agent.handle(self.now, input, &mut out);
        out
    }

    fn tick(&mut self) -> Vec<LocalAction> {
        self.input(LocalInput::Tick)
    }

    /// Acknowledge every write until none is left; the writes in order.
    fn ack_all(&mut self, mut out: Vec<LocalAction>) -> Vec<CatalogWrite> {
        let mut writes = Vec::new();
        loop {
            let Some((seq, write)) = out.iter().find_map(|a| match a {
                LocalAction::Write { seq, write } => Some((*seq, write.clone())),
                _ => None,
            }) else {
                return writes;
            };
            writes.push(write);
            out = self.input(LocalInput::WriteDone {
                seq,
                result: Ok(()),
            });
        }
    }

    fn tick_and_ack(&mut self) -> Vec<CatalogWrite> {
        let out = self.tick();
        self.ack_all(out)
    }

    /// The first full sync against an empty catalog.
    fn first_sync(&mut self) -> Vec<CatalogWrite> {
        let out = self.tick();
        assert_eq!(out, vec![LocalAction::ReadCatalog]);
        let out = self.input(LocalInput::Catalog {
            node: None,
            services: vec![],
            checks: vec![],
        });
        self.ack_all(out)
    }
}

fn registered(w: &CatalogWrite) -> &tern_core::fsm::Register {
    match w {
        CatalogWrite::Register(r) => r,
        other => panic!("expected a registration, got {other:?}"),
    }
}

#[test]
fn a_service_with_a_ttl_check_is_synced_node_first_then_service_with_its_check() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.agent
        .add_service(
            h.now,
            service("web", vec![ttl_check(30)]),
            false,
            true,
            &mut out,
        )
        .unwrap();
    // Persisted with its defaulted check.
    let [LocalAction::Persist(Persisted::Service(def))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(def.checks[0].id, "service:web");
    assert_eq!(def.checks[0].name, "Service 'web' check");

    let writes = h.first_sync();
    assert_eq!(writes.len(), 2, "{writes:?}");
    let node = registered(&writes[0]);
    assert!(node.service.is_none() && node.checks.is_empty());
    assert_eq!(node.address, "10.0.0.1");
    let svc = registered(&writes[1]);
    assert!(svc.skip_node_update, "the node is in sync by then");
    assert_eq!(svc.service.as_ref().unwrap().id, "web");
    assert_eq!(svc.checks.len(), 1);
    assert_eq!(svc.checks[0].check_id, "service:web");
    assert_eq!(svc.checks[0].status, "critical", "a check starts critical");
    assert_eq!(svc.checks[0].service_name, "web");
    assert_eq!(svc.checks[0].kind, "ttl");
    assert!(h.agent.in_sync());
    // Nothing more to write.
    assert!(h.tick().is_empty());
}

#[test]
fn a_ttl_check_expires_critical_with_its_last_output_and_is_written_at_once() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.agent
        .add_service(
            h.now,
            service("web", vec![ttl_check(10)]),
            false,
            false,
            &mut out,
        )
        .unwrap();
    h.first_sync();
    h.at(2);
    let mut out = Vec::new();
    h.agent
        .update_ttl(h.now, "service:web", "passing", "all good", &mut out)
        .unwrap();
    assert!(matches!(&out[0], LocalAction::PersistTtl { status, .. } if status == "passing"));
    let writes = h.tick_and_ack();
    assert_eq!(writes.len(), 1);
    assert_eq!(registered(&writes[0]).checks[0].status, "passing");

    // Renewed at 2 s with a 10 s TTL: still passing at 11.9 s.
    h.now = Instant(1_000 * S + 11 * S + S / 2);
    assert!(h.tick().is_empty());
    assert_eq!(h.agent.check("service:web").unwrap().status, "passing");
    h.at(12);
    let out = h.tick();
    assert!(out.contains(&LocalAction::Log(LocalLog::TtlExpired {
        check_id: "service:web".into()
    })));
    let c = h.agent.check("service:web").unwrap();
    assert_eq!(c.status, "critical");
    assert_eq!(
        c.output,
        "TTL expired (last output before timeout follows): all good"
    );
    let writes = h.ack_all(out);
    assert_eq!(writes.len(), 1, "a status change is written at once");
}

#[test]
fn an_output_only_change_waits_for_half_to_one_and_a_half_check_update_intervals() {
    // No full sync in the way.
    let mut h = Harness::with(LocalConfig {
        ae_interval: Duration::from_secs(3600),
        ..LocalConfig::default()
    });
    let mut out = Vec::new();
    h.agent
        .add_service(
            h.now,
            service("web", vec![ttl_check(3600)]),
            false,
            false,
            &mut out,
        )
        .unwrap();
    h.agent
        .update_ttl(h.now, "service:web", "passing", "v1", &mut out)
        .unwrap();
    h.first_sync();
    h.at(1);
    h.agent
        .update_ttl(h.now, "service:web", "passing", "v2", &mut out)
        .unwrap();
    assert!(h.tick().is_empty(), "an output change alone is deferred");
    // Not before interval/2 (150 s), and by 1.5 intervals.
    let (due, synced) = h.until(|o| o.iter().any(|a| matches!(a, LocalAction::Write { .. })));
    assert!(due.0 > 1_000 * S + 150 * S, "{due:?}");
    assert!(
        due.0 <= 1_000 * S + (1 + 450) * S,
        "deferred past 1.5 intervals: {due:?}"
    );
    let writes = h.ack_all(synced);
    assert_eq!(writes.len(), 1);
    assert_eq!(registered(&writes[0]).checks[0].output, "v2");
    // A status change meanwhile is never deferred.
    h.agent
        .update_ttl(h.now, "service:web", "warning", "v2", &mut out)
        .unwrap();
    assert_eq!(h.tick_and_ack().len(), 1);
}

#[test]
fn a_full_sync_deletes_what_the_agent_does_not_own_but_keeps_consul_and_serf_health() {
    let mut h = Harness::new();
    let out = h.tick();
    assert_eq!(out, vec![LocalAction::ReadCatalog]);
    let remote_node = Node {
        id: String::new(),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        tagged_addresses: None,
        meta: None,
        create_index: 1,
        modify_index: 1,
    };
    let svc = |id: &str| Service {
        id: id.into(),
        service: id.into(),
        ..Service::default()
    };
    let check = |id: &str| Check {
        node: "n1".into(),
        check_id: id.into(),
        name: id.into(),
        status: "passing".into(),
        ..Check::default()
    };
    let out = h.input(LocalInput::Catalog {
        node: Some(remote_node),
        services: vec![svc("consul"), svc("stale")],
        checks: vec![check("serfHealth"), check("orphan")],
    });
    let writes = h.ack_all(out);
    let deregs: Vec<(String, String)> = writes
        .iter()
        .map(|w| match w {
            CatalogWrite::Deregister(d) => (d.service_id.clone(), d.check_id.clone()),
            other => panic!("only deletions expected: {other:?}"),
        })
        .collect();
    assert_eq!(
        deregs,
        vec![
            ("stale".to_owned(), String::new()),
            (String::new(), "orphan".to_owned())
        ]
    );
    assert!(h.agent.in_sync());
    // The next full sync comes 60 s to 120 s later (128 nodes or fewer).
    let (next, _) = h.until(|o| o.contains(&LocalAction::ReadCatalog));
    assert!(
        next.0 >= 1_000 * S + 60 * S && next.0 < 1_000 * S + 120 * S,
        "{next:?}"
    );
}

#[test]
fn a_change_during_a_write_in_flight_is_written_again() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.first_sync();
    h.agent
        .add_service(h.now, service("web", vec![]), false, false, &mut out)
        .unwrap();
    let out = h.tick();
    let [LocalAction::Write { seq, .. }] = out.as_slice() else {
        panic!("{out:?}")
    };
    let seq = *seq;
    // The service changes before the write is acknowledged.
    let mut changed = service("web", vec![]);
    changed.service.port = 81;
    let mut out = Vec::new();
    h.agent
        .add_service(h.now, changed, false, false, &mut out)
        .unwrap();
    assert!(h.tick().is_empty(), "one write in flight at a time");
    let out = h.input(LocalInput::WriteDone {
        seq,
        result: Ok(()),
    });
    let writes = h.ack_all(out);
    assert_eq!(writes.len(), 1);
    assert_eq!(registered(&writes[0]).service.as_ref().unwrap().port, 81);
}

#[test]
fn a_failed_write_is_retried_after_fifteen_seconds_or_more() {
    let mut h = Harness::new();
    h.first_sync();
    let mut out = Vec::new();
    h.agent
        .add_service(h.now, service("web", vec![]), false, false, &mut out)
        .unwrap();
    let out = h.tick();
    let [LocalAction::Write { seq, .. }] = out.as_slice() else {
        panic!("{out:?}")
    };
    let out = h.input(LocalInput::WriteDone {
        seq: *seq,
        result: Err("No cluster leader".into()),
    });
    assert_eq!(
        out,
        vec![LocalAction::Log(LocalLog::SyncFailed {
            full: false,
            error: "No cluster leader".into()
        })]
    );
    h.at(14);
    assert!(h.tick().is_empty());
    let due = h.agent.poll_timeout().unwrap();
    assert!(due.0 >= 1_000 * S + 15 * S && due.0 < 1_000 * S + 30 * S);
    h.now = due;
    assert_eq!(h.tick_and_ack().len(), 1);
    assert!(h.agent.in_sync());
}

#[test]
fn http_probes_start_within_one_interval_and_stale_results_are_dropped() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    h.agent
        .add_check(h.now, http_check("api", 10), false, &mut out)
        .unwrap();
    h.first_sync();
    let due = h.agent.poll_timeout().unwrap();
    assert!(
        due.0 < 1_000 * S + 10 * S,
        "first probe within the interval"
    );
    h.now = due;
    let out = h.tick();
    let Some((generation, probe)) = out.iter().find_map(|a| match a {
        LocalAction::Probe {
            generation, probe, ..
        } => Some((*generation, probe.clone())),
        _ => None,
    }) else {
        panic!("{out:?}")
    };
    assert!(matches!(probe, Probe::Http { ref method, .. } if method == "GET"));
    // No second probe while one runs.
    h.now = Instant(due.0 + 20 * S);
    assert!(!h
        .tick()
        .iter()
        .any(|a| matches!(a, LocalAction::Probe { .. })));
    // A result for another generation changes nothing.
    h.input(LocalInput::ProbeDone {
        check_id: "api".into(),
        generation: generation + 100,
        status: "passing".into(),
        output: "x".into(),
    });
    assert_eq!(h.agent.check("api").unwrap().status, "critical");
    let long = "y".repeat(10_000);
    let out = h.input(LocalInput::ProbeDone {
        check_id: "api".into(),
        generation,
        status: "passing".into(),
        output: long,
    });
    let c = h.agent.check("api").unwrap();
    assert_eq!(c.status, "passing");
    assert_eq!(c.output.len(), 4096, "output is cut to 4 KiB");
    assert!(out.contains(&LocalAction::Log(LocalLog::CheckStatus {
        check_id: "api".into(),
        status: "passing".into()
    })));
    // The next probe one interval after this result.
    let done = h.now;
    let (next, _) = h.until(|o| o.iter().any(|a| matches!(a, LocalAction::Probe { .. })));
    assert_eq!(next, Instant(done.0 + 10 * S));
}

#[test]
fn a_service_critical_past_deregister_critical_service_after_is_removed() {
    let mut h = Harness::new();
    let mut check = ttl_check(5);
    check.deregister_critical_after = Some(Duration::from_secs(1)); // raised to 1 min
    let mut out = Vec::new();
    h.agent
        .add_service(h.now, service("web", vec![check]), false, true, &mut out)
        .unwrap();
    h.first_sync();
    h.at(40);
    h.tick();
    assert!(h.agent.service("web").is_some(), "not before one minute");
    // The reaper looks every 30 s: by 90 s it has acted.
    let mut removed = Vec::new();
    for t in 41..=95 {
        h.at(t);
        removed.extend(h.tick());
    }
    assert!(h.agent.service("web").is_none());
    assert!(removed.contains(&LocalAction::Forget {
        service: true,
        id: "web".into()
    }));
    assert!(removed.iter().any(|a| matches!(
        a,
        LocalAction::Log(LocalLog::Reaped { service_id, .. }) if service_id == "web"
    )));
    let deregistered = removed.iter().any(|a| {
        matches!(a, LocalAction::Write { write: CatalogWrite::Deregister(d), .. } if d.service_id == "web")
    });
    assert!(deregistered, "{removed:?}");
}

#[test]
fn re_registering_keeps_a_checks_status_and_replace_existing_checks_drops_the_rest() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    let mut two = service("web", vec![ttl_check(60), ttl_check(60)]);
    two.default_checks();
    assert_eq!(two.checks[0].id, "service:web:1");
    assert_eq!(two.checks[1].id, "service:web:2");
    h.agent
        .add_service(h.now, two, false, false, &mut out)
        .unwrap();
    h.agent
        .update_ttl(h.now, "service:web:1", "passing", "ok", &mut out)
        .unwrap();
    let mut one = service("web", vec![ttl_check(60)]);
    one.checks[0].id = "service:web:1".into();
    h.agent
        .add_service(h.now, one.clone(), false, false, &mut out)
        .unwrap();
    assert_eq!(h.agent.check("service:web:1").unwrap().status, "passing");
    assert!(
        h.agent.check("service:web:2").is_some(),
        "kept without replace"
    );
    h.agent
        .add_service(h.now, one, true, false, &mut out)
        .unwrap();
    assert!(h.agent.check("service:web:2").is_none());
    assert_eq!(h.agent.service_checks("web").len(), 1);
}

#[test]
fn refusals_name_what_is_wrong_in_consuls_words() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    let mut c = ttl_check(10);
    c.id = "c1".into();
    c.service_id = "nope".into();
    let err = h.agent.add_check(h.now, c, false, &mut out).unwrap_err();
    assert_eq!(err.to_string(), r#"ServiceID "nope" does not exist"#);
    assert_eq!(
        h.agent
            .remove_service("web", &mut out)
            .unwrap_err()
            .to_string(),
        r#"Unknown service ID "web". Ensure that the service ID is passed, not the service name."#
    );
    assert_eq!(
        h.agent
            .update_ttl(h.now, "x", "passing", "", &mut out)
            .unwrap_err(),
        LocalError::UnknownCheck("x".into())
    );
    h.agent
        .add_check(h.now, http_check("api", 10), false, &mut out)
        .unwrap();
    assert_eq!(
        h.agent
            .update_ttl(h.now, "api", "passing", "", &mut out)
            .unwrap_err()
            .to_string(),
        r#"CheckID "api" does not have associated TTL"#
    );
    // A TTL output past 4 KiB is cut with Consul's note.
    let mut t = ttl_check(10);
    t.id = "t".into();
    h.agent.add_check(h.now, t, false, &mut out).unwrap();
    let kept = h
        .agent
        .update_ttl(h.now, "t", "passing", &"z".repeat(5000), &mut out)
        .unwrap();
    assert!(
        kept.ends_with(" ... (captured 4096 of 5000 bytes)"),
        "{kept}"
    );
}

#[test]
fn sync_interval_scales_as_consuls_scale_factor() {
    assert_eq!(scale_factor(1), 1);
    assert_eq!(scale_factor(128), 1);
    assert_eq!(scale_factor(129), 2);
    assert_eq!(scale_factor(256), 2);
    assert_eq!(scale_factor(257), 3);
    assert_eq!(scale_factor(8192), 7);
    // A 1,000-node cluster: the next full sync is spread over 60 s + up to 5 × 60 s.
    let h = Harness::new();
    let mut latest = 0;
    for seed in 0..50 {
        let mut a = LocalAgent::new(node(), LocalConfig::default(), seed, h.now);
        let mut out = Vec::new();
        a.handle(h.now, LocalInput::ClusterSize(1_000), &mut out);
        a.handle(h.now, LocalInput::Tick, &mut out);
        a.handle(
            h.now,
            LocalInput::Catalog {
                node: None,
                services: vec![],
                checks: vec![],
            },
            &mut out,
        );
        // Only the node write is pending; acknowledge it.
        let seq = out
            .iter()
            .find_map(|x| match x {
                LocalAction::Write { seq, .. } => Some(*seq),
                _ => None,
            })
            .unwrap();
        a.handle(
            h.now,
            LocalInput::WriteDone {
                seq,
                result: Ok(()),
            },
            &mut out,
        );
        // Step through timers (the reaper's too) until the next full sync.
        let mut t;
        loop {
            t = a.poll_timeout().unwrap();
            let mut o = Vec::new();
            a.handle(t, LocalInput::Tick, &mut o);
            if o.contains(&LocalAction::ReadCatalog) {
                break;
            }
        }
        let next = t.0 - h.now.0;
        assert!((60 * S..360 * S).contains(&next), "{next}");
        latest = latest.max(next);
    }
    assert!(
        latest > 120 * S,
        "spread past 2 minutes at 1,000 nodes: {latest}"
    );
}

#[test]
fn aggregated_status_is_maintenance_then_critical_then_warning() {
    assert_eq!(aggregate([]), "passing");
    assert_eq!(aggregate(["passing", "warning"]), "warning");
    assert_eq!(aggregate(["warning", "critical", "passing"]), "critical");
    assert_eq!(aggregate(["critical", "maintenance"]), "maintenance");
}

#[test]
fn an_agent_keeps_ten_thousand_services_and_refuses_the_next() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    for i in 0..tern_core::local::LOCAL_SERVICES_MAX {
        h.agent
            .add_service(
                h.now,
                service(&format!("s{i}"), vec![]),
                false,
                false,
                &mut out,
            )
            .unwrap();
    }
    let err = h
        .agent
        .add_service(h.now, service("one-more", vec![]), false, false, &mut out)
        .unwrap_err();
    assert_eq!(
        err,
        LocalError::TooMany("services", tern_core::local::LOCAL_SERVICES_MAX)
    );
    // Replacing one already there is not a new one.
    h.agent
        .add_service(h.now, service("s0", vec![]), false, false, &mut out)
        .unwrap();
    // Room again once one is gone.
    h.agent.remove_service("s1", &mut out).unwrap();
    h.agent
        .add_service(h.now, service("one-more", vec![]), false, false, &mut out)
        .unwrap();
    // All of them reach the catalog, one write each after the node.
    let writes = h.first_sync();
    assert_eq!(writes.len(), 1 + tern_core::local::LOCAL_SERVICES_MAX);
}

#[test]
fn an_agent_keeps_twenty_thousand_checks_and_refuses_the_next() {
    use tern_core::local::LOCAL_CHECKS_MAX;
    let check = |id: &str| CheckDef {
        id: id.into(),
        name: id.into(),
        ..ttl_check(60)
    };
    let mut h = Harness::new();
    let mut out = Vec::new();
    // A service with two checks, then node-level checks up to the limit.
    h.agent
        .add_service(
            h.now,
            service("web", vec![check("web-a"), check("web-b")]),
            false,
            false,
            &mut out,
        )
        .unwrap();
    for i in 2..LOCAL_CHECKS_MAX {
        h.agent
            .add_check(h.now, check(&format!("c{i}")), false, &mut out)
            .unwrap();
    }
    let full = LocalError::TooMany("checks", LOCAL_CHECKS_MAX);
    // One more node check is refused...
    let err = h
        .agent
        .add_check(h.now, check("one-more"), false, &mut out)
        .unwrap_err();
    assert_eq!(err, full);
    // ... and so is a new service that brings a check, and nothing of it
    // is kept.
    let err = h
        .agent
        .add_service(
            h.now,
            service("api", vec![check("api-a")]),
            false,
            false,
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err, full);
    assert!(h.agent.services().all(|s| s.id != "api"));
    // Replacing checks already there adds none.
    h.agent
        .add_check(h.now, check("c2"), false, &mut out)
        .unwrap();
    h.agent
        .add_service(
            h.now,
            service("web", vec![check("web-a"), check("web-b")]),
            false,
            false,
            &mut out,
        )
        .unwrap();
    // Room again once one is gone, and exactly one.
    h.agent.remove_check("c3", &mut out).unwrap();
    h.agent
        .add_check(h.now, check("one-more"), false, &mut out)
        .unwrap();
    let err = h
        .agent
        .add_check(h.now, check("two-more"), false, &mut out)
        .unwrap_err();
    assert_eq!(err, full);
    // All of them reach the catalog: the node, the service with its two
    // checks, then one write per node check.
    let writes = h.first_sync();
    assert_eq!(writes.len(), 1 + 1 + (LOCAL_CHECKS_MAX - 2));
}

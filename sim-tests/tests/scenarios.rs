//! Named scenarios: scripted faults that target one behaviour each. Every
//! scenario runs on several seeds (the seed still draws latency, disk speed,
//! timeouts and the clients' operations) and must pass the scenario's own
//! checks, Raft's safety checks after every step, the liveness phase and the
//! linearizability check.

use sim_tests::{run, Bug, Options, Scenario};

const SEEDS: u64 = 5;

fn passes(s: Scenario) {
    for seed in 0..SEEDS {
        let out = run(Options::from_seed(seed), Some(s));
        assert!(
            out.ok,
            "{} failed on seed {seed}:\n{}\nreplay: {}",
            s.name(),
            out.failures.join("\n"),
            out.replay_command(None, Some(s))
        );
        assert!(
            out.acked_writes > 0,
            "{} did no work on seed {seed}",
            s.name()
        );
    }
}

/// An isolated leader steps down (check-quorum) and the rest elect another.
#[test]
fn leader_isolated() {
    passes(Scenario::LeaderIsolated);
}

/// A minority holding the old leader cannot commit; the majority elects.
#[test]
fn minority_partition() {
    passes(Scenario::MinorityPartition);
}

/// A leader whose followers hear it but cannot answer steps down.
#[test]
fn asymmetric_partition() {
    passes(Scenario::AsymmetricPartition);
}

/// Leaders killed at random points of replication lose no acknowledged write.
#[test]
fn leader_crash_mid_replication() {
    passes(Scenario::LeaderCrashMidReplication);
}

/// Servers (one, or all at once) die between writing and fsyncing; what was
/// not durable is lost, nothing acknowledged is.
#[test]
fn crash_between_append_and_fsync() {
    passes(Scenario::CrashBetweenAppendAndFsync);
}

/// Add a non-voter, promote it and remove a voter while one server is cut off;
/// the cut-off server learns the new configuration after healing.
#[test]
fn membership_add_promote_remove_while_partitioned() {
    passes(Scenario::MembershipWhilePartitioned);
}

/// Removing the leader through the log: it steps down once the removal
/// commits and the others carry on (thesis §4.2.2).
#[test]
fn removing_the_leader() {
    passes(Scenario::RemoveLeader);
}

/// A follower that missed several snapshots' worth of log catches up through
/// InstallSnapshot.
#[test]
fn snapshot_install_to_a_far_behind_follower() {
    passes(Scenario::SnapshotInstall);
}

/// A non-voter added under load is promoted by autopilot (not by the
/// nemesis) with every safety check holding (Consul's
/// `TestAutopilot_PromoteNonVoter`).
#[test]
fn autopilot_promotes_a_new_non_voter_under_load() {
    passes(Scenario::AutopilotPromotes);
}

/// Consistent reads through an isolated old leader never return a value that
/// a write through the new leader already replaced.
#[test]
fn consistent_read_during_a_partition_is_never_stale() {
    passes(Scenario::ConsistentReadDuringPartition);
}

/// ...and the same scenario catches a server that skips ReadIndex.
#[test]
fn consistent_read_scenario_catches_the_stale_read_bug() {
    let caught = (0..40).find(|seed| {
        let mut o = Options::from_seed(*seed);
        o.bug = Some(Bug::StaleRead);
        !run(o, Some(Scenario::ConsistentReadDuringPartition)).ok
    });
    assert!(caught.is_some(), "stale reads went unnoticed in 40 seeds");
}

/// The leader is cut off and every other server is told it is gone (as
/// connection resets would say): they elect another leader early, but only
/// after the old leader's lease, so default reads it serves from its lease
/// never miss the new leader's writes.
#[test]
fn leader_isolated_with_connection_resets() {
    passes(Scenario::LeaderIsolatedWithResets);
}

/// The same scenario catches a follower that, told its leader is gone,
/// helps elect another at once instead of honouring the lease: within the
/// first 160 seeds (it needs a read through the old leader to land in the
/// window; measured: 9 of seeds 0..160, the first at 51, since the leader
/// also writes every gossip member's serfHealth into the catalog, which
/// moved every seed's history; before that, 6 of seeds 0..40, the first at
/// 16), on a seed that passes without the bug.
#[test]
fn planted_bug_hint_skips_lease_is_caught_by_the_resets_scenario() {
    for seed in 0..160 {
        let mut o = Options::from_seed(seed);
        o.bug = Some(Bug::HintSkipsLease);
        if !run(o, Some(Scenario::LeaderIsolatedWithResets)).ok {
            let clean = run(
                Options::from_seed(seed),
                Some(Scenario::LeaderIsolatedWithResets),
            );
            assert!(
                clean.ok,
                "seed {seed} fails without the bug too: {:?}",
                clean.failures
            );
            println!("hint-skips-lease caught by the resets scenario on seed {seed}");
            return;
        }
    }
    panic!("hint-skips-lease was never caught by the resets scenario in 160 seeds");
}

/// The leader leaves as an operator's `tern leave` makes it: leadership moves
/// at once, the server fails fast for its drain time and then stops (the
/// daemon exits), and started again it rejoins as a follower. Mirrors
/// Consul's `TestServer_LeaveLeader` (agent/consul/server_test.go).
#[test]
fn the_leader_leaves_gracefully() {
    passes(Scenario::LeaderLeaves);
}

/// Consul's `TestAutopilot_CleanupDeadServer` (agent/consul/autopilot_test.go)
/// through gossip: a follower dies for good, the LAN pool declares it failed,
/// and autopilot (not an operator) removes it from the configuration.
#[test]
fn autopilot_cleans_up_a_dead_server_gossip_declared_failed() {
    passes(Scenario::CleanupDeadServer);
}

/// Consul's `TestAutopilot_CleanupDeadNonvoter`: a new server joins through
/// gossip as a non-voter and dies before promotion; autopilot removes it.
#[test]
fn autopilot_cleans_up_a_dead_non_voter() {
    passes(Scenario::CleanupDeadNonvoter);
}

/// Consul's `TestServer_Leave` (agent/consul/server_test.go): a follower's
/// leave reaches the leader as gossip `left`; the leader removes it within
/// seconds, every pool shows it `left`, and it stops.
#[test]
fn a_follower_that_leaves_is_removed_through_gossip() {
    passes(Scenario::ServerLeave);
}

/// Servers 4 and 5 join a running 3-server cluster with nothing but gossip:
/// the leader adds each as a non-voter and autopilot promotes both.
#[test]
fn servers_four_and_five_join_through_gossip_only() {
    passes(Scenario::AddServersThroughGossip);
}

/// Gossip encryption: an encrypted cluster runs, converges and serves; a
/// server with another key never becomes a member; one with the key joins
/// and is promoted (issue 11; Consul's `encrypt`).
#[test]
fn encrypted_gossip_converges_and_refuses_another_key() {
    passes(Scenario::EncryptedGossip);
}

/// Consul's `TestAutopilot_RollingUpdate`: every server is replaced by a new
/// one, one at a time, without losing quorum or a write.
#[test]
fn rolling_update_replaces_every_server() {
    passes(Scenario::RollingUpdate);
}

/// Consul #3611 (a rolling update lost quorum because replacements were not
/// promoted to an even voter count): each old server is killed as soon as
/// its replacement is a voter, and quorum holds.
#[test]
fn rolling_update_with_kills_promotes_to_an_even_count() {
    passes(Scenario::RollingUpdate3611);
}

/// Consul #8118 (a server rebooted faster than the stabilization time):
/// every server power-cycled within seconds, one after another, stays a
/// voter and is never removed; the cluster keeps serving.
#[test]
fn servers_rebooted_faster_than_stabilization_stay_voters() {
    passes(Scenario::QuickReboots8118);
}

/// The headline: a rolling restart of every server (leave, then start; it
/// rejoins through gossip and autopilot promotes it) under load from clients
/// that retry as Consul's client agents do, with zero client-visible errors
/// and a linearizable history (measured over seeds 0..20: 16 with zero
/// errors; the other 4 are listed in README and below).
#[test]
fn rolling_restart_under_load_has_no_client_visible_errors() {
    passes(Scenario::RollingRestart);
}

/// Found by the headline scenario (seeds 5, 6, 8, 18, each keeping the
/// failure it found): a write a follower forwarded to the leader was
/// answered "the connection to the leader closed before it answered" (an
/// unknown outcome, which a client may not retry for a write). Three causes,
/// each fixed: a leaving server stopped with its last answers still on the
/// wire (the simulator, like the daemon, now lets them arrive before it
/// counts as gone); a leaving leader whose hand-over failed stopped while
/// still the leader (it now tries again, and its leave waits); a leaving
/// server stopped with requests it had forwarded or proposed unanswered (its
/// leave now waits for them, bounded by `rpc_hold_timeout`).
#[test]
fn rolling_restart_seeds_that_lost_forwarded_writes_are_clean() {
    for seed in [5, 6, 8, 18] {
        let out = run(Options::from_seed(seed), Some(Scenario::RollingRestart));
        assert!(out.ok, "seed {seed}: {:?}", out.failures);
    }
}

/// Seed 14 of the headline scenario still fails: one entry per
/// AppendEntries, one in flight, fsyncs up to 133 ms, 4% loss and 30
/// workload clients beside the client agent's six tasks: more writes than
/// the log can take, so the leader's queue stays full and servers refuse
/// writes as busy; a few calls are refused on every retry for their whole
/// hold. Kept as a regression scenario asserting exactly that one failure,
/// and that it is this overload: every failed call was refused as busy on
/// most of its attempts. Which error a client sees is only its last
/// attempt's, and it has moved with unrelated changes (a forwarded write
/// timing out at the leader, `Server is busy`, and since autopilot samples
/// health right before deciding, 82b08cc, `No cluster leader` from a
/// restarted server the overloaded leader had not yet re-added), so it is
/// not pinned. It flips once the core keeps up (or sheds load fairly)
/// under such a slow log. Until the fix of autopilot's health (a follower
/// a few entries behind a compacted log was reported in term 0, so
/// unhealthy) a restarted server was also not promoted within 30 s here,
/// and on seed 12.
#[test]
fn rolling_restart_seed_14_overloads_a_slow_log() {
    let out = run(Options::from_seed(14), Some(Scenario::RollingRestart));
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert!(
        out.failures[0].starts_with("rolling-restart: ")
            && out.failures[0].contains(
                "client-visible errors (overload: each failed call was refused as busy on most of its attempts), first: "
            ),
        "{:?}",
        out.failures
    );
}

/// Seed 12 of the headline scenario: a restarted server a few entries
/// behind a leader whose log kept only 10 trailing entries was reported in
/// term 0 by autopilot's health (its matched index compacted away), so it
/// flapped unhealthy and was not promoted within 30 s. Autopilot now knows
/// every entry from the leader's no-op on is of its term.
#[test]
fn rolling_restart_seed_12_promotes_a_follower_behind_a_compacted_log() {
    let out = run(Options::from_seed(12), Some(Scenario::RollingRestart));
    assert!(out.ok, "{:?}", out.failures);
}

/// Consul's `TestLeader_ChangeServerID` (agent/consul/leader_test.go): a
/// server with a new node id and an empty disk comes up at a follower's
/// address; the leader replaces the old id with the new one, which
/// autopilot promotes.
#[test]
fn a_new_node_id_at_the_same_address_replaces_the_old_server() {
    passes(Scenario::ChangeServerId);
}

/// Client-side retry across a leader loss (agent/consul/client.go `RPC`,
/// rpc.go `canRetry`): the leader is killed under load through a simulated
/// client agent, which runs the daemon's retry policy (core `rpc::retry`).
/// No read fails; only writes made before the new leader was elected may end
/// with an unknown outcome.
#[test]
fn client_retry_across_a_leader_loss() {
    passes(Scenario::ClientRetryLeaderLoss);
}

/// Consul's `TestRPC_NoLeader_Fail` (agent/consul/rpc_test.go): with no
/// quorum, a call through a client agent is retried until its 7 s hold runs
/// out and then fails with `No cluster leader`, not before.
#[test]
fn no_leader_fails_after_the_hold() {
    passes(Scenario::NoLeaderFail);
}

/// Consul's `TestRPC_NoLeader_Retry`: a leader elected during the hold and
/// the call through the client agent succeeds.
#[test]
fn no_leader_retried_until_a_leader_is_elected() {
    passes(Scenario::NoLeaderRetry);
}

/// A client agent that never retries is caught on every seed tried by the
/// no-leader scenarios and by the headline rolling restart, each of which
/// passes on that seed without the bug.
#[test]
fn planted_bug_client_no_retry_is_caught() {
    for scenario in [
        Scenario::NoLeaderFail,
        Scenario::NoLeaderRetry,
        Scenario::RollingRestart,
    ] {
        let mut o = Options::from_seed(0);
        o.bug = Some(Bug::ClientNoRetry);
        let out = run(o, Some(scenario));
        assert!(
            !out.ok,
            "{} missed client-no-retry on seed 0",
            scenario.name()
        );
        assert!(
            run(Options::from_seed(0), Some(scenario)).ok,
            "{} fails on seed 0 without the bug",
            scenario.name()
        );
    }
}

/// An operator's snapshot restore (`PUT /v1/snapshot`), sent through the
/// log in chunks, with the leader killed halfway: the next leader finishes
/// it (resends are not staged twice; a restore whose staged bytes were lost
/// starts over), every server ends with exactly the restored state, and
/// the next write's index is past the snapshot's (the index offset). No
/// KV clients run (a restore replaces every key their model tracks); the
/// scenario checks the state itself, beside Raft's safety checks. With the
/// offset left out, the first write after the restore trips the KV table's
/// index assertion on every seed.
#[test]
fn snapshot_restore_survives_a_leader_killed_halfway() {
    let s = Scenario::SnapshotRestore;
    for seed in 0..SEEDS {
        let out = run(Options::from_seed(seed), Some(s));
        assert!(
            out.ok,
            "{} failed on seed {seed}:\n{}\nreplay: {}",
            s.name(),
            out.failures.join("\n"),
            out.replay_command(None, Some(s))
        );
    }
}

/// Issue 9: lock clients with sessions contend for one key while servers
/// are isolated and killed (the leader too) and lock clients are cut off;
/// in every seed, never two clients believe they hold the lock at once
/// (`sim-tests/src/locks.rs` defines belief as Consul's `api/lock.go`
/// holder would), the lock changed hands, and some sessions were
/// invalidated under their holders (where the lock delay is needed).
#[test]
fn lock_mutual_exclusion() {
    let (mut held, mut invalidated) = (0, 0);
    for seed in 0..SEEDS {
        let out = run(
            Options::from_seed(seed),
            Some(Scenario::LockMutualExclusion),
        );
        assert!(
            out.ok,
            "lock-mutual-exclusion failed on seed {seed}:\n{}\nreplay: {}",
            out.failures.join("\n"),
            out.replay_command(None, Some(Scenario::LockMutualExclusion))
        );
        assert!(out.lock_beliefs >= 1, "seed {seed}: nobody held the lock");
        held += out.lock_beliefs;
        invalidated += out.lock_invalidated;
    }
    assert!(held >= 10, "the lock changed hands only {held} times");
    assert!(
        invalidated > 0,
        "no session was invalidated under its holder: the lock delay was never needed"
    );
}

/// The planted `lock-delay-ignored` bug (the leader lets a released key be
/// acquired at once after its session was invalidated) breaks mutual
/// exclusion, and the scenario's invariant says so.
#[test]
fn planted_bug_lock_delay_ignored_is_caught_by_the_lock_scenario() {
    for seed in 0..20 {
        let mut o = Options::from_seed(seed);
        o.bug = Some(Bug::LockDelayIgnored);
        let out = run(o, Some(Scenario::LockMutualExclusion));
        if out
            .failures
            .iter()
            .any(|f| f.starts_with("mutual exclusion"))
        {
            println!(
                "caught on seed {seed}: {}",
                out.replay_command(
                    Some(Bug::LockDelayIgnored),
                    Some(Scenario::LockMutualExclusion)
                )
            );
            return;
        }
    }
    panic!("lock-delay-ignored was not caught on seeds 0..20");
}

/// Issue 9, deliverable 3: local agents (the core's `LocalAgent`, driven as
/// the daemon drives it, through simulated client agents) change their
/// services and checks while servers are isolated, killed and partitioned,
/// and an operator changes the catalog behind their backs; after healing,
/// every agent's node in the catalog matches the agent within two full-sync
/// periods (`sim-tests/src/anti_entropy.rs`).
#[test]
fn anti_entropy_converges_after_faults() {
    for seed in 0..SEEDS {
        let out = run(Options::from_seed(seed), Some(Scenario::AntiEntropy));
        assert!(
            out.ok,
            "anti-entropy failed on seed {seed}:\n{}\nreplay: {}",
            out.failures.join("\n"),
            out.replay_command(None, Some(Scenario::AntiEntropy))
        );
        assert!(
            out.ae_changes >= 20,
            "seed {seed}: the agents barely changed"
        );
        assert!(
            out.ae_meddled >= 3,
            "seed {seed}: the operator never meddled"
        );
    }
}

/// The planted `local-full-sync-trusts-flags` bug (a full sync trusts the
/// agent's flags instead of comparing with the catalog) leaves what the
/// operator changed unrepaired, and the scenario's invariant says so.
#[test]
fn planted_bug_local_full_sync_trusts_flags_is_caught() {
    for seed in 0..SEEDS {
        let mut o = Options::from_seed(seed);
        o.bug = Some(Bug::LocalFullSyncTrustsFlags);
        let out = run(o, Some(Scenario::AntiEntropy));
        if out.failures.iter().any(|f| f.starts_with("anti-entropy:")) {
            let clean = run(Options::from_seed(seed), Some(Scenario::AntiEntropy));
            assert!(
                clean.ok,
                "seed {seed} fails without the bug: {:?}",
                clean.failures
            );
            return;
        }
    }
    panic!("local-full-sync-trusts-flags was not caught on seeds 0..{SEEDS}");
}

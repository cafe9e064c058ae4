//! `tern lock PREFIX CHILD...` (Consul's command/lock with api/lock.go):
//! hold the lock `PREFIX/.lock` through a session and run CHILD while
//! holding it; if the lock is lost (the session invalidated, the key taken
//! away), the child is killed.
//!
//! The steps, as Consul's client takes them: create a session (TTL 15 s,
//! behavior release, renewed every half TTL); `PUT ?acquire` the key with
//! Consul's lock flag value; if someone else holds it, wait on a blocking
//! query of the key and try again when it is free (a refused acquire of a
//! free key is the lock delay: wait 5 s); run the child; watch the key
//! with blocking queries while it runs; when it exits, release the key and
//! destroy the session. With `-n` above 1 it is a semaphore of that many
//! holders under PREFIX instead (`semaphore.rs`, Consul's api/semaphore.go).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::client::{encode, Client};
use super::flags::{flag, value, Spec};
use super::{command, fail, Io};

/// Consul's `api.LockFlagValue`: marks a key as a lock's, so other tools
/// (and semaphores) can tell.
pub(crate) const LOCK_FLAG_VALUE: u64 = 0x2ddc_cbc0_58a5_0c18;
/// api/lock.go's defaults.
const SESSION_TTL: &str = "15s";
const LOCK_WAIT: &str = "15s";
const LOCK_RETRY: Duration = Duration::from_secs(5);

pub(crate) const LOCK_USAGE: &str = "\
Usage: tern lock [options] PREFIX CHILD...

  Acquires the lock PREFIX/.lock in the KV store with a session, runs CHILD
  while holding it, and releases it when CHILD exits, as Consul's lock
  command does. If the lock is lost (the session is invalidated: its node
  failed, its TTL ran out), CHILD is killed. Another tern lock (or consul
  lock) on the same PREFIX waits until the lock is free.

      $ tern lock service/leader ./run-as-leader.sh

  -name=NAME          the session's name (default \"Tern lock for PREFIX\")
  -timeout=DURATION   give up if the lock is not acquired in time (default:
                      wait forever)
  -shell              run CHILD through sh -c (default true)
  -child-exit-code    exit 2 if CHILD exits with an error (default: exit 0
                      once CHILD has run)
  -n=1                the number of holders: above 1, a semaphore of that
                      many slots under PREFIX (PREFIX/.lock and one
                      PREFIX/<session> entry per contender)
  -verbose            say what is happening on stderr
  -http-addr=ADDR  -datacenter=DC  -token=T";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(default)]
    session: Option<String>,
    modify_index: u64,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// Go's flag package stops at the first argument that is not a flag: what
/// follows PREFIX is the child's, dashes and all.
fn split_flags<'a>(args: &'a [String], specs: &[Spec]) -> (&'a [String], &'a [String]) {
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            return (&args[..i], &args[i + 1..]);
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let name = a.trim_start_matches('-');
        let (name, has_value) = match name.split_once('=') {
            Some((n, _)) => (n, true),
            None => (name, false),
        };
        let takes_value = specs.iter().any(|s| s.name == name && s.takes_value);
        i += if takes_value && !has_value { 2 } else { 1 };
    }
    let i = i.min(args.len());
    (&args[..i], &args[i..])
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    crate::config::duration::parse_go_nanos(s)
        .filter(|n| *n >= 0)
        .map(|n| Duration::from_nanos(n as u64))
}

pub(crate) fn lock(args: &[String], io: &mut Io) -> i32 {
    let own = [
        value("name"),
        value("timeout"),
        flag("shell"),
        flag("child-exit-code"),
        value("n"),
        flag("verbose"),
        flag("pass-stdin"),
    ];
    let mut specs: Vec<Spec> = own.to_vec();
    specs.extend([
        value("http-addr"),
        value("datacenter"),
        value("token"),
        flag("stale"),
    ]);
    specs.extend(super::client_tls::TLS_FLAGS);
    let (flag_args, rest) = split_flags(args, &specs);
    let (p, client) = match command(flag_args, &own, "lock", io) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (prefix, child) = match rest.split_first() {
        Some((prefix, child)) if !child.is_empty() => (prefix.clone(), child.to_vec()),
        _ => {
            let _ = std::io::Write::write_all(
                io.err,
                format!(
                    "Key prefix and child command must be specified\n\n{}",
                    super::help_of("lock")
                )
                .as_bytes(),
            );
            return 1;
        }
    };
    let limit = match p.number("n") {
        Ok(None) => 1,
        Ok(Some(0)) => return fail(io, "Command limit must be at least one".into()),
        Ok(Some(n)) => n,
        Err(e) => return fail(io, e),
    };
    let shell = match p.last("shell") {
        None => true,
        Some(_) => p.bool("shell").unwrap_or(true),
    };
    let child_exit_code = p.bool("child-exit-code").unwrap_or(false);
    let verbose = p.bool("verbose").unwrap_or(false);
    let timeout = match p.last("timeout") {
        None => None,
        Some(t) => match parse_go_duration(t) {
            Some(d) if !d.is_zero() => Some(d),
            Some(_) => None,
            None => return fail(io, format!("invalid value {t:?} for flag -timeout")),
        },
    };
    let name = p.last("name").map(str::to_string).unwrap_or_else(|| {
        if limit > 1 {
            format!("Tern semaphore for {prefix}")
        } else {
            format!("Tern lock for {prefix}")
        }
    });
    let key = format!("{}/.lock", prefix.trim_end_matches('/'));
    let say = |io: &mut Io, s: &str| {
        if verbose {
            let _ = std::io::Write::write_all(io.err, format!("{s}\n").as_bytes());
        }
    };

    // The session.
    let body = serde_json::json!({
        "Name": name,
        "TTL": SESSION_TTL,
        "Behavior": "release",
    })
    .to_string();
    let session = match client
        .put("/v1/session/create", &[], body.as_bytes())
        .and_then(|r| r.success())
        .and_then(|b| serde_json::from_slice::<Created>(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c.id,
        Err(e) => return fail(io, format!("Lock acquisition failed: {e}")),
    };
    say(io, &format!("Lock: session {session} created"));
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let stop = Arc::clone(&stop);
        let client = client.clone();
        let session = session.clone();
        std::thread::spawn(move || {
            // Renew every half TTL; stop when the lock is let go.
            let half = Duration::from_millis(7500);
            let mut next = Instant::now() + half;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if Instant::now() >= next {
                    let _ = client.put(&format!("/v1/session/renew/{session}"), &[], b"");
                    next = Instant::now() + half;
                }
            }
        })
    };
    let semaphore = (limit > 1).then(|| super::semaphore::Semaphore::new(&prefix, limit, &session));
    let cleanup = |client: &Client, held: bool| {
        stop.store(true, Ordering::SeqCst);
        if let Some(sem) = &semaphore {
            sem.release(client);
        } else if held {
            let _ = client.put(
                &format!("/v1/kv/{}", encode(&key, true)),
                &[
                    ("release", Some(session.as_str())),
                    ("flags", Some(&LOCK_FLAG_VALUE.to_string())),
                ],
                b"",
            );
        }
        let _ = client.put(&format!("/v1/session/destroy/{session}"), &[], b"");
    };

    // Acquire, waiting while someone else holds the lock.
    let started = Instant::now();
    let flags = LOCK_FLAG_VALUE.to_string();
    if let Some(sem) = &semaphore {
        let deadline = timeout.map(|t| started + t);
        let mut said = false;
        let mut waiting = || {
            if verbose && !said {
                let _ = std::io::Write::write_all(
                    io.err,
                    format!("Semaphore: all {limit} slots held; waiting\n").as_bytes(),
                );
                said = true;
            }
        };
        if let Err(e) = sem.acquire(&client, deadline, &mut waiting) {
            cleanup(&client, false);
            let _ = renewer.join();
            return fail(io, format!("Lock acquisition failed: {e}"));
        }
    }
    while semaphore.is_none() {
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            cleanup(&client, false);
            let _ = renewer.join();
            return fail(io, "Lock acquisition failed: timed out".into());
        }
        let r = client.put(
            &format!("/v1/kv/{}", encode(&key, true)),
            &[
                ("acquire", Some(session.as_str())),
                ("flags", Some(flags.as_str())),
            ],
            b"",
        );
        match r.and_then(|r| r.success()) {
            Ok(b) if String::from_utf8_lossy(&b).trim() == "true" => break,
            Ok(_) => {}
            Err(e) => {
                cleanup(&client, false);
                let _ = renewer.join();
                return fail(io, format!("Lock acquisition failed: {e}"));
            }
        }
        // Held by someone else: wait for it to change; free but refused:
        // the lock delay, wait it out.
        match read_entry(&client, &key, None) {
            Ok((Some(e), _)) if e.session.as_deref().is_some_and(|s| !s.is_empty()) => {
                say(io, "Lock: held by another session; waiting");
                let _ = read_entry(&client, &key, Some(e.modify_index));
            }
            Ok(_) => std::thread::sleep(LOCK_RETRY),
            Err(e) => {
                cleanup(&client, false);
                let _ = renewer.join();
                return fail(io, format!("Lock acquisition failed: {e}"));
            }
        }
    }
    say(
        io,
        &if semaphore.is_some() {
            format!("Semaphore: acquired a slot of {limit} under {prefix}")
        } else {
            format!("Lock: acquired {key}")
        },
    );

    // Run the child, watching the lock.
    let mut cmd = if shell {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(child.join(" "));
        c
    } else {
        let mut c = Command::new(&child[0]);
        c.args(&child[1..]);
        c
    };
    if !p.bool("pass-stdin").unwrap_or(false) {
        cmd.stdin(Stdio::null());
    }
    // Its own process group, so that a lost lock stops the child's children
    // too (a shell's `sleep` would otherwise outlive it).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut proc = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            cleanup(&client, true);
            let _ = renewer.join();
            return fail(io, format!("Error running handler: {e}"));
        }
    };
    let lost = Arc::new(AtomicBool::new(false));
    let child_done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let lost = Arc::clone(&lost);
        let child_done = Arc::clone(&child_done);
        let client = client.clone();
        let (key, session) = (key.clone(), session.clone());
        let sem = (limit > 1).then(|| super::semaphore::Semaphore::new(&prefix, limit, &session));
        std::thread::spawn(move || {
            let mut index = None;
            let mut failures = 0;
            while !child_done.load(Ordering::SeqCst) {
                let seen = match &sem {
                    Some(sem) => sem.still_held(&client, index),
                    None => read_entry_waiting(&client, &key, index, "2s").map(|(entry, next)| {
                        let ours = entry
                            .as_ref()
                            .and_then(|e| e.session.as_deref())
                            .is_some_and(|s| s == session);
                        (ours, next)
                    }),
                };
                match seen {
                    Ok((ours, next)) => {
                        failures = 0;
                        if !ours {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        index = next;
                    }
                    // Consul's -monitor-retry: a few errors are tolerated.
                    Err(_) => {
                        failures += 1;
                        if failures > 3 {
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
    };
    let status = loop {
        match proc.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if lost.load(Ordering::SeqCst) {
            let _ = std::io::Write::write_all(io.err, b"Lock lost, killing child\n");
            stop_group(&mut proc);
            child_done.store(true, Ordering::SeqCst);
            let _ = monitor.join();
            cleanup(&client, false);
            let _ = renewer.join();
            return 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child_done.store(true, Ordering::SeqCst);
    let _ = monitor.join();
    cleanup(&client, true);
    let _ = renewer.join();
    say(io, "Lock: released");
    match status {
        Some(s) if !s.success() && child_exit_code => 2,
        Some(_) => 0,
        None => fail(io, "Error waiting for the child".into()),
    }
}

/// SIGTERM to the child's process group; SIGKILL if it is still there 5 s
/// later.
fn stop_group(proc: &mut std::process::Child) {
    let group = format!("-{}", proc.id());
    let signal = |sig: &str| {
        let _ = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("kill -{sig} {group}"))
            .stderr(Stdio::null())
            .status();
    };
    signal("TERM");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = proc.try_wait() {
            // The leader of the group is gone; make sure the rest is too.
            signal("KILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal("KILL");
    let _ = proc.kill();
    let _ = proc.wait();
}

fn read_entry(
    client: &Client,
    key: &str,
    index: Option<u64>,
) -> Result<(Option<Entry>, Option<u64>), String> {
    read_entry_waiting(client, key, index, LOCK_WAIT)
}

/// The key's entry (None if absent) and the index to wait past next.
fn read_entry_waiting(
    client: &Client,
    key: &str,
    index: Option<u64>,
    wait: &str,
) -> Result<(Option<Entry>, Option<u64>), String> {
    let idx = index.map(|i| i.to_string());
    let mut query: Vec<(&str, Option<&str>)> = Vec::new();
    if let Some(i) = &idx {
        query.push(("index", Some(i.as_str())));
        query.push(("wait", Some(wait)));
    }
    let r = client.get(&format!("/v1/kv/{}", encode(key, true)), &query)?;
    match r.status {
        404 => Ok((None, r.index.or(index))),
        200 => {
            let mut entries: Vec<Entry> =
                serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            Ok((entries.pop(), r.index))
        }
        _ => Err(format!(
            "Unexpected response code: {} ({})",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        )),
    }
}

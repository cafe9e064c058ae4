//! `tern lock -n N PREFIX CHILD...`: a semaphore of N holders, as Consul's
//! api/semaphore.go keeps one in the KV store, so `tern lock -n` and
//! `consul lock -n` contend on the same keys.
//!
//! - Each contender writes `PREFIX/<session>` with `?acquire=<session>`
//!   (so it disappears, or loses its session, when the session ends).
//! - `PREFIX/.lock` holds `{"Limit": N, "Holders": {"<session>": true}}`,
//!   changed only with `?cas=<ModifyIndex>`. A contender reads the prefix,
//!   drops holders whose contender entry is gone or has no session (their
//!   session ended), and adds itself if fewer than N remain; otherwise it
//!   waits on a blocking read of the prefix. A `.lock` whose Limit differs
//!   from N is refused: `semaphore limit conflict (lock: L, local: N)`.
//! - A holder holds as long as it is in `Holders`; it leaves by removing
//!   itself (with `?cas`) and deleting its contender entry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::{base64_decode, encode, Client};

/// Consul's `api.SemaphoreFlagValue`.
pub(crate) const SEMAPHORE_FLAG_VALUE: u64 = 0xe0f6_9a2b_aa41_4de0;
/// The semaphore's own key under the prefix (Consul's `DefaultSemaphoreKey`).
const LOCK_KEY: &str = ".lock";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Pair {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    modify_index: u64,
}

/// What `.lock` holds (Consul's `semaphoreLock`).
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct SemaphoreLock {
    limit: u64,
    #[serde(default)]
    holders: BTreeMap<String, bool>,
}

pub(crate) struct Semaphore {
    prefix: String,
    limit: u64,
    session: String,
}

impl Semaphore {
    pub(crate) fn new(prefix: &str, limit: u64, session: &str) -> Semaphore {
        Semaphore {
            prefix: prefix.trim_end_matches('/').to_owned(),
            limit,
            session: session.to_owned(),
        }
    }

    fn lock_key(&self) -> String {
        format!("{}/{LOCK_KEY}", self.prefix)
    }

    fn contender_key(&self) -> String {
        format!("{}/{}", self.prefix, self.session)
    }

    /// Every pair under the prefix and the index to wait past.
    fn read(
        &self,
        client: &Client,
        index: Option<u64>,
        wait: &str,
    ) -> Result<(Vec<Pair>, Option<u64>), String> {
        let idx = index.map(|i| i.to_string());
        let mut query: Vec<(&str, Option<&str>)> = vec![("recurse", None)];
        if let Some(i) = &idx {
            query.push(("index", Some(i.as_str())));
            query.push(("wait", Some(wait)));
        }
        let r = client.get(&format!("/v1/kv/{}/", encode(&self.prefix, true)), &query)?;
        match r.status {
            404 => Ok((Vec::new(), r.index.or(index))),
            200 => Ok((
                serde_json::from_slice(&r.body).map_err(|e| e.to_string())?,
                r.index,
            )),
            _ => Err(format!(
                "Unexpected response code: {} ({})",
                r.status,
                String::from_utf8_lossy(&r.body).trim()
            )),
        }
    }

    /// `.lock` as found (its ModifyIndex, 0 if absent) with dead holders
    /// dropped.
    fn lock_state(&self, pairs: &[Pair]) -> Result<(SemaphoreLock, u64), String> {
        let lock_key = self.lock_key();
        let (mut lock, cas) = match pairs.iter().find(|p| p.key == lock_key) {
            None => (
                SemaphoreLock {
                    limit: self.limit,
                    holders: BTreeMap::new(),
                },
                0,
            ),
            Some(p) => {
                let raw = p
                    .value
                    .as_deref()
                    .and_then(base64_decode)
                    .unwrap_or_default();
                let lock: SemaphoreLock = serde_json::from_slice(&raw)
                    .map_err(|e| format!("failed to decode semaphore lock {lock_key}: {e}"))?;
                (lock, p.modify_index)
            }
        };
        if lock.limit != self.limit {
            return Err(format!(
                "semaphore limit conflict (lock: {}, local: {})",
                lock.limit, self.limit
            ));
        }
        // A holder whose contender entry is gone or has lost its session
        // is dead (Consul's `pruneDeadHolders`).
        let live: Vec<&str> = pairs
            .iter()
            .filter(|p| p.session.as_deref().is_some_and(|s| !s.is_empty()))
            .filter_map(|p| p.key.strip_prefix(&format!("{}/", self.prefix)))
            .collect();
        lock.holders.retain(|h, _| live.contains(&h.as_str()));
        Ok((lock, cas))
    }

    fn write_lock(&self, client: &Client, lock: &SemaphoreLock, cas: u64) -> Result<bool, String> {
        let body = serde_json::to_vec(lock).map_err(|e| e.to_string())?;
        let flags = SEMAPHORE_FLAG_VALUE.to_string();
        let cas = cas.to_string();
        let r = client.put(
            &format!("/v1/kv/{}", encode(&self.lock_key(), true)),
            &[("cas", Some(cas.as_str())), ("flags", Some(flags.as_str()))],
            &body,
        )?;
        let b = r.success()?;
        Ok(String::from_utf8_lossy(&b).trim() == "true")
    }

    /// Take a slot, waiting while all N are held; gives up at `deadline`.
    pub(crate) fn acquire(
        &self,
        client: &Client,
        deadline: Option<Instant>,
        mut waiting: impl FnMut(),
    ) -> Result<(), String> {
        // The contender entry, held by the session.
        let flags = SEMAPHORE_FLAG_VALUE.to_string();
        let r = client.put(
            &format!("/v1/kv/{}", encode(&self.contender_key(), true)),
            &[
                ("acquire", Some(self.session.as_str())),
                ("flags", Some(flags.as_str())),
            ],
            b"",
        )?;
        if String::from_utf8_lossy(&r.success()?).trim() != "true" {
            return Err("failed to make contender entry".into());
        }
        let mut index = None;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err("timed out".into());
            }
            let (pairs, next) = self.read(client, index, "15s")?;
            let (mut lock, cas) = self.lock_state(&pairs)?;
            if lock.holders.contains_key(&self.session) {
                return Ok(());
            }
            if (lock.holders.len() as u64) < self.limit {
                lock.holders.insert(self.session.clone(), true);
                if self.write_lock(client, &lock, cas)? {
                    return Ok(());
                }
                // Someone changed it first: read again at once.
                index = None;
                continue;
            }
            waiting();
            index = next;
        }
    }

    /// Whether this session is still a holder, and the index to wait past
    /// next (a blocking read of the prefix for up to `wait`).
    pub(crate) fn still_held(
        &self,
        client: &Client,
        index: Option<u64>,
    ) -> Result<(bool, Option<u64>), String> {
        let (pairs, next) = self.read(client, index, "2s")?;
        let lock_key = self.lock_key();
        let held = pairs.iter().find(|p| p.key == lock_key).is_some_and(|p| {
            p.value
                .as_deref()
                .and_then(base64_decode)
                .and_then(|raw| serde_json::from_slice::<SemaphoreLock>(&raw).ok())
                .is_some_and(|l| l.holders.contains_key(&self.session))
        });
        Ok((held, next))
    }

    /// Leave: out of `Holders` (with `?cas`, retried), then the contender
    /// entry deleted.
    pub(crate) fn release(&self, client: &Client) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let Ok((pairs, _)) = self.read(client, None, "0s") else {
                break;
            };
            let lock_key = self.lock_key();
            let Some(p) = pairs.iter().find(|p| p.key == lock_key) else {
                break;
            };
            let Some(mut lock) = p
                .value
                .as_deref()
                .and_then(base64_decode)
                .and_then(|raw| serde_json::from_slice::<SemaphoreLock>(&raw).ok())
            else {
                break;
            };
            if lock.holders.remove(&self.session).is_none() {
                break;
            }
            match self.write_lock(client, &lock, p.modify_index) {
                Ok(true) | Err(_) => break,
                Ok(false) => continue,
            }
        }
        let _ = client.delete(
            &format!("/v1/kv/{}", encode(&self.contender_key(), true)),
            &[],
        );
    }
}

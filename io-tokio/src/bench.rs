//! `tern bench kv`: a closed-loop put workload against the HTTP API.
//!
//! N client threads each keep one request in flight (`PUT /v1/kv/...` with a
//! value of the given size) for the given duration, over kept-alive
//! connections; the report is writes/s and latency percentiles. It measures;
//! it asserts nothing.

use std::time::{Duration, Instant};

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub writes: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl BenchReport {
    pub fn writes_per_sec(&self) -> f64 {
        self.writes as f64 / self.seconds.max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writes/s={:.0} writes={} errors={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.writes_per_sec(),
            self.writes,
            self.errors,
            self.p50.as_secs_f64() * 1e3,
            self.p90.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        )
    }
}

/// Which API the workload speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Consul's `PUT /v1/kv/<key>` (Tern).
    Consul,
    /// etcd v3's JSON gateway, `POST /v3/kv/put` (for side-by-side runs).
    Etcd,
}

/// Standard base64 (etcd's JSON gateway wants keys and values in it).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Run the workload against `http_addr` (host:port).
pub fn run_kv(
    http_addr: &str,
    clients: usize,
    duration: Duration,
    value_size: usize,
) -> BenchReport {
    run(Target::Consul, http_addr, clients, duration, value_size)
}

/// Run the workload against `http_addr` speaking `target`'s API.
pub fn run(
    target: Target,
    http_addr: &str,
    clients: usize,
    duration: Duration,
    value_size: usize,
) -> BenchReport {
    let base = if http_addr.starts_with("http://") {
        http_addr.to_string()
    } else {
        format!("http://{http_addr}")
    };
    let value = vec![b'x'; value_size];
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let base = base.clone();
            let value = value.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let key = format!("bench/{c}/{}", i % 1000);
                    let t = Instant::now();
                    let sent = match target {
                        Target::Consul => {
                            agent.put(&format!("{base}/v1/kv/{key}")).send(&value[..])
                        }
                        Target::Etcd => agent.post(&format!("{base}/v3/kv/put")).send(format!(
                            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                            base64(key.as_bytes()),
                            base64(&value)
                        )),
                    };
                    // Read the body to the end so the connection goes back to
                    // the pool and is reused (else every request reconnects).
                    let ok = sent.ok().is_some_and(|mut r| {
                        r.status().as_u16() == 200 && r.body_mut().read_to_vec().is_ok()
                    });
                    if ok {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        if let Ok((l, e)) = t.join() {
            all.extend(l);
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> Duration {
        if all.is_empty() {
            return Duration::ZERO;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i]
    };
    BenchReport {
        writes: all.len() as u64,
        errors,
        seconds,
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
    }
}

/// `tern bench kv --http-addr A --clients N --duration 20s --value-size 256`
pub fn main(args: &[String]) -> i32 {
    let mut http = crate::config::http_addr_from_env(None);
    let mut clients = 1usize;
    let mut duration = Duration::from_secs(10);
    let mut size = 256usize;
    let mut target = Target::Consul;
    if args.first().map(String::as_str) != Some("kv") {
        eprintln!("usage: tern bench kv [--http-addr A] [--clients N] [--duration D] [--value-size B] [--target tern|etcd]");
        return 1;
    }
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.trim_start_matches('-'), Some(v.to_string())),
            None => (a.trim_start_matches('-'), None),
        };
        let value = match inline.or_else(|| it.next().cloned()) {
            Some(v) => v,
            None => {
                eprintln!("{flag}: needs a value");
                return 1;
            }
        };
        let bad = |what: &str| {
            eprintln!("{flag}: {what}, got {value:?}");
            1
        };
        match flag {
            "http-addr" => http = value.trim_start_matches("http://").to_string(),
            "target" => match value.as_str() {
                "tern" | "consul" => target = Target::Consul,
                "etcd" => target = Target::Etcd,
                _ => return bad("must be tern or etcd"),
            },
            "clients" => match value.parse() {
                Ok(n) if n > 0 => clients = n,
                _ => return bad("must be a positive number"),
            },
            "duration" => match parse_duration(&value) {
                Some(d) => duration = d,
                None => return bad("must be a duration like 20s"),
            },
            "value-size" => match value.parse() {
                Ok(n) => size = n,
                _ => return bad("must be a number of bytes"),
            },
            _ => {
                eprintln!("unknown flag -{flag}");
                return 1;
            }
        }
    }
    let r = run(target, &http, clients, duration, size);
    println!(
        "clients={clients} value_size={size} duration_s={:.1} {r}",
        r.seconds
    );
    0
}

fn parse_duration(s: &str) -> Option<Duration> {
    crate::config::duration::parse(s).map(Into::into)
}

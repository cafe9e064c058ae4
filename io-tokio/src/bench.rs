//! `tern bench kv`: a closed-loop put workload against the HTTP API.
//!
//! N clients each keep one request in flight (`PUT /v1/kv/...` with a value of
//! the given size, or etcd's `POST /v3/kv/put`) for the given duration, over
//! kept-alive connections; the report is writes/s and latency percentiles. It
//! measures; it asserts nothing.
//!
//! The load generator shares the machine with the servers it measures, so it
//! has to be cheap, and equally cheap for every target. All clients are tasks
//! on one thread (a current-thread tokio runtime), each owning one TCP
//! connection and speaking a hand-written HTTP/1.1: the address is resolved
//! once, each request goes out in one write, and each response is read into a
//! buffer the client reuses. (A blocking HTTP client on a thread per client
//! spawned a resolver thread per request and burned more CPU than the Tern
//! leader it measured.)
//!
//! With `https://` in `-http-addr` (and `-ca-file`, `-client-cert`,
//! `-client-key` for mutual TLS), each client's connection is TLS (rustls,
//! ring), for Tern's HTTPS API and etcd's `--client-cert-auth` alike; the
//! handshake is made when a connection is dialed, so it is in the first
//! write's latency only.

use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// A client's connection: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS for the workload's connections: the configuration (one for every
/// client) and the name the server's certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

/// A rustls client configuration from the CLI's TLS flags: the CA file to
/// trust, and a certificate and key to present (both or neither); an error
/// names the flag.
pub fn tls_client_config(
    ca_file: &str,
    cert_and_key: Option<(&str, &str)>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |flag: &str, path: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        let v: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("-{flag}: cannot read {path:?}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("-{flag}: {path:?}: {e}"))?;
        if v.is_empty() {
            return Err(format!("-{flag}: {path:?} holds no PEM certificate"));
        }
        Ok(v)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("ca-file", ca_file)? {
        roots
            .add(c)
            .map_err(|e| format!("-ca-file: {ca_file:?}: {e}"))?;
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls: {e}"))?
    .with_root_certificates(roots);
    let mut c = match cert_and_key {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("-client-key: {key:?}: {e}"))?;
            b.with_client_auth_cert(certs("client-cert", cert)?, key_der)
                .map_err(|e| format!("-client-cert: {e}"))?
        }
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(c)
}

/// How long one request (dialing included) may take before it is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed request, so a dead server is not re-dialed in a spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// The most a response's status line and headers (or a chunked body's
/// trailers) may take; a put's answer has a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;
/// The largest response body accepted (Consul answers a put with `true`).
const MAX_BODY: u64 = 16 * 1024 * 1024;
/// The longest chunk-size line, extensions included, in a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The room each socket read gets.
const READ_CHUNK: usize = 8 * 1024;

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub writes: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// Writes that took more than three times the p99.
    pub over_3x_p99: u64,
    /// The slowest writes, slowest first (at most [`SLOWEST_KEPT`]): when
    /// each started, counted from the run's start, and how long it took.
    pub slowest: Vec<(Duration, Duration)>,
    /// When the run started, as wall-clock time (to match `slowest` with
    /// the servers' logs).
    pub started: Option<std::time::SystemTime>,
    /// What the pause probe saw, if one ran: see [`PauseProbe`].
    pub pauses: Option<PauseSummary>,
}

/// The machine's own stalls during a run, and the latencies without them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PauseSummary {
    /// Whether the probe ran at real-time priority (`SCHED_FIFO`), so that
    /// only a machine that runs nothing at all delays it; at normal
    /// priority a busy CPU delays it too, and its pauses say less.
    pub realtime: bool,
    /// Each pause: when it began (from the run's start) and how long it was.
    pub pauses: Vec<(Duration, Duration)>,
    /// The slowest write that overlapped no pause.
    pub max_outside: Duration,
    /// Writes over three times the p99 that overlapped no pause.
    pub over_3x_p99_outside: u64,
}

/// A thread that sleeps [`PROBE_TICK`] at a time and records every wake-up
/// later than [`PROBE_LATE`] as a pause of the machine: when a thread that
/// does nothing but sleep (at real-time priority where the OS allows it)
/// was not run for that long, nothing else on the machine was either, so a
/// write that overlaps such a pause measured the machine, not the server.
/// On this project's bench VM an idle machine shows 60-70 ms pauses a few
/// times a minute (README, "Snapshots and a big state").
struct PauseProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(bool, Vec<(Duration, Duration)>)>,
}

const PROBE_TICK: Duration = Duration::from_millis(1);
const PROBE_LATE: Duration = Duration::from_millis(5);

impl PauseProbe {
    fn start(start: Instant) -> Option<PauseProbe> {
        PauseProbe::start_with(start, std::thread::sleep)
    }

    /// [`PauseProbe::start`] with the sleep to use (the tests make one of
    /// them long, as a machine pause would).
    fn start_with(
        start: Instant,
        mut sleep: impl FnMut(Duration) + Send + 'static,
    ) -> Option<PauseProbe> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pause-probe".into())
            .spawn(move || {
                let realtime = set_realtime();
                let mut pauses = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    sleep(PROBE_TICK);
                    let slept = t0.elapsed();
                    if slept > PROBE_TICK + PROBE_LATE {
                        let began = (t0 + PROBE_TICK).saturating_duration_since(start);
                        pauses.push((began, slept - PROBE_TICK));
                    }
                }
                (realtime, pauses)
            })
            .ok()?;
        Some(PauseProbe { stop, thread })
    }

    fn finish(self) -> Option<(bool, Vec<(Duration, Duration)>)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok()
    }
}

/// Raise the calling thread to `SCHED_FIFO`; false where the OS refuses
/// (not root, no `CAP_SYS_NICE`) or has no such thing.
fn set_realtime() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 50 };
        // SAFETY: a plain system call on this thread with a valid param.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// How many of the slowest writes a report names.
pub const SLOWEST_KEPT: usize = 5;

impl BenchReport {
    pub fn writes_per_sec(&self) -> f64 {
        self.writes as f64 / self.seconds.max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writes/s={:.0} writes={} errors={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} p999_ms={:.2} over_3x_p99={}",
            self.writes_per_sec(),
            self.writes,
            self.errors,
            self.p50.as_secs_f64() * 1e3,
            self.p90.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3,
            self.p999.as_secs_f64() * 1e3,
            self.over_3x_p99,
        )
    }
}

impl BenchReport {
    /// `slowest_ms=45.10@12.345s,...`: the slowest writes with when each
    /// started (seconds from the run's start), and the start as Unix time
    /// in milliseconds, to find them in the servers' logs.
    pub fn slowest_line(&self) -> String {
        let started = self
            .started
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        let list: Vec<String> = self
            .slowest
            .iter()
            .map(|(at, took)| format!("{:.2}@{:.3}s", took.as_secs_f64() * 1e3, at.as_secs_f64()))
            .collect();
        format!("started_unix_ms={started} slowest_ms={}", list.join(","))
    }

    /// `probe=realtime pauses=2 pause_max_ms=61.20 pauses_ms=61.20@3.101s,...
    /// max_outside_pauses_ms=9.80 over_3x_p99_outside_pauses=0`, or `None`
    /// if no probe ran.
    pub fn pauses_line(&self) -> Option<String> {
        let p = self.pauses.as_ref()?;
        let max = p.pauses.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let list: Vec<String> = p
            .pauses
            .iter()
            .map(|(at, d)| format!("{:.2}@{:.3}s", d.as_secs_f64() * 1e3, at.as_secs_f64()))
            .collect();
        Some(format!(
            "probe={} pauses={} pause_max_ms={:.2} pauses_ms={} max_outside_pauses_ms={:.2} over_3x_p99_outside_pauses={}",
            if p.realtime { "realtime" } else { "normal" },
            p.pauses.len(),
            max.as_secs_f64() * 1e3,
            if list.is_empty() { "-".to_string() } else { list.join(",") },
            p.max_outside.as_secs_f64() * 1e3,
            p.over_3x_p99_outside,
        ))
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
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(bytes)
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
    run_with_timeout(
        target,
        http_addr,
        clients,
        duration,
        value_size,
        DEFAULT_KEYS_PER_CLIENT,
        REQUEST_TIMEOUT,
    )
}

/// Keys each client cycles through unless told otherwise: 64 clients write
/// 64k distinct keys.
pub const DEFAULT_KEYS_PER_CLIENT: u64 = 1000;

/// [`run`] with the per-request timeout as a parameter (the tests shorten it).
fn run_with_timeout(
    target: Target,
    http_addr: &str,
    clients: usize,
    duration: Duration,
    value_size: usize,
    keys_per_client: u64,
    request_timeout: Duration,
) -> BenchReport {
    run_live(
        target,
        http_addr,
        clients,
        duration,
        value_size,
        keys_per_client,
        request_timeout,
        None,
        None,
        false,
    )
}

/// [`run_with_timeout`], printing a progress line on `live` every second:
/// the writes of that second, the totals, and the p99 of every write so far
/// (from a histogram whose buckets are within 1/16 of their values).
#[allow(clippy::too_many_arguments)]
fn run_live(
    target: Target,
    http_addr: &str,
    clients: usize,
    duration: Duration,
    value_size: usize,
    keys_per_client: u64,
    request_timeout: Duration,
    mut live: Option<&mut dyn io::Write>,
    tls: Option<TlsClient>,
    probe_pauses: bool,
) -> BenchReport {
    // Every client failed before sending anything.
    let failed = |what: String| {
        eprintln!("bench: {what}");
        BenchReport {
            errors: clients as u64,
            ..BenchReport::default()
        }
    };
    let host = http_addr
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let addr = match resolve(host) {
        Ok(a) => a,
        Err(e) => return failed(format!("resolving {host}: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return failed(format!("starting the runtime: {e}")),
    };
    let value = vec![b'x'; value_size];
    let started = std::time::SystemTime::now();
    let start = Instant::now();
    let probe = if probe_pauses {
        PauseProbe::start(start)
    } else {
        None
    };
    let progress = Arc::new(std::sync::Mutex::new(Progress::default()));
    let workload = Arc::new(Workload {
        target,
        host: host.to_string(),
        addr,
        value_base64: base64(&value),
        value,
        start,
        deadline: start + duration,
        keys_per_client: keys_per_client.max(1),
        request_timeout,
        progress: progress.clone(),
        tls,
    });
    let tally = runtime.block_on(async move {
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            tasks.spawn(client(workload.clone(), c));
        }
        // Tallies are merged once every client is done: merging on this
        // thread while others still wait for their last answer would add
        // the merge to those answers' latencies.
        let mut done_tallies = Vec::with_capacity(clients);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let (mut seconds, mut writes_before) = (0u64, 0u64);
        loop {
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(Ok(t)) => done_tallies.push(t),
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = tick.tick(), if live.is_some() => {
                    seconds += 1;
                    let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
                    if let Some(out) = live.as_deref_mut() {
                        let _ = writeln!(out, "{}", p.line(seconds, writes_before));
                        let _ = out.flush();
                    }
                    writes_before = p.latencies.total;
                }
            }
        }
        let mut all = Tally::default();
        for t in done_tallies {
            all.latencies.extend(t.latencies);
            all.errors += t.errors;
        }
        all
    });
    let seconds = start.elapsed().as_secs_f64();
    let pauses = probe.and_then(PauseProbe::finish);
    let mut r = report(tally, seconds, pauses);
    r.started = Some(started);
    r
}

/// What the clients have done so far, for the live lines.
#[derive(Clone, Debug, Default)]
struct Progress {
    latencies: Histogram,
    errors: u64,
}

impl Progress {
    /// `t=3s writes/s=N writes=N errors=N p99_ms=X`: writes/s is the last
    /// second's, p99 covers every write so far.
    fn line(&self, seconds: u64, writes_before: u64) -> String {
        format!(
            "t={seconds}s writes/s={} writes={} errors={} p99_ms={:.2}",
            self.latencies.total - writes_before,
            self.latencies.total,
            self.errors,
            self.latencies.quantile_us(0.99) as f64 / 1e3
        )
    }
}

/// Latencies in microseconds, counted in buckets: exact below 16 µs, then
/// 16 buckets per power of two, so a bucket's upper edge is within 1/16 of
/// any value in it. Fixed size (16 + 16 * 60 counters), whatever the run.
#[derive(Clone, Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 16 + 16 * 60],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as u64;
        (16 + (exp - 4) * 16 + ((us >> (exp - 4)) & 15)) as usize
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let (exp, sub) = ((i as u128 - 16) / 16 + 4, (i as u128 - 16) % 16);
        u64::try_from(((16 + sub + 1) << (exp - 4)) - 1).unwrap_or(u64::MAX)
    }

    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = Self::bucket(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The upper edge of the bucket holding the `q` quantile (0 if empty).
    fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(self.counts.len() - 1)
    }
}

/// Resolve `host` (host:port) once, before the run. Of several addresses
/// (`localhost` may give `::1` and `127.0.0.1`) the first that accepts a
/// connection is used, so a server listening on one family only is found.
fn resolve(host: &str) -> io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = host.to_socket_addrs()?.collect();
    match addrs.as_slice() {
        [] => Err(io::Error::new(io::ErrorKind::NotFound, "no address")),
        [one] => Ok(*one),
        many => Ok(many
            .iter()
            .copied()
            .find(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
            .unwrap_or(many[0])),
    }
}

/// What every client of one run shares.
struct Workload {
    target: Target,
    /// The `Host` header: the address as given.
    host: String,
    /// Where to connect, resolved once.
    addr: SocketAddr,
    /// The value every put writes.
    value: Vec<u8>,
    /// `value` in base64, for etcd's JSON.
    value_base64: String,
    /// When the run started.
    start: Instant,
    /// When clients stop issuing requests (one already in flight finishes).
    deadline: Instant,
    /// Client `c` writes `bench/c/0` .. `bench/c/(keys_per_client - 1)`, in turn.
    keys_per_client: u64,
    request_timeout: Duration,
    /// Shared with the live lines.
    progress: Arc<std::sync::Mutex<Progress>>,
    /// TLS for every connection, if the address is `https://`.
    tls: Option<TlsClient>,
}

impl Workload {
    /// Client `c`'s request number `i` into `out`: the header and the body in
    /// one buffer, so the request goes out in one write.
    fn request(&self, c: usize, i: u64, out: &mut Vec<u8>) {
        const INFALLIBLE: &str = "writing to a Vec cannot fail";
        out.clear();
        let key = format!("bench/{c}/{}", i % self.keys_per_client);
        let host = &self.host;
        match self.target {
            Target::Consul => {
                let len = self.value.len();
                write!(
                    out,
                    "PUT /v1/kv/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\n\r\n"
                )
                .expect(INFALLIBLE);
                out.extend_from_slice(&self.value);
            }
            Target::Etcd => {
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    base64(key.as_bytes()),
                    self.value_base64
                );
                let len = body.len();
                write!(
                    out,
                    "POST /v3/kv/put HTTP/1.1\r\nHost: {host}\r\n\
                     Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}"
                )
                .expect(INFALLIBLE);
            }
        }
    }
}

/// What one client (or the whole run) saw.
#[derive(Default)]
struct Tally {
    /// One per successful write: when it started (from the run's start)
    /// and how long it took.
    latencies: Vec<(Duration, Duration)>,
    errors: u64,
}

/// One closed-loop client: a request at a time until the deadline, on a
/// connection kept alive across requests and dropped (then re-dialed) after
/// any error, since its state is then unknown.
async fn client(w: Arc<Workload>, c: usize) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    let mut inbox = Inbox::default();
    let mut request = Vec::new();
    let mut i = 0u64;
    while Instant::now() < w.deadline {
        i += 1;
        w.request(c, i, &mut request);
        let t = Instant::now();
        let sent = exchange(w.addr, w.tls.as_ref(), &mut conn, &mut inbox, &request);
        match tokio::time::timeout(w.request_timeout, sent).await {
            Ok(Ok(())) => {
                let took = t.elapsed();
                tally.latencies.push((t.duration_since(w.start), took));
                if let Ok(mut p) = w.progress.lock() {
                    p.latencies.record(took);
                }
            }
            Ok(Err(_)) | Err(_) => {
                tally.errors += 1;
                if let Ok(mut p) = w.progress.lock() {
                    p.errors += 1;
                }
                conn = None;
                let left = w.deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(ERROR_BACKOFF.min(left)).await;
            }
        }
    }
    tally
}

/// Send `request` on `conn`, dialing first if there is none, and read the
/// response: Ok only for a 200 whose body arrived whole. A response that
/// closes the connection leaves `conn` empty, so the next request re-dials.
async fn exchange(
    addr: SocketAddr,
    tls: Option<&TlsClient>,
    conn: &mut Option<Box<dyn Io>>,
    inbox: &mut Inbox,
    request: &[u8],
) -> io::Result<()> {
    let stream = match conn {
        Some(s) => s,
        None => {
            let s = TcpStream::connect(addr).await?;
            // Requests are single writes, and each waits for its answer.
            s.set_nodelay(true)?;
            inbox.clear();
            let s: Box<dyn Io> = match tls {
                None => Box::new(s),
                Some(t) => Box::new(
                    tokio_rustls::TlsConnector::from(t.config.clone())
                        .connect(t.name.clone(), s)
                        .await?,
                ),
            };
            conn.insert(s)
        }
    };
    stream.write_all(request).await?;
    stream.flush().await?;
    if !read_response(inbox, stream).await? {
        *conn = None;
    }
    Ok(())
}

/// The report of a run that took `seconds`; `pauses` from the probe, if
/// one ran (whether it was real-time, and each pause's start and length).
fn report(
    tally: Tally,
    seconds: f64,
    pauses: Option<(bool, Vec<(Duration, Duration)>)>,
) -> BenchReport {
    let mut timed = tally.latencies;
    // Slowest first, the earlier start first among equals.
    timed.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let slowest = timed.iter().take(SLOWEST_KEPT).copied().collect();
    let mut all: Vec<Duration> = timed.iter().map(|(_, took)| *took).collect();
    all.reverse();
    let pct = |p: f64| -> Duration {
        if all.is_empty() {
            return Duration::ZERO;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i]
    };
    let p99 = pct(0.99);
    let pauses = pauses.map(|(realtime, pauses)| {
        // A write overlaps a pause when each began before the other ended.
        let outside = |(at, took): &&(Duration, Duration)| {
            !pauses
                .iter()
                .any(|(p_at, p_len)| *at < *p_at + *p_len && *p_at < *at + *took)
        };
        PauseSummary {
            realtime,
            max_outside: timed
                .iter()
                .find(outside)
                .map(|(_, took)| *took)
                .unwrap_or_default(),
            over_3x_p99_outside: timed
                .iter()
                .take_while(|(_, took)| *took > p99 * 3)
                .filter(outside)
                .count() as u64,
            pauses,
        }
    });
    BenchReport {
        writes: all.len() as u64,
        errors: tally.errors,
        seconds,
        p50: pct(0.50),
        p90: pct(0.90),
        p99,
        p999: pct(0.999),
        max: all.last().copied().unwrap_or_default(),
        over_3x_p99: all.iter().filter(|&&t| t > p99 * 3).count() as u64,
        slowest,
        started: None,
        pauses,
    }
}

// ---------- reading a response ----------
//
// Just enough HTTP/1.1 (RFC 9112) for a put's answer from hyper (Tern) or Go's
// net/http (etcd's gateway): the status line, the headers that frame the body
// (Content-Length, Transfer-Encoding: chunked) or end the connection
// (Connection), and the body itself, which is consumed and dropped. Lines must
// end in CRLF, as both servers write them. Everything is bounded.

/// Read one response to its end. Ok(keep-alive) only for a 200 whose body
/// arrived whole; anything else is an error, after which the caller drops the
/// connection, so the body of a non-200 is never read.
async fn read_response<R: AsyncRead + Unpin>(inbox: &mut Inbox, r: &mut R) -> io::Result<bool> {
    let head = read_head(inbox, r).await?;
    if head.status != 200 {
        return Err(io::Error::other(format!("HTTP status {}", head.status)));
    }
    match head.framing {
        Framing::Length(n) => inbox.skip(r, n).await?,
        Framing::Chunked => skip_chunked(inbox, r).await?,
        Framing::UntilClose => inbox.skip_to_eof(r).await?,
    }
    Ok(head.keep_alive)
}

/// How a response's body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Neither header: the body is whatever comes before the server closes.
    UntilClose,
}

/// A response's status line and headers, as far as the client needs them.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// The connection may carry the next request.
    keep_alive: bool,
}

/// Read the status line and the headers, at most [`MAX_HEAD`] bytes of them.
async fn read_head<R: AsyncRead + Unpin>(inbox: &mut Inbox, r: &mut R) -> io::Result<Head> {
    let mut budget = MAX_HEAD;
    let line = inbox.line(r, budget).await?;
    budget -= line.len() + 2;
    let (status, http10) = parse_status_line(line)?;
    let mut headers = Headers::default();
    loop {
        let line = inbox.line(r, budget).await?;
        if line.is_empty() {
            return headers.finish(status, http10);
        }
        budget -= line.len() + 2;
        headers.add(line)?;
    }
}

/// `HTTP/1.x NNN reason`: the status, and whether the version is 1.0 (whose
/// connections close unless the server says keep-alive).
fn parse_status_line(line: &[u8]) -> io::Result<(u16, bool)> {
    let bad_line = || bad("malformed status line");
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(bad_line)?;
    let (minor, rest) = rest.split_first().ok_or_else(bad_line)?;
    let rest = rest.strip_prefix(b" ").ok_or_else(bad_line)?;
    let (code, reason) = rest.split_at_checked(3).ok_or_else(bad_line)?;
    if !minor.is_ascii_digit()
        || !code.iter().all(u8::is_ascii_digit)
        || !(reason.is_empty() || reason[0] == b' ')
    {
        return Err(bad_line());
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok((status, *minor == b'0'))
}

/// The headers that matter, gathered line by line.
#[derive(Default)]
struct Headers {
    length: Option<u64>,
    /// A Transfer-Encoding header was present...
    transfer_encoding: bool,
    /// ... and its last coding is chunked (else the body cannot be delimited).
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Headers {
    /// Take one `Name: value` line; names are case-insensitive.
    fn add(&mut self, line: &[u8]) -> io::Result<()> {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(bad("folded header line"));
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad("header line without a colon"))?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || name.last().is_some_and(u8::is_ascii_whitespace) {
            return Err(bad("malformed header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_number(value, 10).ok_or_else(|| bad("malformed Content-Length"))?;
            if self.length.is_some_and(|m| m != n) {
                return Err(bad("conflicting Content-Length headers"));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            for coding in tokens(value) {
                self.chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in tokens(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The head, once the blank line after the headers has arrived.
    fn finish(self, status: u16, http10: bool) -> io::Result<Head> {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        let framing = if self.transfer_encoding {
            if !self.chunked {
                return Err(bad("a body not delimited by chunked encoding"));
            }
            Framing::Chunked
        } else if let Some(n) = self.length {
            if n > MAX_BODY {
                return Err(bad("response body too large"));
            }
            Framing::Length(n)
        } else if matches!(status, 100..=199 | 204 | 304) {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        };
        let keep_alive =
            !self.close && (!http10 || self.keep_alive) && framing != Framing::UntilClose;
        Ok(Head {
            status,
            framing,
            keep_alive,
        })
    }
}

/// The non-empty elements of a comma-separated header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A decimal (Content-Length) or hexadecimal (chunk size) number: digits
/// only, no sign, and few enough that it cannot overflow.
fn parse_number(digits: &[u8], radix: u32) -> Option<u64> {
    let ok = |b: &u8| char::from(*b).is_digit(radix);
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(ok) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()
}

/// Consume a chunked body: `size[;ext]` CRLF, data, CRLF, ..., a zero size,
/// then trailer lines up to a blank one. At most [`MAX_BODY`] bytes of data.
async fn skip_chunked<R: AsyncRead + Unpin>(inbox: &mut Inbox, r: &mut R) -> io::Result<()> {
    let mut total = 0u64;
    loop {
        let line = inbox.line(r, MAX_CHUNK_LINE).await?;
        let size = line.split(|b| *b == b';').next().unwrap_or_default();
        let size =
            parse_number(size.trim_ascii(), 16).ok_or_else(|| bad("malformed chunk size"))?;
        if size == 0 {
            break;
        }
        total += size;
        if total > MAX_BODY {
            return Err(bad("response body too large"));
        }
        inbox.skip(r, size).await?;
        if !inbox.line(r, 2).await?.is_empty() {
            return Err(bad("chunk data longer than its size"));
        }
    }
    let mut budget = MAX_HEAD;
    loop {
        let trailer = inbox.line(r, budget).await?;
        if trailer.is_empty() {
            return Ok(());
        }
        budget -= trailer.len() + 2;
    }
}

/// A malformed or oversized response.
fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A connection's receive buffer, kept by its client across requests:
/// `data[pos..]` has been read from the socket but not consumed yet. It holds
/// at most one unfinished line plus one read; bodies pass through.
#[derive(Default)]
struct Inbox {
    data: Vec<u8>,
    pos: usize,
}

impl Inbox {
    fn unread(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    /// Forget everything (a new connection starts clean).
    fn clear(&mut self) {
        self.data.clear();
        self.pos = 0;
    }

    /// Read what the socket has after the unread bytes; 0 at EOF.
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        self.data.drain(..self.pos);
        self.pos = 0;
        self.data.reserve_exact(READ_CHUNK);
        r.read_buf(&mut self.data).await
    }

    /// [`Inbox::fill`] inside a response, where EOF means it was cut short.
    async fn fill_more<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<()> {
        match self.fill(r).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )),
            _ => Ok(()),
        }
    }

    /// Consume one line of at most `limit` bytes, CRLF included, and return
    /// it without the CRLF.
    async fn line<R: AsyncRead + Unpin>(&mut self, r: &mut R, limit: usize) -> io::Result<&[u8]> {
        // Bytes of `unread()` already searched for the LF.
        let mut scanned = 0;
        loop {
            let unread = self.unread();
            if let Some(at) = unread[scanned..].iter().position(|b| *b == b'\n') {
                let lf = scanned + at;
                if lf >= limit {
                    return Err(bad("line too long"));
                }
                if lf == 0 || unread[lf - 1] != b'\r' {
                    return Err(bad("line not ended by CRLF"));
                }
                let start = self.pos;
                self.pos += lf + 1;
                return Ok(&self.data[start..start + lf - 1]);
            }
            scanned = unread.len();
            if scanned >= limit {
                return Err(bad("line too long"));
            }
            self.fill_more(r).await?;
        }
    }

    /// Consume `n` bytes (a body), reading as needed and keeping none.
    async fn skip<R: AsyncRead + Unpin>(&mut self, r: &mut R, mut n: u64) -> io::Result<()> {
        loop {
            let take = n.min(self.unread().len() as u64);
            self.pos += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill_more(r).await?;
        }
    }

    /// Consume everything up to EOF (a body the server ends by closing), at
    /// most [`MAX_BODY`] bytes.
    async fn skip_to_eof<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<()> {
        let mut total = 0u64;
        loop {
            total += self.unread().len() as u64;
            self.pos = self.data.len();
            if total > MAX_BODY {
                return Err(bad("response body too large"));
            }
            if self.fill(r).await? == 0 {
                return Ok(());
            }
        }
    }
}

/// `tern bench kv`'s help.
pub const BENCH_KV_HELP: &str = "\
Usage: tern bench kv [options]

  Runs N clients that each keep one KV put in flight for the given time,
  over kept-alive connections, and reports writes/s and latency
  percentiles. While it runs it prints a line a second on stderr (writes/s
  in that second, p99 so far); the summary goes to stdout.

Command Options

  -http-addr=<addr>        the agent (or etcd) to load (default: the
                           TERN_HTTP_ADDR / CONSUL_HTTP_ADDR / 127.0.0.1:8500)
  -clients=<n>             concurrent clients (1)
  -duration=<dur>          how long to run (10s)
  -value-size=<bytes>      size of each value (256)
  -keys-per-client=<n>     keys each client cycles through (1000)
  -target=<tern|etcd>      speak Consul's KV API or etcd's JSON gateway (tern)
  -ca-file=<file>          with https:// in -http-addr: the CA to trust
  -client-cert=<file>      with https://: the certificate to present (mutual TLS)
  -client-key=<file>       its key
  -tls-server-name=<name>  with https://: the name the server's certificate
                           must carry (default: the address's host)
";

/// `tern bench kv [flags]` (`args` after `kv`): the live lines go to `err`,
/// the summary to `out`; the exit code.
pub fn command(args: &[String], out: &mut dyn io::Write, err: &mut dyn io::Write) -> i32 {
    use crate::cli::flags::{parse, value};
    let specs = [
        value("http-addr"),
        value("clients"),
        value("duration"),
        value("value-size"),
        value("keys-per-client"),
        value("target"),
        value("ca-file"),
        value("client-cert"),
        value("client-key"),
        value("tls-server-name"),
    ];
    let parsed = match parse(args, &specs) {
        Ok(p) if p.help => {
            let _ = out.write_all(BENCH_KV_HELP.as_bytes());
            return 0;
        }
        Ok(p) => p,
        Err(e) => {
            let _ = write!(err, "{e}\n\n{BENCH_KV_HELP}");
            return 1;
        }
    };
    let options = match options_of(&parsed) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    if let Some(extra) = parsed.args.first() {
        let _ = writeln!(err, "unexpected argument {extra:?}");
        return 1;
    }
    let (target, http, clients, duration, size, keys) = options;
    let tls = match tls_of(&parsed, &http) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let r = run_live(
        target,
        &http,
        clients,
        duration,
        size,
        keys,
        REQUEST_TIMEOUT,
        Some(err),
        tls,
        true,
    );
    let _ = writeln!(
        out,
        "clients={clients} value_size={size} duration_s={:.1} {r}",
        r.seconds
    );
    let _ = writeln!(out, "{}", r.slowest_line());
    if let Some(line) = r.pauses_line() {
        let _ = writeln!(out, "{line}");
    }
    0
}

type BenchOptions = (Target, String, usize, Duration, usize, u64);

/// TLS for `bench kv` when `http` is `https://...`: `-ca-file` (required),
/// `-client-cert` and `-client-key` (both or neither), `-tls-server-name`
/// (default: the host of the address).
fn tls_of(p: &crate::cli::flags::Parsed, http: &str) -> Result<Option<TlsClient>, String> {
    let Some(rest) = http.strip_prefix("https://") else {
        if p.last("ca-file").is_some() {
            return Err("-ca-file: give an https:// address with it".into());
        }
        return Ok(None);
    };
    let ca = p
        .last("ca-file")
        .ok_or("-ca-file: an https:// address needs the CA to trust")?;
    let pair = match (p.last("client-cert"), p.last("client-key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("-client-cert and -client-key: give both or neither".into()),
    };
    let config = tls_client_config(ca, pair, &[b"http/1.1"])?;
    let host = rest.trim_end_matches('/');
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let name = p.last("tls-server-name").unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("-tls-server-name: {name:?}: {e}"))?;
    Ok(Some(TlsClient {
        config: Arc::new(config),
        name,
    }))
}

/// The run's settings from the parsed flags; an error names the flag.
fn options_of(p: &crate::cli::flags::Parsed) -> Result<BenchOptions, String> {
    let bad = |flag: &str, what: &str, v: &str| format!("-{flag}: {what}, got {v:?}");
    let http = crate::config::http_addr_from_env(p.last("http-addr"));
    let target = match p.last("target").unwrap_or("tern") {
        "tern" | "consul" => Target::Consul,
        "etcd" => Target::Etcd,
        v => return Err(bad("target", "must be tern or etcd", v)),
    };
    let positive = |flag: &str, default: u64| -> Result<u64, String> {
        match p.last(flag) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(bad(flag, "must be a positive number", v)),
            },
        }
    };
    let clients = positive("clients", 1)? as usize;
    let keys = positive("keys-per-client", DEFAULT_KEYS_PER_CLIENT)?;
    let duration = match p.last("duration") {
        None => Duration::from_secs(10),
        Some(v) => {
            parse_duration(v).ok_or_else(|| bad("duration", "must be a duration like 20s", v))?
        }
    };
    let size = match p.last("value-size") {
        None => 256,
        Some(v) => v
            .parse()
            .map_err(|_| bad("value-size", "must be a number of bytes", v))?,
    };
    Ok((target, http, clients, duration, size, keys))
}

fn parse_duration(s: &str) -> Option<Duration> {
    crate::config::duration::parse(s).map(Into::into)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use ::base64::Engine as _;
    use tokio::io::ReadBuf;

    use super::*;

    /// Every run against a test server is this long.
    const SHORT: Duration = Duration::from_millis(300);

    const OK_LENGTH: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\ntrue";
    const OK_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n\
        2;ext=1\r\ntr\r\n2\r\nue\r\n0\r\nX-Trailer: y\r\n\r\n";

    #[test]
    fn a_report_counts_the_writes_over_three_times_the_p99_and_names_the_slowest() {
        // 1000 writes: 990 of 1 ms, 9 of 2 ms, and one of 50 ms started at 7 s.
        let ms = Duration::from_millis;
        let mut latencies: Vec<(Duration, Duration)> = (0..990).map(|i| (ms(i), ms(1))).collect();
        latencies.extend((0..9).map(|i| (ms(2000 + i), ms(2))));
        latencies.push((ms(7000), ms(50)));
        let r = report(
            Tally {
                latencies,
                errors: 0,
            },
            10.0,
            None,
        );
        assert_eq!(r.pauses_line(), None);
        assert_eq!((r.p50, r.p99, r.p999, r.max), (ms(1), ms(1), ms(2), ms(50)));
        assert_eq!(r.over_3x_p99, 1);
        assert_eq!(r.slowest.len(), SLOWEST_KEPT);
        assert_eq!(r.slowest[0], (ms(7000), ms(50)));
        assert_eq!(
            r.slowest[1],
            (ms(2000), ms(2)),
            "equal latencies: the earlier first"
        );
        assert!(
            r.to_string()
                .ends_with(" max_ms=50.00 p999_ms=2.00 over_3x_p99=1"),
            "{r}"
        );
        assert!(
            r.slowest_line()
                .contains("slowest_ms=50.00@7.000s,2.00@2.000s,"),
            "{}",
            r.slowest_line()
        );
    }

    #[test]
    fn writes_that_overlap_a_machine_pause_are_left_out_of_the_max_outside_pauses() {
        // 1000 writes of 1 ms; one of 50 ms from 7.000 s, during a pause of
        // 40 ms from 7.005 s; one of 9 ms from 3.000 s, next to (not
        // overlapping) a pause from 3.009 s; one of 5 ms ending just where
        // a pause at 5.005 s begins.
        let ms = Duration::from_millis;
        let mut latencies: Vec<(Duration, Duration)> = (0..1000).map(|i| (ms(i), ms(1))).collect();
        latencies.push((ms(7000), ms(50)));
        latencies.push((ms(3000), ms(9)));
        latencies.push((ms(5000), ms(5)));
        let pauses = vec![(ms(3009), ms(20)), (ms(5005), ms(8)), (ms(7005), ms(40))];
        let r = report(
            Tally {
                latencies,
                errors: 0,
            },
            10.0,
            Some((true, pauses.clone())),
        );
        assert_eq!(r.max, ms(50));
        assert_eq!(r.over_3x_p99, 3);
        let p = r.pauses.clone().expect("a probe ran");
        assert_eq!(p.pauses, pauses);
        assert_eq!(p.max_outside, ms(9), "the 50 ms write overlapped a pause");
        assert_eq!(p.over_3x_p99_outside, 2);
        assert_eq!(
            r.pauses_line().unwrap(),
            "probe=realtime pauses=3 pause_max_ms=40.00 \
             pauses_ms=20.00@3.009s,8.00@5.005s,40.00@7.005s \
             max_outside_pauses_ms=9.00 over_3x_p99_outside_pauses=2"
        );
    }

    #[test]
    fn the_probe_records_a_stall_of_its_thread_as_a_pause() {
        // The probe's tenth sleep lasts 40 ms, as if the machine had not
        // run it: that is recorded (as 39 ms, give or take the OS), after
        // the ticks before it. (How many ordinary ticks a busy test
        // machine delays past PROBE_LATE is not for this test to say.)
        let start = Instant::now();
        let mut n = 0;
        let probe = PauseProbe::start_with(start, move |d| {
            n += 1;
            std::thread::sleep(if n == 10 {
                Duration::from_millis(40)
            } else {
                d
            });
        })
        .expect("the probe starts");
        std::thread::sleep(Duration::from_millis(200));
        let (_realtime, pauses) = probe.finish().expect("the probe stops");
        let long: Vec<_> = pauses
            .iter()
            .filter(|(_, len)| *len >= Duration::from_millis(38))
            .collect();
        assert!(!long.is_empty(), "the 40 ms sleep was not seen: {pauses:?}");
        let (at, len) = long[0];
        assert!(*at >= Duration::from_millis(10) && *at + *len <= start.elapsed());
    }

    #[test]
    fn the_histogram_keeps_quantiles_within_a_sixteenth() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.99), 0);
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p99 = h.quantile_us(0.99);
        assert!((9_900..=9_900 + 9_900 / 16).contains(&p99), "{p99}");
        let p50 = h.quantile_us(0.50);
        assert!((5_000..=5_000 + 5_000 / 16).contains(&p50), "{p50}");
        for us in [
            0u64,
            15,
            16,
            17,
            31,
            32,
            33,
            1 << 20,
            u64::MAX >> 4,
            u64::MAX,
        ] {
            let i = Histogram::bucket(us);
            assert!(Histogram::upper(i) >= us, "{us}");
            assert!(i == 0 || Histogram::upper(i - 1) < us, "{us}");
        }
        // An hour fits; anything longer lands in the last bucket.
        h.record(Duration::from_secs(1 << 40));
        assert_eq!(h.total, 10_001);
    }

    // ---------- against tiny servers ----------

    /// A blocking HTTP server on 127.0.0.1:0, a thread per connection. It
    /// reads each request whole (by its Content-Length), records its bytes and
    /// calls `answer`, which writes a response and says whether to keep the
    /// connection open.
    struct Server {
        addr: String,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
        connections: Arc<AtomicUsize>,
    }

    type Answer = dyn Fn(&mut TcpStream) -> io::Result<bool> + Send + Sync;

    impl Server {
        fn start(
            answer: impl Fn(&mut TcpStream) -> io::Result<bool> + Send + Sync + 'static,
        ) -> Server {
            let answer: Arc<Answer> = Arc::new(answer);
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let server = Server {
                addr: listener.local_addr().unwrap().to_string(),
                requests: Arc::default(),
                connections: Arc::default(),
            };
            let (requests, connections) = (server.requests.clone(), server.connections.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (requests, answer) = (requests.clone(), answer.clone());
                    std::thread::spawn(move || {
                        while let Ok(Some(request)) = read_request(&mut stream) {
                            requests.lock().unwrap().push(request);
                            if !matches!(answer(&mut stream), Ok(true)) {
                                break;
                            }
                        }
                    });
                }
            });
            server
        }

        /// Answers every request with `response` and keeps the connection.
        fn canned(response: &'static [u8]) -> Server {
            Server::start(move |s| s.write_all(response).map(|()| true))
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> Vec<Vec<u8>> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// One request as the server saw it, or None at EOF.
    fn read_request(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body_at = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut chunk)? {
                0 => return Ok(None),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8(buf[..body_at].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse().unwrap());
        while buf.len() < body_at + length {
            match stream.read(&mut chunk)? {
                0 => return Ok(None),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(Some(buf))
    }

    #[test]
    fn a_content_length_response_counts_as_a_write_on_one_kept_alive_connection() {
        let server = Server::canned(OK_LENGTH);
        let r = run(Target::Consul, &server.addr, 1, SHORT, 16);
        assert!(r.writes >= 10, "{r}");
        assert_eq!(r.errors, 0, "{r}");
        assert_eq!(server.requests().len() as u64, r.writes);
        assert_eq!(server.connections(), 1, "one connection, kept alive");
    }

    #[test]
    fn a_chunked_response_counts_as_a_write() {
        let server = Server::canned(OK_CHUNKED);
        let r = run(Target::Consul, &server.addr, 2, SHORT, 16);
        assert!(r.writes >= 10, "{r}");
        assert_eq!(r.errors, 0, "{r}");
        assert_eq!(
            server.connections(),
            2,
            "one connection per client, kept alive"
        );
    }

    #[test]
    fn a_500_is_an_error_and_its_connection_is_replaced() {
        let server =
            Server::canned(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror");
        let r = run(Target::Consul, &server.addr, 1, SHORT, 16);
        assert_eq!(r.writes, 0, "{r}");
        assert!(r.errors >= 2, "{r}");
        // Each error drops the connection; the next request dials a new one.
        assert_eq!(server.connections() as u64, r.errors, "{r}");
        // ... after the backoff.
        let most = (SHORT.as_millis() / ERROR_BACKOFF.as_millis()) as u64 + 1;
        assert!(r.errors <= most, "{r}");
    }

    #[test]
    fn connection_close_is_honoured_by_redialing() {
        let server = Server::start(|s| {
            s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ntrue")?;
            Ok(false)
        });
        let r = run(Target::Consul, &server.addr, 1, SHORT, 16);
        assert!(r.writes >= 3, "{r}");
        // Reusing a connection the server closed would fail the request.
        assert_eq!(r.errors, 0, "{r}");
        assert_eq!(
            server.connections() as u64,
            r.writes,
            "a connection per request"
        );
    }

    #[test]
    fn a_dead_server_is_redialed_after_a_backoff_not_in_a_spin() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = run(Target::Consul, &addr.to_string(), 1, SHORT, 16);
        assert_eq!(r.writes, 0, "{r}");
        let most = (SHORT.as_millis() / ERROR_BACKOFF.as_millis()) as u64 + 1;
        assert!((2..=most).contains(&r.errors), "{r}");
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let server = Server::start(|_| {
            std::thread::sleep(Duration::from_secs(2));
            Ok(false)
        });
        let timeout = Duration::from_millis(100);
        let r = run_with_timeout(Target::Consul, &server.addr, 1, SHORT, 16, 3, timeout);
        assert_eq!(r.writes, 0, "{r}");
        assert!(r.errors >= 2, "{r}");
        assert!(
            r.seconds < 1.0,
            "the run ends at its deadline plus a timeout: {r}"
        );
    }

    #[test]
    fn the_consul_request_is_a_well_formed_put() {
        let server = Server::canned(OK_LENGTH);
        let r = run(Target::Consul, &server.addr, 2, SHORT, 16);
        assert!(r.writes >= 4, "{r}");
        let requests = server.requests();
        let addr = &server.addr;
        for c in 0..2 {
            for i in 1..=2 {
                let expected = format!(
                    "PUT /v1/kv/bench/{c}/{i} HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Length: 16\r\n\r\nxxxxxxxxxxxxxxxx"
                );
                assert!(
                    requests.contains(&expected.clone().into_bytes()),
                    "{expected:?} not among {:?}",
                    &requests[..4]
                );
            }
        }
    }

    #[test]
    fn the_etcd_request_is_json_with_base64_key_and_value() {
        let server = Server::canned(OK_LENGTH);
        let r = run(Target::Etcd, &server.addr, 1, SHORT, 10);
        assert!(r.writes >= 1, "{r}");
        let first = server.requests()[0].clone();
        let first = String::from_utf8(first).unwrap();
        let (head, body) = first.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("POST /v3/kv/put HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        assert!(
            headers.contains(&format!("Host: {}", server.addr).as_str()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"Content-Type: application/json"),
            "{headers:?}"
        );
        assert!(
            headers.contains(&format!("Content-Length: {}", body.len()).as_str()),
            "{headers:?}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let decode = |field: &str| {
            let text = json[field].as_str().unwrap();
            String::from_utf8(
                ::base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(decode("key"), "bench/0/1");
        assert_eq!(decode("value"), "x".repeat(10));
    }

    // ---------- the parser, on byte strings ----------

    /// A reader handing out at most `piece` bytes per read, so lines and
    /// bodies are split wherever reads happen to end.
    struct Pieces<'a> {
        bytes: &'a [u8],
        piece: usize,
    }

    impl AsyncRead for Pieces<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.piece.min(buf.remaining()).min(self.bytes.len());
            let (now, later) = self.bytes.split_at(n);
            buf.put_slice(now);
            self.bytes = later;
            Poll::Ready(Ok(()))
        }
    }

    /// A reader handing out `head`, then `a`s forever.
    struct Endless(&'static [u8]);

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining();
            if self.0.is_empty() {
                buf.initialize_unfilled_to(n).fill(b'a');
                buf.advance(n);
            } else {
                let (now, later) = self.0.split_at(n.min(self.0.len()));
                buf.put_slice(now);
                self.0 = later;
            }
            Poll::Ready(Ok(()))
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Read one response from `bytes`, whole and in pieces of 1 and 1000
    /// bytes: every way must agree. Ok(keep-alive) for a complete 200.
    fn parse(bytes: &[u8]) -> io::Result<bool> {
        let whole = block_on(read_response(&mut Inbox::default(), &mut &bytes[..]));
        for piece in [1, 1000] {
            let mut reader = Pieces { bytes, piece };
            let split = block_on(read_response(&mut Inbox::default(), &mut reader));
            assert_eq!(
                format!("{whole:?}"),
                format!("{split:?}"),
                "{piece}-byte reads of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        whole
    }

    fn error_kind(bytes: &[u8]) -> io::ErrorKind {
        match parse(bytes) {
            Ok(keep) => panic!(
                "{:?} parsed (keep-alive {keep})",
                String::from_utf8_lossy(bytes)
            ),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn complete_200s_parse_with_any_framing_and_header_case() {
        assert!(parse(OK_LENGTH).unwrap());
        assert!(parse(OK_CHUNKED).unwrap());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-LENGTH:0\r\n\r\n").unwrap());
        assert!(parse(
            b"HTTP/1.1 200\r\nTransfer-Encoding: gzip,  chunked\r\n\r\n1 ; a=b\r\nx\r\n0\r\n\r\n"
        )
        .unwrap());
        // Transfer-Encoding wins over Content-Length.
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .unwrap());
    }

    #[test]
    fn close_http_1_0_and_bodies_until_eof_end_the_connection() {
        assert!(
            !parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap()
        );
        assert!(!parse(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap());
        assert!(!parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap());
        assert!(
            parse(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
        );
        assert!(!parse(b"HTTP/1.1 200 OK\r\n\r\nthe body runs to the end").unwrap());
    }

    #[test]
    fn back_to_back_responses_are_read_one_at_a_time() {
        let two: Vec<u8> = [OK_CHUNKED, OK_LENGTH].concat();
        let mut inbox = Inbox::default();
        let mut reader = &two[..];
        assert!(block_on(read_response(&mut inbox, &mut reader)).unwrap());
        assert!(block_on(read_response(&mut inbox, &mut reader)).unwrap());
        assert!(inbox.unread().is_empty() && reader.is_empty());
        let eof = block_on(read_response(&mut inbox, &mut reader)).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn anything_but_a_complete_200_is_an_error() {
        use io::ErrorKind::{InvalidData, Other, UnexpectedEof};
        let cases: &[(&[u8], io::ErrorKind)] = &[
            (b"", UnexpectedEof),
            (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                Other,
            ),
            (b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", Other),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntr",
                UnexpectedEof,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntr",
                UnexpectedEof,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntrue\r\n",
                UnexpectedEof,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                InvalidData,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\ntrue\r\n0\r\n\r\n",
                InvalidData,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                InvalidData,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\ntrue",
                InvalidData,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\ntrue",
                InvalidData,
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                InvalidData,
            ),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", InvalidData),
            (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", InvalidData),
            (b"HTTP/2 200\r\n\r\n", InvalidData),
            (b"HTTP/1.1 20 OK\r\n\r\n", InvalidData),
            (b"HTTP/1.1 200OK\r\n\r\n", InvalidData),
        ];
        for (bytes, kind) in cases {
            assert_eq!(
                error_kind(bytes),
                *kind,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn heads_and_bodies_are_bounded() {
        let head = |lines: usize| {
            let pad = format!("X-Pad: {}\r\n", "p".repeat(100)).repeat(lines);
            format!("HTTP/1.1 200 OK\r\n{pad}Content-Length: 0\r\n\r\n").into_bytes()
        };
        assert!(parse(&head(500)).unwrap(), "55 KB of headers is fine");
        assert_eq!(
            error_kind(&head(700)),
            io::ErrorKind::InvalidData,
            "76 KB is not"
        );
        let limit = format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n");
        assert_eq!(error_kind(limit.as_bytes()), io::ErrorKind::UnexpectedEof);
        let over = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(error_kind(over.as_bytes()), io::ErrorKind::InvalidData);
        // Servers that never stop: a header line, a chunk, a body until EOF.
        for head in [
            &b"HTTP/1.1 200 OK\r\nX-Endless: "[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000001\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
        ] {
            let mut inbox = Inbox::default();
            let e = block_on(read_response(&mut inbox, &mut Endless(head))).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(
                inbox.data.capacity() <= MAX_HEAD + 2 * READ_CHUNK,
                "{}",
                inbox.data.capacity()
            );
        }
    }

    fn kv_command(args: &[&str]) -> (i32, String) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = super::command(&args, &mut out, &mut err);
        (code, String::from_utf8_lossy(&err).into_owned())
    }

    #[test]
    fn bad_tls_flags_are_one_line_naming_the_flag() {
        let https = ["-http-addr", "https://127.0.0.1:1", "-duration", "1ms"];
        let (code, err) = kv_command(&https);
        assert_eq!(
            (code, err.trim()),
            (1, "-ca-file: an https:// address needs the CA to trust")
        );
        let (code, err) = kv_command(&["-http-addr", "127.0.0.1:1", "-ca-file", "ca.pem"]);
        assert_eq!(
            (code, err.trim()),
            (1, "-ca-file: give an https:// address with it")
        );
        let mut a = https.to_vec();
        a.extend(["-ca-file", "/nope.pem"]);
        let (code, err) = kv_command(&a);
        assert_eq!(code, 1);
        assert!(
            err.starts_with("-ca-file: cannot read \"/nope.pem\""),
            "{err}"
        );
        let mut a = https.to_vec();
        a.extend(["-ca-file", "/nope.pem", "-client-cert", "c.pem"]);
        let (code, err) = kv_command(&a);
        assert_eq!(
            (code, err.trim()),
            (1, "-client-cert and -client-key: give both or neither")
        );
    }

    /// The workload over TLS: every client's connection is handshaken with
    /// the configuration given, and kept alive across its puts.
    #[test]
    fn puts_go_over_tls_on_kept_alive_connections() {
        use rcgen::{CertificateParams, KeyPair};
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, puts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c2, p2) = (conns.clone(), puts.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                c2.fetch_add(1, Ordering::SeqCst);
                let (server, puts) = (server.clone(), p2.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(server).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    while let Ok(Some(_)) = read_request_from(&mut s) {
                        puts.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue";
                        if s.write_all(answer).and_then(|_| s.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = TlsClient {
            config: Arc::new(config),
            name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        };
        let r = run_live(
            Target::Consul,
            &format!("https://{addr}"),
            2,
            Duration::from_millis(300),
            16,
            10,
            Duration::from_secs(5),
            None,
            Some(tls),
            false,
        );
        assert_eq!(r.errors, 0, "{r}");
        assert!(r.writes > 2, "{r}");
        assert_eq!(puts.load(Ordering::SeqCst) as u64, r.writes);
        assert_eq!(conns.load(Ordering::SeqCst), 2, "one connection per client");
    }

    /// One request (head and Content-Length body) from a TLS stream.
    fn read_request_from<S: Read>(s: &mut S) -> io::Result<Option<Vec<u8>>> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                return Ok(None);
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let len: usize = text
            .split("content-length:")
            .nth(1)
            .and_then(|r| r.split("\r\n").next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        head.extend(body);
        Ok(Some(head))
    }
}

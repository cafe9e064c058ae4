//! `tern bench tls`: what a TLS handshake costs, full and resumed, against
//! the HTTPS API or the server port's native-TLS path (ALPN `tern/rpc`).
//!
//! One client, one connection at a time (so the numbers are per handshake,
//! not a throughput under contention): dial, handshake, one request (`GET
//! /v1/status/leader`, or a KV get as a `tern/rpc` call) and its answer,
//! close. Reading the answer is also how a TLS 1.3 client takes in the
//! server's session tickets, which arrive after the handshake (`openssl
//! s_time -reuse` never reads them, so under TLS 1.3 it measures full
//! handshakes twice). With `-resume=false` the client keeps no sessions,
//! so every handshake is full; with `-resume=true` one configuration is
//! reused and every handshake after a warm-up connection should be resumed
//! (the count of those that were is reported). Reports the handshake
//! (TCP connect + TLS, as the client sees it) and the reconnection (the
//! same plus the first answer: when the server has finished its side too)
//! as medians and 99th percentiles in microseconds, and handshakes/s of the
//! whole loop. It measures; it asserts nothing. Client and server share the
//! machine's cores.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bench::tls_client_config;

pub const BENCH_TLS_HELP: &str = "\
Usage: tern bench tls [options]

  Dials -addr over TLS again and again, one connection at a time: the
  handshake, one request and its answer, close. Reports handshakes/s, the
  handshake's time (TCP connect + TLS) and the time to the first answer,
  medians and 99th percentiles, and how many handshakes were resumed.

Command Options

  -addr=<host:port>        the HTTPS API (-mode=https) or the server port
                           (-mode=rpc: native TLS, ALPN tern/rpc)
  -mode=<https|rpc>        what -addr is (https)
  -ca-file=<file>          the CA to trust (required)
  -client-cert=<file>      the certificate to present (mutual TLS)
  -client-key=<file>       its key
  -tls-server-name=<name>  the name the server's certificate must carry
                           (default: the host of -addr; the server port
                           wants <node>.server.<dc>.<domain>)
  -datacenter=<dc>         the datacenter of the rpc mode's call (dc1)
  -resume=<true|false>     keep TLS sessions and resume them (false)
  -count=<n>               handshakes to make (500)
";

/// What one run measured.
#[derive(Debug, Default)]
pub struct TlsReport {
    pub handshakes: usize,
    pub resumed: usize,
    pub seconds: f64,
    pub handshake_p50: Duration,
    pub handshake_p99: Duration,
    pub reconnect_p50: Duration,
    pub reconnect_p99: Duration,
}

impl std::fmt::Display for TlsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "handshakes={} resumed={} per_s={:.0} handshake_p50_us={:.0} handshake_p99_us={:.0} \
             reconnect_p50_us={:.0} reconnect_p99_us={:.0}",
            self.handshakes,
            self.resumed,
            self.handshakes as f64 / self.seconds.max(1e-9),
            us(self.handshake_p50),
            us(self.handshake_p99),
            us(self.reconnect_p50),
            us(self.reconnect_p99),
        )
    }
}

/// Which listener the run dials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Https,
    Rpc,
}

/// Everything a run needs.
pub struct TlsBench {
    pub addr: String,
    pub mode: Mode,
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
    pub datacenter: String,
    pub count: usize,
    /// Whether the client keeps sessions (`-resume`).
    pub resume: bool,
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// One connection: (handshake time, time to the first answer, resumed).
fn once(b: &TlsBench) -> io::Result<(Duration, Duration, bool)> {
    let t = Instant::now();
    let tcp = TcpStream::connect(&b.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(b.config.clone(), b.name.clone())
        .map_err(io::Error::other)?;
    let mut s: Stream = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    let handshake = t.elapsed();
    let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    match b.mode {
        Mode::Https => {
            s.write_all(
                b"GET /v1/status/leader HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
            )?;
            s.flush()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            if &head[..9] != b"HTTP/1.1 " {
                return Err(io::Error::other("not an HTTP answer"));
            }
        }
        Mode::Rpc => {
            use tern_core::rpc::{Op, ReadMode, Request};
            let call = tern_core::wire::Call {
                id: 1,
                request: Request {
                    datacenter: tern_core::Datacenter(b.datacenter.clone()),
                    read_mode: ReadMode::Stale,
                    blocking: None,
                    op: Op::KvGet {
                        key: "bench/tls".into(),
                    },
                },
            };
            let mut frame = Vec::new();
            tern_core::wire::encode_frame(&tern_core::wire::encode_call(&call), &mut frame);
            s.write_all(&frame)?;
            s.flush()?;
            let mut header = [0u8; 4];
            s.read_exact(&mut header)?;
            let len = u32::from_be_bytes(header) as usize;
            if len > 1 << 20 {
                return Err(io::Error::other("answer too large"));
            }
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload)?;
            tern_core::wire::decode_call_reply(&payload).map_err(io::Error::other)?;
        }
    }
    let reconnect = t.elapsed();
    s.conn.send_close_notify();
    let _ = s.flush();
    Ok((handshake, reconnect, resumed))
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Run `b`: one warm-up connection (which a resuming client needs for its
/// first ticket), then `count` measured ones. The first error ends it.
pub fn run(b: &TlsBench) -> io::Result<TlsReport> {
    once(b)?;
    let (mut hs, mut rc, mut resumed) = (Vec::new(), Vec::new(), 0);
    let start = Instant::now();
    for _ in 0..b.count {
        let (h, r, res) = once(b)?;
        hs.push(h);
        rc.push(r);
        resumed += usize::from(res);
    }
    let seconds = start.elapsed().as_secs_f64();
    hs.sort_unstable();
    rc.sort_unstable();
    Ok(TlsReport {
        handshakes: b.count,
        resumed,
        seconds,
        handshake_p50: pct(&hs, 0.5),
        handshake_p99: pct(&hs, 0.99),
        reconnect_p50: pct(&rc, 0.5),
        reconnect_p99: pct(&rc, 0.99),
    })
}

/// `tern bench tls [flags]`: the summary on `out`, the exit code.
pub fn command(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use crate::cli::flags::{parse, value};
    let specs = [
        value("addr"),
        value("mode"),
        value("ca-file"),
        value("client-cert"),
        value("client-key"),
        value("tls-server-name"),
        value("datacenter"),
        value("resume"),
        value("count"),
    ];
    let p = match parse(args, &specs) {
        Ok(p) if p.help => {
            let _ = out.write_all(BENCH_TLS_HELP.as_bytes());
            return 0;
        }
        Ok(p) => p,
        Err(e) => {
            let _ = write!(err, "{e}\n\n{BENCH_TLS_HELP}");
            return 1;
        }
    };
    match options(&p).and_then(|b| run(&b).map(|r| (b, r)).map_err(|e| format!("bench: {e}"))) {
        Ok((b, r)) => {
            let resume = b.resume;
            let _ = writeln!(
                out,
                "mode={} resume={resume} {r}",
                match b.mode {
                    Mode::Https => "https",
                    Mode::Rpc => "rpc",
                }
            );
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            1
        }
    }
}

/// The run's settings from the flags; an error names the flag.
fn options(p: &crate::cli::flags::Parsed) -> Result<TlsBench, String> {
    if let Some(extra) = p.args.first() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    let addr = p.last("addr").ok_or("-addr: required")?.to_string();
    let mode = match p.last("mode").unwrap_or("https") {
        "https" => Mode::Https,
        "rpc" => Mode::Rpc,
        v => return Err(format!("-mode: must be https or rpc, got {v:?}")),
    };
    let ca = p.last("ca-file").ok_or("-ca-file: required")?;
    let pair = match (p.last("client-cert"), p.last("client-key")) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("-client-cert and -client-key: give both or neither".into()),
    };
    let alpn: &[&[u8]] = match mode {
        Mode::Https => &[b"http/1.1"],
        Mode::Rpc => &[crate::tls::ALPN_RPC],
    };
    let mut config = tls_client_config(ca, pair, alpn)?;
    let resume = match p.last("resume").unwrap_or("false") {
        "true" => true,
        "false" => false,
        v => return Err(format!("-resume: must be true or false, got {v:?}")),
    };
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let name = p.last("tls-server-name").unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("-tls-server-name: {name:?}: {e}"))?;
    let count = match p.last("count") {
        None => 500,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("-count: must be a positive number, got {v:?}")),
        },
    };
    Ok(TlsBench {
        addr,
        mode,
        config: Arc::new(config),
        name,
        datacenter: p.last("datacenter").unwrap_or("dc1").to_string(),
        count,
        resume,
    })
}

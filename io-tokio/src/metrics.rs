//! The agent's telemetry as Consul's `/v1/agent/metrics` serves it.
//!
//! Consul records through armon/go-metrics into two sinks, and so does this
//! registry: an in-memory sink of 10-second intervals kept for a minute (the
//! JSON answer shows the last finished interval, or the current one while it
//! is the only one: go-metrics' `InmemSink.DisplayMetrics`), and a
//! Prometheus sink whose counters and summaries' `_sum`/`_count` only grow,
//! with quantiles 0.5, 0.9 and 0.99 over the samples of the last 10 seconds
//! (the go-metrics Prometheus sink's `MaxAge`). Timers are in milliseconds.
//!
//! Names are Consul's (`consul.raft.apply`, `consul.kvs.apply`, ...; see
//! `README.md` for what is recorded where). The core keeps no clock and no
//! globals: the agent loop and the HTTP layer observe what the core does and
//! record it here with the process's own clock.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// go-metrics' in-memory interval (Consul's `lib/telemetry.go`: 10 s).
const INTERVAL_SECS: u64 = 10;
/// How many intervals the in-memory sink keeps (Consul: one minute).
const INTERVALS_KEPT: usize = 6;
/// The window of a summary's quantiles (go-metrics' Prometheus sink: 10 s).
const QUANTILE_WINDOW: Duration = Duration::from_secs(10);
/// Samples kept per timer for its quantiles; past it the oldest go.
const QUANTILE_SAMPLES_MAX: usize = 4096;
/// The quantiles a summary shows (go-metrics' objectives).
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// The process's metrics. Cheap to share (`Arc`); every method takes a lock
/// for a few map operations.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    intervals: VecDeque<Interval>,
    /// Cumulative, for Prometheus.
    counters: BTreeMap<String, f64>,
    gauges: BTreeMap<String, f64>,
    timers: BTreeMap<String, Timer>,
}

/// One go-metrics interval: what was recorded in `[start, start + 10 s)`.
#[derive(Default)]
struct Interval {
    start_unix: u64,
    gauges: BTreeMap<String, f64>,
    counters: BTreeMap<String, Aggregate>,
    samples: BTreeMap<String, Aggregate>,
}

/// go-metrics' `AggregateSample`.
#[derive(Clone, Copy, Default)]
struct Aggregate {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn ingest(&mut self, v: f64) {
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if self.count == 0 || v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
    }

    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The sample standard deviation, as go-metrics computes it.
    fn stddev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let var = (self.sum_sq - self.sum * self.sum / n) / (n - 1.0);
        var.max(0.0).sqrt()
    }
}

/// go-metrics' `MetricsSummary`, as its JSON reads.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricsSummary {
    timestamp: String,
    gauges: Vec<GaugeValue>,
    points: Vec<serde_json::Value>,
    counters: Vec<SampledValue>,
    samples: Vec<SampledValue>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GaugeValue {
    name: String,
    value: f64,
    labels: BTreeMap<String, String>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SampledValue {
    name: String,
    count: u64,
    rate: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
    labels: BTreeMap<String, String>,
}

#[derive(Default)]
struct Timer {
    count: u64,
    sum: f64,
    recent: VecDeque<(Instant, f64)>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// go-metrics' `IncrCounter`.
    pub fn incr_counter(&self, name: &str, by: f64) {
        let now = SystemTime::now();
        let mut r = self.lock();
        *r.counters.entry(name.to_string()).or_default() += by;
        r.interval(now)
            .counters
            .entry(name.to_string())
            .or_default()
            .ingest(by);
    }

    /// go-metrics' `SetGauge`.
    pub fn set_gauge(&self, name: &str, value: f64) {
        let now = SystemTime::now();
        let mut r = self.lock();
        r.gauges.insert(name.to_string(), value);
        r.interval(now).gauges.insert(name.to_string(), value);
    }

    /// go-metrics' `AddSample` (a timer's value in milliseconds).
    pub fn add_sample(&self, name: &str, value: f64) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut r = self.lock();
        let t = r.timers.entry(name.to_string()).or_default();
        t.count += 1;
        t.sum += value;
        t.recent.push_back((now, value));
        if t.recent.len() > QUANTILE_SAMPLES_MAX {
            t.recent.pop_front();
        }
        r.interval(wall)
            .samples
            .entry(name.to_string())
            .or_default()
            .ingest(value);
    }

    /// go-metrics' `MeasureSince`: the time since `start`, in milliseconds.
    pub fn measure_since(&self, name: &str, start: Instant) {
        self.add_sample(name, start.elapsed().as_secs_f64() * 1000.0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic elsewhere while holding the lock leaves plain numbers:
        // still fine to read and add to.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Metrics::summary`] as a JSON value (keys sorted).
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self.summary()).unwrap_or_default()
    }

    /// go-metrics' `MetricsSummary`: `Timestamp`, `Gauges`, `Points`,
    /// `Counters`, `Samples`; serialized with the fields in Go's order.
    pub fn summary(&self) -> MetricsSummary {
        let now = SystemTime::now();
        let mut r = self.lock();
        r.interval(now);
        let n = r.intervals.len();
        let shown = &r.intervals[if n > 1 { n - 2 } else { 0 }];
        let sampled = |map: &BTreeMap<String, Aggregate>| -> Vec<SampledValue> {
            map.iter()
                .map(|(name, a)| SampledValue {
                    name: name.clone(),
                    count: a.count,
                    rate: a.sum / INTERVAL_SECS as f64,
                    sum: a.sum,
                    min: a.min,
                    max: a.max,
                    mean: a.mean(),
                    stddev: a.stddev(),
                    labels: BTreeMap::new(),
                })
                .collect()
        };
        let summary = MetricsSummary {
            timestamp: go_utc(shown.start_unix),
            gauges: shown
                .gauges
                .iter()
                .map(|(name, v)| GaugeValue {
                    name: name.clone(),
                    value: *v,
                    labels: BTreeMap::new(),
                })
                .collect(),
            points: Vec::new(),
            counters: sampled(&shown.counters),
            samples: sampled(&shown.samples),
        };
        summary
    }

    /// The Prometheus text exposition format 0.0.4: counters, gauges, and
    /// timers as summaries, names with `_` for `.` (and for every other
    /// character a Prometheus name cannot hold), case kept.
    pub fn prometheus(&self) -> String {
        let now = Instant::now();
        let mut r = self.lock();
        let mut out = String::new();
        for (name, v) in &r.counters {
            let p = prometheus_name(name);
            let _ = writeln!(
                out,
                "# HELP {p} {p}\n# TYPE {p} counter\n{p} {}",
                number(*v)
            );
        }
        for (name, v) in &r.gauges {
            let p = prometheus_name(name);
            let _ = writeln!(out, "# HELP {p} {p}\n# TYPE {p} gauge\n{p} {}", number(*v));
        }
        for (name, t) in r.timers.iter_mut() {
            while t
                .recent
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > QUANTILE_WINDOW)
            {
                t.recent.pop_front();
            }
            let mut values: Vec<f64> = t.recent.iter().map(|(_, v)| *v).collect();
            values.sort_by(f64::total_cmp);
            let p = prometheus_name(name);
            let _ = writeln!(out, "# HELP {p} {p}\n# TYPE {p} summary");
            for q in QUANTILES {
                let _ = writeln!(
                    out,
                    "{p}{{quantile=\"{q}\"}} {}",
                    number(quantile(&values, q))
                );
            }
            let _ = writeln!(out, "{p}_sum {}\n{p}_count {}", number(t.sum), t.count);
        }
        out
    }
}

impl Registry {
    /// The interval `now` falls in, starting it (and dropping the oldest
    /// past `INTERVALS_KEPT`) if it is new.
    fn interval(&mut self, now: SystemTime) -> &mut Interval {
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let start = secs - secs % INTERVAL_SECS;
        if self.intervals.back().is_none_or(|i| i.start_unix < start) {
            self.intervals.push_back(Interval {
                start_unix: start,
                ..Interval::default()
            });
            while self.intervals.len() > INTERVALS_KEPT {
                self.intervals.pop_front();
            }
        }
        self.intervals.back_mut().expect("just pushed")
    }
}

/// The nearest-rank quantile of sorted `values`; NaN when there are none
/// (as a Prometheus summary with no recent observation shows).
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// A sample value as the exposition format writes it (`NaN`, `+Inf`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// go-metrics' Prometheus name: every character outside `[a-zA-Z0-9_:]`
/// (the dots, the dashes of `force-leave`) becomes `_`.
pub fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Go's `time.Time.String()` of a UTC second: `2026-12-02 04:10:00 +0000 UTC`.
fn go_utc(unix: u64) -> String {
    let (days, rem) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = crate::logging::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses the exposition format this module writes (and Prometheus'
/// 0.0.4 text in general, without escapes in label values): every sample
/// line as (name with labels, value). A line that is neither a comment nor
/// `name[{labels}] value` is an error naming it.
pub fn parse_prometheus(text: &str) -> Result<Vec<(String, f64)>, String> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split(' ').nth(1).unwrap_or_default();
                if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) {
                    return Err(format!("bad TYPE line: {line:?}"));
                }
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let labels_ok = name_end == series.len()
            || (series.ends_with('}') && series[name_end..].contains("=\""));
        if !valid_name || !labels_ok {
            return Err(format!("bad series: {line:?}"));
        }
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .map_err(|_| format!("bad value: {line:?}"))?,
        };
        samples.push((series.to_string(), value));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_timers_aggregate_as_go_metrics_does() {
        let m = Metrics::new();
        m.incr_counter("consul.raft.apply", 1.0);
        m.incr_counter("consul.raft.apply", 2.0);
        for v in [1.0, 2.0, 3.0, 4.0] {
            m.add_sample("consul.kvs.apply", v);
        }
        m.set_gauge("consul.runtime.num_goroutines", 7.0);
        let j = m.json();
        // Everything above is in the current (and only) interval.
        let counter = &j["Counters"][0];
        assert_eq!(counter["Name"], "consul.raft.apply");
        assert_eq!(counter["Count"], 2);
        assert_eq!(counter["Sum"], 3.0);
        assert_eq!(counter["Rate"], 0.3);
        assert_eq!(
            (counter["Min"].as_f64(), counter["Max"].as_f64()),
            (Some(1.0), Some(2.0))
        );
        let sample = &j["Samples"][0];
        assert_eq!(sample["Count"], 4);
        assert_eq!(sample["Mean"], 2.5);
        let sd = sample["Stddev"].as_f64().unwrap();
        assert!((sd - 1.2909944).abs() < 1e-6, "{sd}");
        assert_eq!(j["Gauges"][0]["Value"], 7.0);
        assert_eq!(j["Points"], serde_json::json!([]));
        let ts = j["Timestamp"].as_str().unwrap();
        assert!(ts.ends_with(" +0000 UTC") && ts.len() == 29, "{ts}");
        assert!(
            ts.ends_with("0 +0000 UTC"),
            "an interval starts on a 10 s boundary: {ts}"
        );
    }

    #[test]
    fn prometheus_text_has_consuls_names_and_parses() {
        let m = Metrics::new();
        m.incr_counter("consul.kvs.apply.count", 5.0);
        m.add_sample("consul.raft.commitTime", 2.0);
        m.add_sample("consul.http.PUT.v1.agent.force-leave._", 1.0);
        let text = m.prometheus();
        assert!(
            text.contains("# TYPE consul_raft_commitTime summary\n"),
            "{text}"
        );
        assert!(text.contains("consul_raft_commitTime{quantile=\"0.99\"} 2\n"));
        assert!(text.contains("consul_raft_commitTime_count 1\n"));
        assert!(text.contains("consul_http_PUT_v1_agent_force_leave__{quantile=\"0.5\"} 1\n"));
        assert!(text.contains("# TYPE consul_kvs_apply_count counter\nconsul_kvs_apply_count 5\n"));
        let parsed = parse_prometheus(&text).unwrap();
        assert!(parsed.contains(&("consul_raft_commitTime_sum".into(), 2.0)));
        assert!(parse_prometheus("bad line").is_err());
        assert!(parse_prometheus("9x 1").is_err());
        assert!(parse_prometheus("x{a=\"b\"} 1e3").unwrap()[0].1 == 1000.0);
    }

    #[test]
    fn quantiles_are_nearest_rank_and_nan_when_empty() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.9), 90.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[3.0], 0.01), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_timer_keeps_at_most_its_cap_of_recent_samples() {
        let m = Metrics::new();
        for i in 0..QUANTILE_SAMPLES_MAX + 10 {
            m.add_sample("t", i as f64);
        }
        let r = m.lock();
        let t = &r.timers["t"];
        assert_eq!(t.recent.len(), QUANTILE_SAMPLES_MAX);
        assert_eq!(t.count, (QUANTILE_SAMPLES_MAX + 10) as u64);
        assert_eq!(t.recent.front().unwrap().1, 10.0);
    }

    #[test]
    fn go_time_strings() {
        assert_eq!(go_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_utc(1_796_184_610), "2026-12-02 04:10:10 +0000 UTC");
    }
}

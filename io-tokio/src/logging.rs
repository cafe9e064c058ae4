//! The agent's logs: to stdout, and optionally to a file that rotates, as
//! text or as JSON, following Consul's logging package (logging/logger.go,
//! logging/logfile.go) and hclog's JSON keys.
//!
//! - Colour codes only when stdout is a terminal; the file never has them.
//! - `log_json`: one JSON object per line with hclog's keys `@level`,
//!   `@message`, `@module`, `@timestamp` (UTC, microseconds), then the
//!   event's own fields, keys sorted.
//! - `log_file`: a file path, or a directory (a path ending in `/` or an
//!   existing directory) that gets `tern.log`. The active file keeps its name;
//!   when it has reached `log_rotate_bytes` (0: no limit) or is older than
//!   `log_rotate_duration` (24h), the next line first renames it to
//!   `<name>-<unix nanoseconds>.<ext>` and starts a new one, then removes the
//!   oldest rotated files beyond `log_rotate_max_files` (0 keeps all, -1
//!   none). Unlike Consul, which truncates the file at start, an existing
//!   file is appended to, so a restart keeps the last run's log.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Consul's `defaultRotateDuration`.
pub const DEFAULT_ROTATE_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The file name a `log_file` directory gets.
pub const DEFAULT_FILE_NAME: &str = "tern.log";

/// How the agent logs (Consul's `log_json`, `log_file`, `log_rotate_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    pub json: bool,
    pub file: Option<PathBuf>,
    /// 0: no size limit.
    pub rotate_bytes: u64,
    pub rotate_duration: Duration,
    /// 0 keeps every rotated file, -1 none, n the newest n.
    pub rotate_max_files: i64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            json: false,
            file: None,
            rotate_bytes: 0,
            rotate_duration: DEFAULT_ROTATE_DURATION,
            rotate_max_files: 0,
        }
    }
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Install the process's logger: `level` (or `TERN_LOG`, an `EnvFilter`
/// directive) on stdout and, if asked, the file. An error names the file.
pub fn init(level: &str, options: &LogOptions) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let mut layers: Vec<BoxedLayer> = vec![layer(
        options.json,
        std::io::stdout().is_terminal(),
        std::io::stdout,
    )];
    if let Some(path) = &options.file {
        let file = LogFile::open(path, options)?;
        layers.push(layer(options.json, false, Mutex::new(file)));
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| format!("setting up logging: {e}"))
}

/// One output: hclog JSON, or tracing's text with colour only if `ansi`.
fn layer<W>(json: bool, ansi: bool, writer: W) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match json {
        true => text.event_format(HclogJson).boxed(),
        false => text.boxed(),
    }
}

/// hclog's JSON line format.
pub struct HclogJson;

impl<S, N> FormatEvent<S, N> for HclogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = json_line(event, SystemTime::now());
        writeln!(writer, "{line}")
    }
}

/// One event as hclog writes it in JSON.
fn json_line(event: &Event<'_>, now: SystemTime) -> String {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut line = fields.0;
    let message = line
        .remove("message")
        .unwrap_or(Value::String(String::new()));
    let meta = event.metadata();
    line.insert("@message".into(), message);
    line.insert(
        "@level".into(),
        Value::String(meta.level().as_str().to_ascii_lowercase()),
    );
    line.insert(
        "@module".into(),
        Value::String(meta.target().replace("::", ".")),
    );
    line.insert("@timestamp".into(), Value::String(timestamp(now)));
    serde_json::to_string(&line).unwrap_or_default()
}

/// An event's fields as JSON values.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// hclog's JSON time, `2006-01-02T15:04:05.000000Z07:00`, in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Year, month, day of the `days`th day after 1970-01-01 (the proleptic
/// Gregorian calendar; H. Hinnant's days-to-civil algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The log file, rotated by size and age (Consul's `LogFile`).
pub struct LogFile {
    dir: PathBuf,
    name: String,
    rotate_bytes: u64,
    rotate_duration: Duration,
    max_files: i64,
    file: File,
    opened: Instant,
    written: u64,
}

impl LogFile {
    /// Open (or create, appending) the active file for `path`.
    pub fn open(path: &Path, options: &LogOptions) -> Result<LogFile, String> {
        let text = path.to_string_lossy();
        let (dir, name) = if text.ends_with('/') || path.is_dir() {
            (path.to_path_buf(), DEFAULT_FILE_NAME.to_string())
        } else {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| DEFAULT_FILE_NAME.into());
            (dir.to_path_buf(), name)
        };
        let (file, written) = open_active(&dir.join(&name))?;
        Ok(LogFile {
            dir,
            name,
            rotate_bytes: options.rotate_bytes,
            rotate_duration: options.rotate_duration,
            max_files: options.rotate_max_files,
            file,
            opened: Instant::now(),
            written,
        })
    }

    /// `<stem>-` and `.<ext>` around a rotated file's timestamp (`.log`
    /// when the name has no extension).
    fn rotated_affixes(&self) -> (String, String) {
        match self.name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (format!("{stem}-"), format!(".{ext}")),
            _ => (format!("{}-", self.name), ".log".into()),
        }
    }

    /// Rotate if the active file is full or old: rename it, prune, reopen.
    fn rotate_if_due(&mut self) -> std::io::Result<()> {
        let full = self.rotate_bytes > 0 && self.written >= self.rotate_bytes;
        if !full && self.opened.elapsed() < self.rotate_duration {
            return Ok(());
        }
        let (prefix, suffix) = self.rotated_affixes();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let active = self.dir.join(&self.name);
        std::fs::rename(&active, self.dir.join(format!("{prefix}{nanos}{suffix}")))?;
        self.prune(&prefix, &suffix)?;
        let (file, written) = open_active(&active).map_err(std::io::Error::other)?;
        self.file = file;
        self.written = written;
        self.opened = Instant::now();
        Ok(())
    }

    /// Remove the oldest rotated files beyond `max_files`.
    fn prune(&self, prefix: &str, suffix: &str) -> std::io::Result<()> {
        if self.max_files == 0 {
            return Ok(());
        }
        let mut rotated: Vec<(u128, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stamp = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|n| n.parse::<u128>().ok());
            if let Some(stamp) = stamp {
                rotated.push((stamp, entry.path()));
            }
        }
        rotated.sort();
        let keep = usize::try_from(self.max_files.max(0)).unwrap_or(usize::MAX);
        let remove = rotated.len().saturating_sub(keep);
        for (_, path) in &rotated[..remove] {
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// Open the active file for appending; its current length.
fn open_active(path: &Path) -> Result<(File, u64), String> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("log_file: cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, len))
}

impl Write for LogFile {
    /// Rotation is checked before each write, as Consul does: a line is
    /// never split, and a file ends at the first line past the limit.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rotate_if_due()?;
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_hclogs_utc_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tern-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// logfile.go: a file rotates at the first write once it holds
    /// `rotate_bytes`, and only `max_files` rotated files stay.
    #[test]
    fn rotation_by_bytes_keeps_max_files() {
        let d = dir("bytes");
        let options = LogOptions {
            rotate_bytes: 10,
            rotate_max_files: 2,
            ..LogOptions::default()
        };
        let mut f = LogFile::open(&d, &options).unwrap();
        // 9 bytes: under the limit, no rotation at the next write.
        f.write_all(b"123456789").unwrap();
        f.write_all(b"0").unwrap();
        assert_eq!(names(&d), ["tern.log"]);
        // Now at 10 = the limit: the next write goes to a fresh file.
        for line in [b"a", b"b", b"c", b"d"] {
            f.write_all(&[line[0]; 10]).unwrap();
        }
        let all = names(&d);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.contains(&"tern.log".to_string()));
        assert!(all
            .iter()
            .all(|n| n == "tern.log" || (n.starts_with("tern-") && n.ends_with(".log"))));
        assert_eq!(std::fs::read(d.join("tern.log")).unwrap(), [b'd'; 10]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn max_files_minus_one_keeps_none_and_a_name_without_extension_gets_log() {
        let d = dir("none");
        let options = LogOptions {
            rotate_bytes: 1,
            rotate_max_files: -1,
            ..LogOptions::default()
        };
        let mut f = LogFile::open(&d.join("agent"), &options).unwrap();
        f.write_all(b"x").unwrap();
        f.write_all(b"y").unwrap();
        assert_eq!(names(&d), ["agent"]);
        let options = LogOptions {
            rotate_bytes: 1,
            ..LogOptions::default()
        };
        let mut f = LogFile::open(&d.join("agent"), &options).unwrap();
        f.write_all(b"z").unwrap();
        let all = names(&d);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[1].starts_with("agent-") && all[1].ends_with(".log"),
            "{all:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rotation_by_age() {
        let d = dir("age");
        let options = LogOptions {
            rotate_duration: Duration::from_millis(20),
            ..LogOptions::default()
        };
        let mut f = LogFile::open(&d.join("a.log"), &options).unwrap();
        f.write_all(b"old\n").unwrap();
        std::thread::sleep(Duration::from_millis(40));
        f.write_all(b"new\n").unwrap();
        assert_eq!(names(&d).len(), 2);
        assert_eq!(std::fs::read(d.join("a.log")).unwrap(), b"new\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unopenable_file_is_an_error_naming_it() {
        let e = LogFile::open(
            Path::new("/nonexistent-dir/x/tern.log"),
            &LogOptions::default(),
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("log_file: cannot open /nonexistent-dir/x/tern.log: "),
            "{e}"
        );
    }
}

//! klog-style lines on stderr, as Go flanneld prints them: `I0814 12:34:56.123456    42 flanneld] text`
//! (severity letter, UTC month/day and time, pid, source tag). No logging framework: the
//! agent prints a few lines per event and nothing else needs them.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The severity of a line (ordered: a threshold keeps its own and the higher ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `I`: what the agent did.
    Info,
    /// `W`: something was skipped or retried.
    Warning,
    /// `E`: something failed.
    Error,
}

impl Severity {
    /// klog's `-stderrthreshold` value: a name (any case) or its number; FATAL lines are
    /// errors here (the agent exits after them).
    pub fn parse(v: &str) -> Option<Severity> {
        match v.to_ascii_uppercase().as_str() {
            "INFO" | "0" => Some(Severity::Info),
            "WARNING" | "1" => Some(Severity::Warning),
            "ERROR" | "2" | "FATAL" | "3" => Some(Severity::Error),
            _ => None,
        }
    }
}

/// What the log prints: klog's `-v`, `-vmodule`, `-stderrthreshold` and `-skip_headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `-v`: detail lines up to this level are printed (0: none).
    pub verbosity: u32,
    /// `-vmodule`: `(pattern, level)`, the first pattern that matches a source file's
    /// name wins over `-v`.
    pub vmodule: Vec<(String, u32)>,
    /// `-stderrthreshold`: lines below it are not printed.
    pub threshold: Severity,
    /// `-skip_headers`: lines without the klog header.
    pub skip_headers: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            verbosity: 0,
            vmodule: Vec::new(),
            threshold: Severity::Info,
            skip_headers: false,
        }
    }
}

/// klog's `-vmodule` value: comma-separated `pattern=N`; a pattern is a glob (`*`, `?`)
/// matched against a source file's name without `.rs` (`stack`, `hostgw`), or, when it
/// holds a `/`, against its path within the crate (`backend/vxlan/*`).
pub fn parse_vmodule(v: &str) -> Result<Vec<(String, u32)>, String> {
    v.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (pattern, level) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not pattern=N"))?;
            let level = level
                .parse::<u32>()
                .map_err(|_| format!("{level:?} in {p:?} is not a level (0 or more)"))?;
            if pattern.is_empty() {
                return Err(format!("{p:?} has an empty pattern"));
            }
            Ok((pattern.to_owned(), level))
        })
        .collect()
}

/// A glob with `*` (any run) and `?` (one character).
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => match text.split_first() {
            Some((t, tail)) if *c == '?' || c == t => glob(rest, tail),
            _ => false,
        },
    }
}

impl LogConfig {
    /// Whether a detail line of `level` from the source file `file` (`file!()`) prints.
    pub fn enabled(&self, level: u32, file: &str) -> bool {
        let path = file
            .strip_suffix(".rs")
            .unwrap_or(file)
            .split_once("src/")
            .map_or(file, |(_, p)| p);
        let stem = path.rsplit('/').next().unwrap_or(path);
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        for (pattern, max) in &self.vmodule {
            let target = if pattern.contains('/') { path } else { stem };
            if glob(&chars(pattern), &chars(target)) {
                return level <= *max;
            }
        }
        level <= self.verbosity
    }
}

static CONFIG: std::sync::OnceLock<LogConfig> = std::sync::OnceLock::new();

/// Sets what the log prints, once, before the agent starts (later calls are ignored).
pub fn configure(config: LogConfig) {
    let _ = CONFIG.set(config);
}

fn config() -> &'static LogConfig {
    static DEFAULT: std::sync::OnceLock<LogConfig> = std::sync::OnceLock::new();
    CONFIG
        .get()
        .unwrap_or_else(|| DEFAULT.get_or_init(LogConfig::default))
}

/// Whether a detail line of `level` from `file` prints with the configured flags.
pub fn v_enabled(level: u32, file: &str) -> bool {
    config().enabled(level, file)
}

/// The civil (proleptic Gregorian) date of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
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

/// The klog header for a line at `now`.
pub fn header(severity: Severity, now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (_, month, day) = civil(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let letter = match severity {
        Severity::Info => 'I',
        Severity::Warning => 'W',
        Severity::Error => 'E',
    };
    format!(
        "{letter}{month:02}{day:02} {:02}:{:02}:{:02}.{:06} {:>7} flanneld]",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60,
        since.subsec_micros(),
        std::process::id()
    )
}

/// The most of an outside value (an etcd key, a field of a lease or of the config) a log line
/// shows: a hostile 1 MiB value must not become a 1 MiB line every re-listing.
pub const SHOWN_MAX: usize = 128;

/// An outside string as a log line shows it: quoted and escaped as Rust's `{:?}` escapes it
/// (a newline, NUL or escape sequence in an etcd key cannot forge or garble a line), cut to
/// [`SHOWN_MAX`] characters with the full length noted.
pub fn shown(s: &str) -> String {
    let count = s.chars().count();
    if count <= SHOWN_MAX {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(SHOWN_MAX).collect();
    format!("{head:?}... ({} bytes)", s.len())
}

/// A message built from outside text (a JSON decoder's error quotes the offending string
/// whole), cut to a few hundred bytes at a character boundary.
pub fn bounded(msg: &str) -> String {
    const MAX: usize = 300;
    if msg.len() <= MAX {
        return msg.to_owned();
    }
    let mut end = MAX;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &msg[..end], msg.len())
}

/// Prints one line; errors writing to stderr are ignored (there is nowhere else to report them).
pub fn line(severity: Severity, args: std::fmt::Arguments<'_>) {
    let c = config();
    if severity < c.threshold {
        return;
    }
    let text = if c.skip_headers {
        format!("{args}\n")
    } else {
        format!("{} {args}\n", header(severity, SystemTime::now()))
    };
    #[cfg(test)]
    capture::record(&text);
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The lines logged by the current thread, kept for the tests that assert what the agent
/// said (the agent's tests run on one thread: tokio's current-thread runtime).
#[cfg(test)]
pub mod capture {
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    pub(crate) fn record(line: &str) {
        LINES.with(|l| {
            if let Some(v) = l.borrow_mut().as_mut() {
                v.push(line.to_owned());
            }
        });
    }

    /// Starts keeping this thread's lines (dropping any kept so far).
    pub fn start() {
        LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// The lines kept since [`start`], and keeps going.
    pub fn lines() -> Vec<String> {
        LINES.with(|l| l.borrow().clone().unwrap_or_default())
    }
}

/// A failure retried every few seconds, said once and then again once a minute while it
/// lasts (or at once when it changes): an apiserver down or a revoked permission must not
/// write a line per try.
#[derive(Debug, Default)]
pub struct Repeats {
    last: Option<(String, tokio::time::Instant)>,
}

impl Repeats {
    /// How long the same failure stays unsaid.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Whether `what` is to be said now; noted when it is.
    pub fn due(&mut self, what: &str) -> bool {
        let repeated = self
            .last
            .as_ref()
            .is_some_and(|(w, at)| w == what && at.elapsed() < Self::EVERY);
        if !repeated {
            self.last = Some((what.to_owned(), tokio::time::Instant::now()));
        }
        !repeated
    }

    /// The failure is over; whether one was being repeated.
    pub fn clear(&mut self) -> bool {
        self.last.take().is_some()
    }
}

/// An informational line.
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Severity::Info, format_args!($($arg)*)) };
}
/// A warning line.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Severity::Warning, format_args!($($arg)*)) };
}
/// An error line.
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Severity::Error, format_args!($($arg)*)) };
}
/// A detail line, printed at `-v` `level` or more (or a `-vmodule` level for this file):
/// klog's `V(level).Infof`.
macro_rules! detail {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::v_enabled($level, file!()) {
            $crate::log::line($crate::log::Severity::Info, format_args!($($arg)*))
        }
    };
}
pub(crate) use {detail, error, info, warning};

#[cfg(test)]
mod tests {

    #[tokio::test(start_paused = true)]
    async fn a_repeated_failure_is_said_once_a_minute_and_a_new_one_at_once() {
        let mut r = Repeats::default();
        assert!(r.due("forbidden"));
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!r.due("forbidden"), "the same failure 5 s later");
        assert!(r.due("connection refused"), "another failure at once");
        assert!(r.due("forbidden"));
        tokio::time::sleep(Repeats::EVERY).await;
        assert!(r.due("forbidden"), "again after a minute");
        assert!(r.clear() && !r.clear());
        assert!(r.due("forbidden"), "after the failure ended");
    }

    use super::*;
    use std::time::Duration;

    #[test]
    fn verbosity_and_vmodule_as_klog_reads_them() {
        let file = "flanneld/src/backend/vxlan/stack.rs";
        let quiet = LogConfig::default();
        assert!(quiet.enabled(0, file));
        assert!(!quiet.enabled(2, file), "V(2) is quiet at the default");
        let v2 = LogConfig {
            verbosity: 2,
            ..LogConfig::default()
        };
        assert!(v2.enabled(2, file) && !v2.enabled(3, file));
        for (spec, on) in [
            ("stack=2", true),
            ("st*=4", true),
            ("sta?k=2", true),
            ("backend/vxlan/*=2", true),
            ("hostgw=2", false),
            ("stack=1", false),
            ("stack=1,st*=5", false),
        ] {
            let c = LogConfig {
                vmodule: parse_vmodule(spec).unwrap(),
                ..LogConfig::default()
            };
            assert_eq!(c.enabled(2, file), on, "{spec}");
        }
        for bad in ["stack", "stack=x", "=2", "stack=-1"] {
            assert!(parse_vmodule(bad).is_err(), "{bad}");
        }
        assert_eq!(Severity::parse("warning"), Some(Severity::Warning));
        assert_eq!(Severity::parse("2"), Some(Severity::Error));
        assert_eq!(Severity::parse("loud"), None);
        assert!(Severity::Warning > Severity::Info);
    }

    #[test]
    fn klog_header() {
        // 2026-08-14 12:34:56.000123 UTC
        let t = UNIX_EPOCH + Duration::from_micros(1_786_710_896_000_123);
        let h = header(Severity::Warning, t);
        assert!(h.starts_with("W0814 12:34:56.000123 "), "{h}");
        assert!(h.ends_with(" flanneld]"), "{h}");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
    }

    #[test]
    fn outside_text_is_escaped_and_bounded() {
        assert_eq!(shown("10.5.1.0-24"), "\"10.5.1.0-24\"");
        assert_eq!(shown("a\nI0101 forged\u{0}"), "\"a\\nI0101 forged\\0\"");
        let huge = "x".repeat(1 << 20);
        let s = shown(&huge);
        assert!(s.len() < 200 && s.ends_with("... (1048576 bytes)"), "{s}");
        let msg = format!("invalid type: string {:?}", "é".repeat(1 << 19));
        let b = bounded(&msg);
        assert!(
            b.len() < 400 && b.ends_with(&format!("... ({} bytes)", msg.len())),
            "{b}"
        );
    }
}

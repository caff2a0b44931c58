//! klog-style lines on stderr, as Go flanneld prints them: `I0814 12:34:56.123456    42 flanneld] text`
//! (severity letter, UTC month/day and time, pid, source tag). No logging framework: the
//! agent prints a few lines per event and nothing else needs them.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `I`: what the agent did.
    Info,
    /// `W`: something was skipped or retried.
    Warning,
    /// `E`: something failed.
    Error,
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

/// Prints one line; errors writing to stderr are ignored (there is nowhere else to report them).
pub fn line(severity: Severity, args: std::fmt::Arguments<'_>) {
    let text = format!("{} {args}\n", header(severity, SystemTime::now()));
    let _ = std::io::stderr().write_all(text.as_bytes());
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
pub(crate) use {error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}

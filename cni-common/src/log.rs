//! The debug log: off by default; on when `CNI_RS_DEBUG_LOG` (environment) or `debugLog`
//! (any plugin's config) names a file. Each invocation appends its command, container ID and
//! outcome, and plugins add the decisions they take. Never stdout: that belongs to the result.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ENV: &str = "CNI_RS_DEBUG_LOG";

struct Sink {
    plugin: &'static str,
    /// Every line names the attachment, so one container's story greps out of the log.
    container: String,
    file: Mutex<File>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Opens the log for `plugin` if a path is given; a log that cannot be opened is reported on
/// stderr and otherwise ignored (logging must never fail a command).
pub fn init(plugin: &'static str, container: &str, path: Option<&Path>) {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return;
    };
    match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            let _ = SINK.set(Sink {
                plugin,
                container: container.to_owned(),
                file: Mutex::new(file),
            });
        }
        Err(e) => eprintln!("{plugin}: cannot open debug log {}: {e}", path.display()),
    }
}

pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Appends one line (use through [`crate::debug_log!`]).
pub fn write(args: fmt::Arguments<'_>) {
    let Some(sink) = SINK.get() else { return };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:06} {}[{}] container={}: {args}\n",
        now.as_secs(),
        now.subsec_micros(),
        sink.plugin,
        std::process::id(),
        sink.container
    );
    if let Ok(mut f) = sink.file.lock() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Logs a decision to the debug log, if one is open.
#[macro_export]
macro_rules! debug_log {
    ($($arg:tt)*) => {
        if $crate::log::enabled() {
            $crate::log::write(format_args!($($arg)*))
        }
    };
}

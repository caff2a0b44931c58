//! A whole-system test's progress: each line on stderr (seen with `--nocapture`) with the
//! seconds since the start, and kept for the report file `scripts/test.sh` prints.

use std::fmt::Write as _;
use std::time::Instant;

/// The lines so far.
#[derive(Debug)]
pub struct Report {
    start: Instant,
    text: String,
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

impl Report {
    /// An empty report; its clock starts now.
    pub fn new() -> Report {
        Report {
            start: Instant::now(),
            text: String::new(),
        }
    }

    /// A line, `[  1.2s] ...`.
    pub fn line(&mut self, s: impl AsRef<str>) {
        let line = format!(
            "[{:5.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            s.as_ref()
        );
        eprintln!("{line}");
        self.text.push_str(&line);
        self.text.push('\n');
    }

    /// Lines of output, indented.
    pub fn block(&mut self, s: impl AsRef<str>) {
        for l in s.as_ref().lines() {
            let _ = writeln!(self.text, "    {l}");
            eprintln!("    {l}");
        }
    }

    /// Everything so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

//! The kernel's link notifications as the agent uses them: which concern the backend, and
//! the debounce that makes a burst of them one reconcile.

use std::time::Duration;

use node_kernel::LinkChange;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the agent hears of changes to the backend's kernel entries
/// ([`crate::backend::Backend::watched_entries`]); without that, every reconcile tick dumps them.
#[derive(Clone, Default)]
pub enum EntryNotices {
    /// Not at all.
    #[default]
    None,
    /// On the link channel, from the start.
    OnLinks,
    /// On the link channel once this has run, which the loop does after its first
    /// programming (a start with thousands of peers would be notified of each entry).
    Join(std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>),
}

impl std::fmt::Debug for EntryNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryNotices::None => "None",
            EntryNotices::OnLinks => "OnLinks",
            EntryNotices::Join(_) => "Join",
        })
    }
}

/// Link notifications as the agent receives them (a thread reading the kernel's forwards
/// them: see `crate::run`).
pub type LinkEvents = mpsc::Receiver<LinkChange>;

/// A burst of link notifications is one reconcile: due [`LINK_QUIET`] after the last one,
/// never later than [`LINK_LONGEST`] after the first.
pub const LINK_QUIET: Duration = Duration::from_millis(100);
/// See [`LINK_QUIET`].
pub const LINK_LONGEST: Duration = Duration::from_millis(500);

/// The debounce of link notifications (see [`LINK_QUIET`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    /// A notification arrived at `now`; true when it starts a burst.
    pub fn event(&mut self, now: Instant) -> bool {
        let starts = self.first.is_none();
        self.first.get_or_insert(now);
        self.last = Some(now);
        starts
    }

    /// When the reconcile is due; `None` without a pending notification.
    pub fn due(&self) -> Option<Instant> {
        Some((self.last? + LINK_QUIET).min(self.first? + LINK_LONGEST))
    }

    /// The reconcile ran: nothing is pending.
    pub fn fired(&mut self) {
        *self = Debounce::default();
    }
}

/// Whether a notification calls for a reconcile: it names one of `watched`, or
/// notifications were lost.
pub fn concerns(change: &LinkChange, watched: &[String]) -> bool {
    match change {
        LinkChange::Lost => true,
        _ => change
            .name()
            .is_some_and(|n| watched.iter().any(|w| w == n)),
    }
}

pub fn describe(change: &LinkChange) -> String {
    match change {
        LinkChange::Changed { name, index } => {
            format!("{} (index {index}) changed", name.as_deref().unwrap_or("?"))
        }
        LinkChange::Deleted { name, index } => {
            format!("{} (index {index}) deleted", name.as_deref().unwrap_or("?"))
        }
        LinkChange::Entry { kind, index, .. } => format!("a {kind:?} entry of link {index}"),
        LinkChange::Lost => "some lost".to_owned(),
    }
}

/// The next link notification; pending forever without a subscription.
pub async fn next_link(links: &mut Option<LinkEvents>) -> Option<LinkChange> {
    match links {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

//! The agent benchmark's code path (`bench agent`, scripts/bench-agent.sh) in small: 200 peers,
//! 20 events, a short idle period, on the debug build. No timed assertion: it checks that every
//! figure is produced and sane (all peers in the kernel, every event seen by both the runner
//! and the agent's histogram, memory and CPU read), and that the table and plot render.

// Test helpers fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use conformance::bench::agent::{Plan, report, run};
use conformance::etcd::{available, flanneld_path};
use conformance::{plugin_dir, skip};

#[test]
fn bench_agent_smoke() {
    if !available() {
        skip(
            "bench_agent::bench_agent_smoke",
            "etcd-server/etcd-client not installed (scripts/setup.sh installs them)",
        );
        return;
    }
    let plan = Plan {
        counts: vec![200],
        events: 20,
        idle: Duration::from_secs(1),
        flanneld: flanneld_path(),
        reps: 2,
    };
    let r = run(&plan, &plugin_dir()).unwrap();
    assert_eq!(r.rows.len(), 2, "{r:?}");
    let (zero, full) = (&r.rows[0], &r.rows[1]);
    assert_eq!((zero.peers, zero.routes, zero.floor_us), (0, 0, None));
    assert_eq!((full.peers, full.routes), (200, 200), "{r:?}");
    assert!(
        full.start_us > 0 && full.floor_us.is_some_and(|f| f > 0),
        "{r:?}"
    );
    for row in &r.rows {
        assert!(row.rss_kib > 0 && row.hwm_kib >= row.rss_kib, "{r:?}");
    }
    assert_eq!(r.events.kernel_us.len(), 20);
    assert_eq!(r.events.agent_count, 20.0, "{r:?}");
    let (p50, p99) = (r.events.agent_p50.unwrap(), r.events.agent_p99.unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{r:?}");
    assert_eq!(r.idle.peers, 220);
    assert!(r.idle.cpu_percent >= 0.0 && r.idle.cpu_percent.is_finite());
    let md = report::markdown(&r);
    assert!(md.contains("| 200 |"), "{md}");
    assert!(report::svg(&r).contains(">200 peers<"));
}

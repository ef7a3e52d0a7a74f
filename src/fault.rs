//! Fault injection for the crash tests: `LPAF_CRASH_AT=NAME[:N]` aborts the
//! process (no destructors, no buffered writes: what `kill -9` leaves) the
//! N-th time (default 1st) the code passes the crash point `NAME`. The points
//! sit inside the checkpoint swap (docs/robustness.md lists them). Unset, a
//! crash point costs one environment lookup per checkpoint.

use std::sync::atomic::{AtomicU64, Ordering};

static PASSES: AtomicU64 = AtomicU64::new(0);

/// Aborts here when `LPAF_CRASH_AT` names this point and this is its N-th pass.
pub fn crash_point(name: &str) {
    let Ok(spec) = std::env::var("LPAF_CRASH_AT") else {
        return;
    };
    let (point, nth) = match spec.split_once(':') {
        Some((p, n)) => (p, n.parse::<u64>().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if point != name {
        return;
    }
    let pass = PASSES.fetch_add(1, Ordering::SeqCst) + 1;
    if pass == nth {
        eprintln!("LPAF_CRASH_AT: aborting at {name} (pass {pass})");
        std::process::abort();
    }
}

//! Failpoints for crash tests (tikv's habit): `LOYALTY_FAILPOINT=name:n` aborts the process
//! — no unwinding, no flush, like `kill -9` — the `n`-th time execution reaches the
//! failpoint `name`. Unset, a failpoint costs one relaxed atomic load.
//!
//! The points sit in the windows that exactly-once must survive:
//! - `sequence-after-log-ack`: records are in the log, their input offsets not yet stored;
//! - `fold-after-commit`: a batch is stored, its outbox not yet published;
//! - `publish-after-ack`: the outbox is delivered, not yet trimmed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("LOYALTY_FAILPOINT").ok()?;
        let (name, n) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
        Some((name.to_string(), n.parse().unwrap_or(1)))
    })
}

/// Aborts the process if `name` is armed and this is its n-th hit.
pub fn hit(name: &str) {
    if let Some((armed, n)) = armed() {
        if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
            tracing::warn!(failpoint = name, "failpoint: aborting");
            std::process::abort();
        }
    }
}

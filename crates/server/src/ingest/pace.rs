//! Back-pressure from the flush backlog, applied before a request's body is read.
//!
//! Live traces wait in the head until the flusher writes them into blocks; at saturation they
//! arrive faster than blocks drain. Refusing only once the head is full is a cliff: everything is
//! refused until a whole flush completes, then everything is admitted again, and refused requests
//! still cost their decode. Instead, past `soft` bytes of backlog a growing share of requests is
//! refused at the door (before the body is read, so a refusal costs microseconds), reaching all of
//! them at `hard`. Acceptance then settles where intake equals what the flusher drains: goodput
//! stays near capacity and no window goes without acceptance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spoor_store::Head;

use crate::error::Error;

pub struct Pacer {
    head: Arc<Head>,
    /// Backlog (live and flushing bytes) where refusals start.
    soft: usize,
    /// Backlog where everything is refused; the head's own limit.
    hard: usize,
    /// The hint sent with a refusal: `limits.retry_after_secs`, as for the head's own refusal.
    retry_after_secs: u64,
    /// A cheap random stream (xorshift), shared without locks: races only reuse a draw.
    state: AtomicU64,
}

impl Pacer {
    /// Paces between half of `hard` and `hard` (the flusher cuts everything past half).
    pub fn new(head: Arc<Head>, hard: usize, retry_after_secs: u64) -> Pacer {
        Pacer { head, soft: hard / 2, hard, retry_after_secs, state: AtomicU64::new(0x9e37_79b9_7f4a_7c15) }
    }

    /// The share of requests refused now, 0.0 to 1.0.
    pub fn refused_share(&self) -> f64 {
        let backlog = self.head.total_bytes();
        if backlog <= self.soft {
            return 0.0;
        }
        ((backlog - self.soft) as f64 / (self.hard - self.soft).max(1) as f64).min(1.0)
    }

    /// Admits or refuses one request, refusing with probability [`Pacer::refused_share`].
    pub fn admit(&self) -> Result<(), Error> {
        let share = self.refused_share();
        if share == 0.0 || (share < 1.0 && self.draw() >= share) {
            return Ok(());
        }
        Err(Error::unavailable(
            format!(
                "live_bytes_exceeded: {:.0}% of requests are refused while blocks are written (backlog {} of {} bytes); retry later",
                share * 100.0,
                self.head.total_bytes(),
                self.hard
            ),
            self.retry_after_secs,
        ))
    }

    /// A uniform draw in [0, 1).
    fn draw(&self) -> f64 {
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spoor_model::{Fragment, TraceId};
    use spoor_store::Limits;

    use super::*;

    fn head() -> Arc<Head> {
        let limits = Limits {
            max_live_traces: 1 << 20,
            max_bytes_per_trace: 1 << 20,
            max_bytes_per_tenant: 1 << 30,
            max_bytes_total: 1 << 30,
        };
        Arc::new(Head::new(limits))
    }

    fn fill(head: &Head, bytes: usize, n: u8) {
        let f = Fragment { trace_id: TraceId([n; 16]), spans: 1, bytes: Bytes::from(vec![0u8; bytes]) };
        head.insert("t", &[f], 0);
    }

    #[test]
    fn refusals_grow_with_the_backlog() {
        let h = head();
        let p = Pacer::new(h.clone(), 1000, 5);
        assert_eq!(p.refused_share(), 0.0);
        assert!((0..1000).all(|_| p.admit().is_ok()), "below half: everything admitted");
        fill(&h, 750, 1);
        assert!((p.refused_share() - 0.5).abs() < 1e-9);
        let admitted = (0..10_000).filter(|_| p.admit().is_ok()).count();
        assert!((4000..6000).contains(&admitted), "about half admitted at 3/4 full: {admitted}");
        fill(&h, 300, 2);
        let e = p.admit().unwrap_err();
        assert_eq!(e.retry_after_secs(), Some(5));
        assert!(e.to_string().contains("live_bytes_exceeded"), "{e}");
    }
}

//! The time grid of a metrics query: its sample times, and the step bucket each span start
//! falls in (right-closed, `(t - step, t]` stamped `t`).

use crate::error::{Error, Result};

/// Most intervals a range query may have; a smaller step is refused.
pub const MAX_INTERVALS: u64 = 10_000;

/// Nanoseconds per second: span times are in ns, series values per second.
pub(super) const SECOND: u64 = 1_000_000_000;

/// Tempo's `DefaultQueryRangeStep` for [start, end] (unix ns): about 240 points, in multiples
/// of 50ms below a minute of range, else the largest of 1h, 5m, 1m, 15s, 5s, 1s that fits.
pub fn default_step(start: u64, end: u64) -> u64 {
    const FIFTY_MS: u64 = 50_000_000;
    let range = end.saturating_sub(start);
    let target = range / 240;
    if range < 60 * SECOND {
        return (target / FIFTY_MS * FIFTY_MS).max(FIFTY_MS);
    }
    [3600, 300, 60, 15, 5].into_iter().map(|s| s * SECOND).find(|&s| target >= s).unwrap_or(SECOND)
}

/// The smallest step [start, end] allows: at most [`MAX_INTERVALS`] intervals.
pub fn min_step(start: u64, end: u64) -> u64 {
    end.saturating_sub(start).div_ceil(MAX_INTERVALS).max(1)
}

/// The sample times of a query and the bucket each span start falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// The first sample's time; samples follow every `step`.
    first: u64,
    step: u64,
    len: usize,
    /// Spans starting in [from, to] count.
    from: u64,
    to: u64,
    instant: bool,
}

impl Grid {
    /// A range query: `start` rounded down to a multiple of `step`, `end` rounded up, and
    /// samples at both and every step between. The first sample's bucket, `(first - step,
    /// first]`, is the step Tempo prepends before the start.
    pub fn range(start: u64, end: u64, step: u64) -> Result<Grid> {
        if step == 0 {
            return Err(Error::Invalid("step must be positive".into()));
        }
        if end < start {
            return Err(Error::Invalid("end must be greater than start".into()));
        }
        let first = start - start % step;
        let last = end
            .div_ceil(step)
            .checked_mul(step)
            .ok_or_else(|| Error::Invalid("end is too far in the future".into()))?;
        let intervals = (last - first) / step;
        // The caller refuses more than MAX_INTERVALS; the two extra are rounding and the
        // prepended step. This only keeps a careless caller from allocating without bound.
        if intervals > MAX_INTERVALS + 2 {
            return Err(Error::Invalid(format!("{intervals} intervals are more than {MAX_INTERVALS}")));
        }
        let from = if first >= step { first - step + 1 } else { 0 };
        Ok(Grid { first, step, len: intervals as usize + 1, from, to: last, instant: false })
    }

    /// An instant query: one bucket, [start, end], stamped `end`.
    pub fn instant(start: u64, end: u64) -> Result<Grid> {
        if end <= start {
            return Err(Error::Invalid("end must be greater than start".into()));
        }
        Ok(Grid { first: end, step: end - start, len: 1, from: start, to: end, instant: true })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// The sample times (unix ns), one per bucket.
    pub fn timestamps(&self) -> Vec<u64> {
        (0..self.len as u64).map(|k| self.first + k * self.step).collect()
    }

    /// The span starts that count, inclusive.
    pub fn span_range(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// The bucket of a span starting at `t`.
    pub fn bucket(&self, t: u64) -> Option<usize> {
        if t < self.from || t > self.to {
            return None;
        }
        if self.instant || t <= self.first {
            return Some(0);
        }
        Some((t - self.first).div_ceil(self.step) as usize)
    }

    pub(super) fn step_seconds(&self) -> f64 {
        self.step as f64 / SECOND as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND;

    #[test]
    fn default_steps_follow_tempo() {
        assert_eq!(default_step(0, 3600 * S), 15 * S); // 1h / 240 = 15s
        assert_eq!(default_step(0, 24 * 3600 * S), 300 * S); // 6m fits 5m
        assert_eq!(default_step(0, 240 * 3600 * S), 3600 * S);
        assert_eq!(default_step(0, 2 * 60 * S), S); // 0.5s rounds down to the 1s minimum
        assert_eq!(default_step(0, 30 * S), 100_000_000); // 125ms → 100ms
        assert_eq!(default_step(0, S), 50_000_000); // at least 50ms
        assert_eq!(min_step(0, 10_000 * S), S);
        assert_eq!(min_step(0, 10_001 * S), S + 100_000); // rounded up
    }

    #[test]
    fn range_grid_aligns_and_prepends_a_step() {
        let g = Grid::range(12 * S + 300, 20 * S + 1, 5 * S).unwrap();
        // start 12.0000003s → 10s; end 20.000000001s → 25s.
        assert_eq!(g.timestamps(), vec![10 * S, 15 * S, 20 * S, 25 * S]);
        assert_eq!(g.span_range(), (5 * S + 1, 25 * S));
        // Right-closed: (5s, 10s] is the first bucket, 10s itself included, 5s not.
        assert_eq!(g.bucket(5 * S), None);
        assert_eq!(g.bucket(5 * S + 1), Some(0));
        assert_eq!(g.bucket(10 * S), Some(0));
        assert_eq!(g.bucket(10 * S + 1), Some(1));
        assert_eq!(g.bucket(25 * S), Some(3));
        assert_eq!(g.bucket(25 * S + 1), None);
        // Aligned bounds stay.
        let g = Grid::range(10 * S, 20 * S, 5 * S).unwrap();
        assert_eq!(g.timestamps(), vec![10 * S, 15 * S, 20 * S]);
        // A range starting at 0 has no earlier step to prepend.
        let g = Grid::range(0, 2, 1).unwrap();
        assert_eq!((g.bucket(0), g.bucket(1), g.len()), (Some(0), Some(1), 3));
        assert!(Grid::range(0, 10, 0).is_err());
        assert!(Grid::range(0, 1_000_000 * S, S).is_err());
    }

    #[test]
    fn instant_grid_is_one_closed_bucket() {
        let g = Grid::instant(10 * S, 20 * S).unwrap();
        assert_eq!(g.timestamps(), vec![20 * S]);
        assert_eq!((g.bucket(10 * S), g.bucket(20 * S), g.bucket(20 * S + 1)), (Some(0), Some(0), None));
        assert_eq!(g.step_seconds(), 10.0);
        assert!(Grid::instant(5, 5).is_err());
    }
}

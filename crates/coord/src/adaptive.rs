//! Adaptive concurrency of an upstream key without a fixed limit (SPEC §4), as a pure state
//! machine over clock readings (ms).
//!
//! * Starts at [`START`].
//! * A 429 judged to be a concurrency limit: limit = max(3, ⌊observed concurrency × 0.85⌋),
//!   and no raise for [`COOLDOWN_MS`].
//! * Raise by 2 (max [`MAX`]) when utilisation stays high — at least 60 % of the last (≥ 5)
//!   samples at ≥ 0.7 of the limit — or after 30 minutes without a 429 at mean utilisation
//!   ≥ 0.3.
//! * The reservation ratio r for callers without cache affinity (they may use only
//!   `limit × (1 − r)` slots) moves between 0.10 and 0.35: high confidence (good success rate,
//!   long since the last 429, a stable limit) gives the low end.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub const START: u32 = 50;
pub const MIN: u32 = 3;
pub const MAX: u32 = 200;
pub const COOLDOWN_MS: i64 = 5 * 60_000;
pub const QUIET_MS: i64 = 30 * 60_000;
const SAMPLES: usize = 10;
const HISTORY: usize = 50;
const OUTCOMES: usize = 50;

/// One change of a learned limit, for the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitChange {
    pub at_ms: i64,
    pub from: u32,
    pub to: u32,
    /// `concurrency_429`, `high_utilisation` or `quiet_period`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)] // Serialize: kept as JSON in Redis
pub struct Adaptive {
    pub limit: u32,
    last_429_ms: Option<i64>,
    last_change_ms: i64,
    created_ms: i64,
    samples: VecDeque<(i64, f64)>,
    outcomes: VecDeque<bool>,
    pub history: VecDeque<LimitChange>,
}

impl Adaptive {
    #[must_use]
    pub fn new(now: i64) -> Self {
        Self {
            limit: START,
            last_429_ms: None,
            last_change_ms: now,
            created_ms: now,
            samples: VecDeque::with_capacity(SAMPLES),
            outcomes: VecDeque::with_capacity(OUTCOMES),
            history: VecDeque::new(),
        }
    }

    fn change(&mut self, now: i64, to: u32, reason: &str) {
        if to == self.limit {
            return;
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(LimitChange {
            at_ms: now,
            from: self.limit,
            to,
            reason: reason.to_string(),
        });
        self.limit = to;
        self.last_change_ms = now;
        self.samples.clear();
    }

    /// A 429 that is a concurrency limit, hit with `observed` requests in flight on the key.
    pub fn on_concurrency_429(&mut self, now: i64, observed: u32) {
        self.last_429_ms = Some(now);
        let to = ((u64::from(observed) * 85 / 100) as u32).max(MIN);
        self.change(now, to.min(self.limit.max(MIN)), "concurrency_429");
    }

    /// Any other 429 (requests or tokens per minute): not a concurrency signal, but recent.
    pub fn on_other_429(&mut self, now: i64) {
        self.last_429_ms = Some(now);
    }

    /// The result of an attempt on the key (for the confidence behind r).
    pub fn on_outcome(&mut self, ok: bool) {
        if self.outcomes.len() == OUTCOMES {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(ok);
    }

    /// A request started with `in_use` requests in flight (itself included).
    pub fn sample(&mut self, now: i64, in_use: u32) {
        // Nothing is learned inside the cooldown after a 429.
        if self.last_429_ms.is_some_and(|t| now - t < COOLDOWN_MS) {
            return;
        }
        let util = f64::from(in_use) / f64::from(self.limit.max(1));
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, util));
        if self.limit >= MAX {
            return;
        }
        let n = self.samples.len();
        let high = self.samples.iter().filter(|(_, u)| *u >= 0.7).count();
        if n >= 5 && high * 10 >= n * 6 {
            self.change(now, (self.limit + 2).min(MAX), "high_utilisation");
            return;
        }
        let quiet_since = self
            .last_429_ms
            .unwrap_or(self.created_ms)
            .max(self.last_change_ms);
        if now - quiet_since >= QUIET_MS && n >= 5 {
            #[allow(clippy::cast_precision_loss)]
            let mean = self.samples.iter().map(|(_, u)| u).sum::<f64>() / n as f64;
            if mean >= 0.3 {
                self.change(now, (self.limit + 2).min(MAX), "quiet_period");
            }
        }
    }

    /// The share of slots kept for callers with cache affinity, 0.10..=0.35.
    #[must_use]
    pub fn reserve_ratio(&self, now: i64) -> f64 {
        reserve_ratio(
            &self.outcomes,
            self.last_429_ms.map(|t| now - t),
            now - self.last_change_ms,
        )
    }
}

/// r from confidence: the success rate of recent attempts, the time since the last 429
/// (full confidence after 30 min) and the time the limit has been stable (full after 10 min).
#[must_use]
pub fn reserve_ratio(outcomes: &VecDeque<bool>, since_429_ms: Option<i64>, stable_ms: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let success = if outcomes.is_empty() {
        1.0
    } else {
        outcomes.iter().filter(|ok| **ok).count() as f64 / outcomes.len() as f64
    };
    #[allow(clippy::cast_precision_loss)]
    let calm = since_429_ms.map_or(1.0, |ms| (ms as f64 / QUIET_MS as f64).clamp(0.0, 1.0));
    #[allow(clippy::cast_precision_loss)]
    let stable = (stable_ms as f64 / 600_000.0).clamp(0.0, 1.0);
    let confidence = success * 0.5 + calm * 0.3 + stable * 0.2;
    0.35 - 0.25 * confidence
}

/// Slots a caller may use: all of them with cache affinity, else `limit × (1 − r)` (at least
/// one).
#[must_use]
pub fn usable_slots(limit: u32, reserve_ratio: f64, has_affinity: bool) -> u32 {
    if has_affinity {
        return limit;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (f64::from(limit) * (1.0 - reserve_ratio)).floor() as u32;
    n.clamp(1, limit.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_on_a_concurrency_429() {
        let mut a = Adaptive::new(0);
        a.on_concurrency_429(1, 20);
        assert_eq!(a.limit, 17, "⌊20 × 0.85⌋");
        a.on_concurrency_429(2, 2);
        assert_eq!(a.limit, MIN);
        assert_eq!(a.history.len(), 2);
        assert_eq!(a.history[0].reason, "concurrency_429");
    }

    #[test]
    fn rises_under_sustained_high_utilisation_but_not_in_the_cooldown() {
        let mut a = Adaptive::new(0);
        a.on_concurrency_429(0, 12); // limit 10
        assert_eq!(a.limit, 10);
        for i in 0..10 {
            a.sample(1000 + i, 9);
        }
        assert_eq!(a.limit, 10, "5-minute cooldown after a 429");
        let t = COOLDOWN_MS + 1;
        for i in 0..4 {
            a.sample(t + i, 9);
        }
        assert_eq!(a.limit, 10, "needs ≥ 5 samples");
        a.sample(t + 5, 9);
        assert_eq!(a.limit, 12);
        for i in 0..5 {
            a.sample(t + 10 + i, 2);
        }
        assert_eq!(a.limit, 12, "low utilisation does not raise");
    }

    #[test]
    fn rises_after_a_quiet_half_hour_at_moderate_use() {
        let mut a = Adaptive::new(0);
        for i in 0..5 {
            a.sample(i, 20); // 0.4 of 50
        }
        assert_eq!(a.limit, START);
        for i in 0..5 {
            a.sample(QUIET_MS + i, 20);
        }
        assert_eq!(a.limit, START + 2);
        assert_eq!(a.history.back().unwrap().reason, "quiet_period");
    }

    #[test]
    fn reservation_ratio_spans_its_range() {
        let good: VecDeque<bool> = std::iter::repeat_n(true, 10).collect();
        let bad: VecDeque<bool> = std::iter::repeat_n(false, 10).collect();
        assert!((reserve_ratio(&good, None, 3_600_000) - 0.10).abs() < 1e-9);
        assert!((reserve_ratio(&bad, Some(0), 0) - 0.35).abs() < 1e-9);
        assert_eq!(usable_slots(10, 0.10, false), 9);
        assert_eq!(usable_slots(10, 0.35, false), 6);
        assert_eq!(usable_slots(10, 0.35, true), 10);
        assert_eq!(usable_slots(1, 0.35, false), 1);
    }
}

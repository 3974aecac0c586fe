//! The circuit breaker of one upstream key (SPEC §4), as a pure state machine over a clock
//! reading, so the in-process and the Redis live state apply the same rules.
//!
//! * Window: the last 20 results within 300 s. Opens when it holds ≥ 5 results and the error
//!   rate is ≥ 0.5.
//! * Open: no traffic until the probe time, 30 s · 2^min(⌊failures / 5⌋, 4), capped at 300 s,
//!   where `failures` counts the failures that opened it plus earlier re-openings (each
//!   failed probe round doubles the wait, within the cap).
//! * Half-open: admits at most [`PROBES`] requests at a time; 3 successes close it, 2 failures
//!   reopen it.
//! * Client errors are never reported here; an attempt that ends without a verdict (a client
//!   error, a disconnect) gives its probe slot back with [`Breaker::release_probe`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub const WINDOW: usize = 20;
pub const WINDOW_MS: i64 = 300_000;
pub const MIN_RESULTS: usize = 5;
pub const PROBES: u32 = 2;
pub const CLOSE_AFTER: u32 = 3;
pub const REOPEN_AFTER: u32 = 2;
pub const PROBE_LAPSE_MS: i64 = 300_000;

/// What a request may do with this key now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: go.
    Pass,
    /// Half-open: go as one of the few probes (report the result, or release the slot).
    Probe,
    /// Open (or every probe slot taken): skip this key; the next probe is possible at this
    /// clock reading (ms).
    Blocked { until_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// The breaker as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BreakerView {
    pub state: BreakerState,
    /// 0..=1, +0.15 per success, −0.03 per failure.
    pub health: f64,
    pub window_results: u32,
    pub window_failures: u32,
    /// When open: the clock reading (ms since the epoch) of the next probe.
    pub probe_at_ms: Option<i64>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)] // Serialize: kept as JSON in Redis
pub struct Breaker {
    window: VecDeque<(i64, bool)>,
    state: BreakerState,
    probe_at_ms: i64,
    /// Failures that count toward the probe delay (reset when it closes).
    failures: u32,
    probes_out: u32,
    /// When the last probe slot was handed out: a probe whose holder vanished without a word
    /// cannot block the key for longer than [`PROBE_LAPSE_MS`].
    last_probe_ms: i64,
    probe_ok: u32,
    probe_err: u32,
    /// Health in thousandths (exact steps of 150 and 30).
    health_milli: i32,
    consecutive_failures: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            window: VecDeque::with_capacity(WINDOW),
            state: BreakerState::Closed,
            probe_at_ms: 0,
            failures: 0,
            probes_out: 0,
            last_probe_ms: 0,
            probe_ok: 0,
            probe_err: 0,
            health_milli: 1000,
            consecutive_failures: 0,
        }
    }
}

/// The wait before the next probe for `failures` counted failures.
#[must_use]
pub fn probe_delay_ms(failures: u32) -> i64 {
    let exp = (failures / 5).min(4);
    (30_000_i64 << exp).min(300_000)
}

impl Breaker {
    fn trim(&mut self, now: i64) {
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now - *t > WINDOW_MS)
        {
            self.window.pop_front();
        }
        while self.window.len() > WINDOW {
            self.window.pop_front();
        }
    }

    fn open(&mut self, now: i64) {
        self.state = BreakerState::Open;
        self.probe_at_ms = now + probe_delay_ms(self.failures);
        self.probes_out = 0;
        self.probe_ok = 0;
        self.probe_err = 0;
    }

    /// May a request use this key now? Takes a probe slot when half-open.
    pub fn admit(&mut self, now: i64) -> Gate {
        match self.state {
            BreakerState::Closed => Gate::Pass,
            BreakerState::Open if now < self.probe_at_ms => Gate::Blocked {
                until_ms: self.probe_at_ms,
            },
            BreakerState::Open | BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                if self.probes_out >= PROBES && now - self.last_probe_ms > PROBE_LAPSE_MS {
                    self.probes_out = 0;
                }
                if self.probes_out < PROBES {
                    self.probes_out += 1;
                    self.last_probe_ms = now;
                    Gate::Probe
                } else {
                    Gate::Blocked {
                        until_ms: now + 1000,
                    }
                }
            }
        }
    }

    /// Reports the result of an attempt (never a client error).
    pub fn record(&mut self, now: i64, ok: bool) {
        if ok {
            self.health_milli = (self.health_milli + 150).min(1000);
            self.consecutive_failures = 0;
        } else {
            self.health_milli = (self.health_milli - 30).max(0);
            self.consecutive_failures += 1;
        }
        match self.state {
            BreakerState::Closed => {
                self.window.push_back((now, ok));
                self.trim(now);
                let errors = self.window.iter().filter(|(_, ok)| !ok).count();
                if self.window.len() >= MIN_RESULTS && errors * 2 >= self.window.len() {
                    self.failures = u32::try_from(errors).unwrap_or(u32::MAX);
                    self.open(now);
                }
            }
            BreakerState::HalfOpen | BreakerState::Open => {
                self.probes_out = self.probes_out.saturating_sub(1);
                if ok {
                    self.probe_ok += 1;
                    if self.probe_ok >= CLOSE_AFTER {
                        *self = Self {
                            health_milli: self.health_milli,
                            ..Self::default()
                        };
                    }
                } else {
                    self.probe_err += 1;
                    self.failures += 5;
                    if self.probe_err >= REOPEN_AFTER {
                        self.open(now);
                    }
                }
            }
        }
    }

    /// A probe ended without a verdict (client error, disconnect): its slot is free again.
    pub fn release_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_out = self.probes_out.saturating_sub(1);
        }
    }

    /// The admin reset: closed, empty window, full health.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    #[must_use]
    pub fn view(&self, now: i64) -> BreakerView {
        let recent: Vec<&(i64, bool)> = self
            .window
            .iter()
            .filter(|(t, _)| now - *t <= WINDOW_MS)
            .collect();
        BreakerView {
            state: self.state,
            health: f64::from(self.health_milli) / 1000.0,
            window_results: u32::try_from(recent.len()).unwrap_or(u32::MAX),
            window_failures: u32::try_from(recent.iter().filter(|(_, ok)| !ok).count())
                .unwrap_or(u32::MAX),
            probe_at_ms: (self.state != BreakerState::Closed).then_some(self.probe_at_ms),
            consecutive_failures: self.consecutive_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_the_threshold_and_not_before() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.record(0, false);
        }
        assert_eq!(b.admit(0), Gate::Pass, "4 results are too few to judge");
        b.record(0, false);
        assert_eq!(
            b.admit(1),
            Gate::Blocked { until_ms: 60_000 },
            "5 failures: 30 s · 2^⌊5/5⌋"
        );
    }

    #[test]
    fn half_open_admits_only_probes_and_closes_after_three_successes() {
        let mut b = Breaker::default();
        for i in 0..6 {
            b.record(0, i % 2 == 0); // 3 of 6 failed: rate 0.5
        }
        assert!(matches!(b.admit(10), Gate::Blocked { .. }));
        assert_eq!(b.admit(30_000), Gate::Probe, "3 failures: 30 s");
        assert_eq!(b.admit(30_000), Gate::Probe);
        assert!(
            matches!(b.admit(30_000), Gate::Blocked { .. }),
            "only {PROBES} probes at a time"
        );
        b.record(30_001, true);
        assert_eq!(
            b.admit(30_002),
            Gate::Probe,
            "a finished probe frees a slot"
        );
        b.record(30_003, true);
        b.record(30_004, true);
        assert_eq!(b.view(30_005).state, BreakerState::Closed);
        assert_eq!(b.admit(30_005), Gate::Pass);
    }

    #[test]
    fn failed_probes_reopen_with_a_longer_wait() {
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.record(0, false);
        }
        assert_eq!(b.admit(60_000), Gate::Probe);
        b.record(60_000, false);
        assert_eq!(b.admit(60_000), Gate::Probe);
        b.record(60_001, false);
        let v = b.view(60_001);
        assert_eq!(v.state, BreakerState::Open);
        assert_eq!(
            v.probe_at_ms,
            Some(60_001 + 240_000),
            "5 + 2×5 counted failures → 30·2^3 s"
        );
    }

    #[test]
    fn delays_are_capped() {
        assert_eq!(probe_delay_ms(0), 30_000);
        assert_eq!(probe_delay_ms(5), 60_000);
        assert_eq!(probe_delay_ms(20), 300_000);
        assert_eq!(probe_delay_ms(1000), 300_000);
    }

    #[test]
    fn old_results_leave_the_window() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.record(0, false);
        }
        b.record(WINDOW_MS + 1, false);
        assert_eq!(b.admit(WINDOW_MS + 1), Gate::Pass, "four failures expired");
    }

    #[test]
    fn health_moves_in_exact_steps() {
        let mut b = Breaker::default();
        b.record(0, false);
        b.record(0, false);
        assert!((b.view(0).health - 0.94).abs() < 1e-9);
        b.record(0, true);
        assert!((b.view(0).health - 1.0).abs() < 1e-9);
        b.reset();
        assert_eq!(b.view(0).state, BreakerState::Closed);
    }
}

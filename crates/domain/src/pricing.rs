//! Tiered pricing and the cost engine (SPEC §5).
//!
//! Prices are per million tokens, chosen by *context size* — input + cache read + cache
//! creation, with usage already normalised so `input` excludes cached tokens (OpenAI and Gemini
//! count cached tokens inside their input figure; the protocol layer subtracts them before they
//! reach this engine, so nothing is billed twice). Only Anthropic reports cache creation, so the
//! one formula is the SPEC's "+ cache creation for Claude formats".

use serde::{Deserialize, Serialize};

use crate::money::{Multiplier, Usd};

/// One price band. `up_to` is inclusive; `None` = unbounded (only the last tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PriceTier {
    #[serde(default)]
    pub up_to: Option<u64>,
    pub input_per_m: Usd,
    pub output_per_m: Usd,
    /// 5-minute cache write; default input × 1.25.
    #[serde(default)]
    pub cache_creation_per_m: Option<Usd>,
    /// 1-hour cache write; default input × 2.
    #[serde(default)]
    pub cache_creation_1h_per_m: Option<Usd>,
    /// Cache read; default input × 0.1.
    #[serde(default)]
    pub cache_read_per_m: Option<Usd>,
}

impl PriceTier {
    #[must_use]
    pub fn flat(input_per_m: Usd, output_per_m: Usd) -> Self {
        Self {
            up_to: None,
            input_per_m,
            output_per_m,
            cache_creation_per_m: None,
            cache_creation_1h_per_m: None,
            cache_read_per_m: None,
        }
    }

    /// The unit prices with the SPEC's defaults applied.
    #[must_use]
    pub fn unit_prices(&self) -> UnitPrices {
        UnitPrices {
            input: self.input_per_m,
            output: self.output_per_m,
            cache_creation_5m: self
                .cache_creation_per_m
                .unwrap_or_else(|| self.input_per_m.scale(5, 4)),
            cache_creation_1h: self
                .cache_creation_1h_per_m
                .unwrap_or_else(|| self.input_per_m.scale(2, 1)),
            cache_read: self
                .cache_read_per_m
                .unwrap_or_else(|| self.input_per_m.scale(1, 10)),
        }
    }
}

/// Resolved per-million prices of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitPrices {
    pub input: Usd,
    pub output: Usd,
    pub cache_creation_5m: Usd,
    pub cache_creation_1h: Usd,
    pub cache_read: Usd,
}

/// A model's price list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TieredPricing {
    pub tiers: Vec<PriceTier>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("tiered pricing needs at least one tier")]
    Empty,
    #[error("tier {0}: `up_to` must be greater than the previous tier's")]
    NotAscending(usize),
    #[error("tier {0}: only the last tier may be unbounded (`up_to: null`)")]
    UnboundedNotLast(usize),
    #[error("tier {0}: the last tier must be unbounded (`up_to: null`)")]
    LastBounded(usize),
    #[error("tier {0}: prices must not be negative")]
    Negative(usize),
}

impl TieredPricing {
    #[must_use]
    pub fn flat(input_per_m: Usd, output_per_m: Usd) -> Self {
        Self {
            tiers: vec![PriceTier::flat(input_per_m, output_per_m)],
        }
    }

    pub fn validate(&self) -> Result<(), PricingError> {
        if self.tiers.is_empty() {
            return Err(PricingError::Empty);
        }
        let last = self.tiers.len() - 1;
        let mut prev: Option<u64> = None;
        for (i, t) in self.tiers.iter().enumerate() {
            let prices = [
                Some(t.input_per_m),
                Some(t.output_per_m),
                t.cache_creation_per_m,
                t.cache_creation_1h_per_m,
                t.cache_read_per_m,
            ];
            if prices.iter().flatten().any(|p| p.is_negative()) {
                return Err(PricingError::Negative(i));
            }
            match (t.up_to, i == last) {
                (None, false) => return Err(PricingError::UnboundedNotLast(i)),
                (Some(_), true) => return Err(PricingError::LastBounded(i)),
                (Some(u), false) => {
                    if prev.is_some_and(|p| u <= p) {
                        return Err(PricingError::NotAscending(i));
                    }
                    prev = Some(u);
                }
                (None, true) => {}
            }
        }
        Ok(())
    }

    /// The tier for a context size: the first whose `up_to` is at least the size.
    #[must_use]
    pub fn tier_for(&self, context_tokens: u64) -> Option<(usize, &PriceTier)> {
        self.tiers
            .iter()
            .enumerate()
            .find(|(_, t)| t.up_to.is_none_or(|u| context_tokens <= u))
            .or_else(|| self.tiers.iter().enumerate().next_back())
    }
}

/// Token counts, normalised: `input` excludes cache reads and writes; `output` includes
/// reasoning tokens (they are billed as output); `reasoning` is informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_creation_5m: u64,
    pub cache_creation_1h: u64,
    pub cache_read: u64,
    pub reasoning: u64,
}

impl TokenUsage {
    #[must_use]
    pub const fn context_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation_5m)
            .saturating_add(self.cache_creation_1h)
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.input == 0
            && self.output == 0
            && self.cache_creation_5m == 0
            && self.cache_creation_1h == 0
            && self.cache_read == 0
    }
}

/// The full cost of a request, per component, in list prices, plus what the upstream account
/// actually pays.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostBreakdown {
    /// Index of the applied tier and its bound.
    pub tier_index: usize,
    pub tier_up_to: Option<u64>,
    pub unit_prices: Option<UnitPrices>,
    pub input: Usd,
    pub output: Usd,
    pub cache_creation_5m: Usd,
    pub cache_creation_1h: Usd,
    pub cache_read: Usd,
    pub per_request: Usd,
    /// Sum of the components: charged to the user's quota or the standalone key's balance.
    pub total: Usd,
    /// `total × key multiplier`, or zero for a free-tier provider; counts against the provider.
    pub actual_total: Usd,
    pub multiplier: Multiplier,
}

/// What the engine needs to price one request.
#[derive(Debug, Clone, Copy)]
pub struct CostInput<'a> {
    pub pricing: &'a TieredPricing,
    pub per_request: Option<Usd>,
    pub usage: &'a TokenUsage,
    /// Per-request prices are charged only for successful requests.
    pub success: bool,
    pub multiplier: Multiplier,
    pub free_tier: bool,
}

/// Prices a request. Returns `None` when the pricing has no tier at all (a model without
/// a price: the caller flags it — it is never silently free).
#[must_use]
pub fn compute_cost(inp: &CostInput<'_>) -> Option<CostBreakdown> {
    let (tier_index, tier) = inp.pricing.tier_for(inp.usage.context_tokens())?;
    let p = tier.unit_prices();
    let u = inp.usage;
    let input = Usd::per_million(u.input, p.input);
    let output = Usd::per_million(u.output, p.output);
    let cache_creation_5m = Usd::per_million(u.cache_creation_5m, p.cache_creation_5m);
    let cache_creation_1h = Usd::per_million(u.cache_creation_1h, p.cache_creation_1h);
    let cache_read = Usd::per_million(u.cache_read, p.cache_read);
    let per_request = if inp.success {
        inp.per_request.unwrap_or(Usd::ZERO)
    } else {
        Usd::ZERO
    };
    let total = input + output + cache_creation_5m + cache_creation_1h + cache_read + per_request;
    let actual_total = if inp.free_tier {
        Usd::ZERO
    } else {
        total.times(inp.multiplier)
    };
    Some(CostBreakdown {
        tier_index,
        tier_up_to: tier.up_to,
        unit_prices: Some(p),
        input,
        output,
        cache_creation_5m,
        cache_creation_1h,
        cache_read,
        per_request,
        total,
        actual_total,
        multiplier: inp.multiplier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    fn two_tiers() -> TieredPricing {
        TieredPricing {
            tiers: vec![
                PriceTier {
                    up_to: Some(200_000),
                    ..PriceTier::flat(usd("3"), usd("15"))
                },
                PriceTier {
                    cache_creation_1h_per_m: Some(usd("12")),
                    ..PriceTier::flat(usd("6"), usd("22.5"))
                },
            ],
        }
    }

    #[test]
    fn validation_catches_malformed_tiers() {
        assert!(two_tiers().validate().is_ok());
        assert_eq!(
            TieredPricing::default().validate(),
            Err(PricingError::Empty)
        );
        let mut p = two_tiers();
        p.tiers.swap(0, 1);
        assert_eq!(p.validate(), Err(PricingError::UnboundedNotLast(0)));
        let mut p = two_tiers();
        p.tiers[1].up_to = Some(100);
        assert_eq!(p.validate(), Err(PricingError::LastBounded(1)));
    }

    #[test]
    fn tier_chosen_by_context_including_cache() {
        let p = two_tiers();
        let mut u = TokenUsage {
            input: 150_000,
            ..TokenUsage::default()
        };
        assert_eq!(p.tier_for(u.context_tokens()).unwrap().0, 0);
        u.cache_read = 50_000;
        assert_eq!(
            p.tier_for(u.context_tokens()).unwrap().0,
            0,
            "200k is inclusive"
        );
        u.cache_read = 50_001;
        assert_eq!(p.tier_for(u.context_tokens()).unwrap().0, 1);
    }

    #[test]
    fn golden_claude_request_with_both_cache_writes() {
        // Hand-computed: tier 0 ($3 in, $15 out, 5m write = 3.75, 1h write = 6, read = 0.3)
        // input 1000 → 0.003; output 500 → 0.0075; 5m 2000 → 0.0075; 1h 1000 → 0.006;
        // read 10000 → 0.003; per request 0.01 → total 0.037; ×0.55 → 0.02035
        let p = two_tiers();
        let u = TokenUsage {
            input: 1000,
            output: 500,
            cache_creation_5m: 2000,
            cache_creation_1h: 1000,
            cache_read: 10_000,
            reasoning: 0,
        };
        let c = compute_cost(&CostInput {
            pricing: &p,
            per_request: Some(usd("0.01")),
            usage: &u,
            success: true,
            multiplier: "0.55".parse().unwrap(),
            free_tier: false,
        })
        .unwrap();
        assert_eq!(c.tier_index, 0);
        assert_eq!(c.input, usd("0.003"));
        assert_eq!(c.output, usd("0.0075"));
        assert_eq!(c.cache_creation_5m, usd("0.0075"));
        assert_eq!(c.cache_creation_1h, usd("0.006"));
        assert_eq!(c.cache_read, usd("0.003"));
        assert_eq!(c.total, usd("0.037"));
        assert_eq!(c.actual_total, usd("0.02035"));
    }

    #[test]
    fn failure_skips_per_request_price_and_free_tier_costs_nothing() {
        let p = two_tiers();
        let u = TokenUsage {
            input: 300_000,
            output: 1000,
            ..TokenUsage::default()
        };
        let c = compute_cost(&CostInput {
            pricing: &p,
            per_request: Some(usd("0.01")),
            usage: &u,
            success: false,
            multiplier: Multiplier::ONE,
            free_tier: true,
        })
        .unwrap();
        assert_eq!(c.tier_index, 1);
        // 300k × $6 = 1.8 ; 1000 × 22.5 = 0.0225
        assert_eq!(c.total, usd("1.8225"));
        assert_eq!(c.per_request, Usd::ZERO);
        assert_eq!(c.actual_total, Usd::ZERO);
    }

    #[test]
    fn no_tier_means_no_price() {
        let p = TieredPricing::default();
        let u = TokenUsage::default();
        assert!(
            compute_cost(&CostInput {
                pricing: &p,
                per_request: None,
                usage: &u,
                success: true,
                multiplier: Multiplier::ONE,
                free_tier: false,
            })
            .is_none()
        );
    }
}

//! Exact money. Amounts are integers of nano-USD (10⁻⁹ USD): an `i64` holds ±9.2 billion USD,
//! every price in use today (down to $0.01 per million tokens = 0.01 nano-USD per token) is
//! representable per million tokens, and no floating point is ever involved. A cost component is
//! rounded once, half-to-even, to the nano-USD; see [`Usd::per_million`].
//!
//! On the JSON API money is a decimal *string* (`"0.000015"`) so no client parser turns it into a
//! float; input accepts a string or a JSON number (the number's shortest decimal form is taken,
//! which is exactly what the caller wrote for any literal of up to 15 significant digits).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub};
use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOS_PER_USD: i64 = 1_000_000_000;
const PPM: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    #[error("`{0}` has more than {1} decimal places")]
    TooPrecise(String, u32),
    #[error("`{0}` is out of range")]
    OutOfRange(String),
    #[error("`{0}` must not be negative")]
    Negative(String),
}

/// An amount of US dollars, exact to the nano-dollar.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Usd(i64);

impl Usd {
    pub const ZERO: Self = Self(0);

    #[must_use]
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    #[must_use]
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// Whole dollars; handy in tests and defaults.
    #[must_use]
    pub const fn dollars(d: i64) -> Self {
        Self(d * NANOS_PER_USD)
    }

    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    #[must_use]
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    #[must_use]
    pub const fn saturating_add(self, o: Self) -> Self {
        Self(self.0.saturating_add(o.0))
    }

    #[must_use]
    pub const fn saturating_sub(self, o: Self) -> Self {
        Self(self.0.saturating_sub(o.0))
    }

    /// `units × price_per_million / 1e6`, rounded half-to-even to the nano-dollar. This is the
    /// one place token counts become money.
    #[must_use]
    pub fn per_million(units: u64, price_per_million: Self) -> Self {
        let num = i128::from(units) * i128::from(price_per_million.0);
        Self(clamp_i64(div_round_half_even(num, 1_000_000)))
    }

    /// `self × multiplier`, rounded half-to-even to the nano-dollar.
    #[must_use]
    pub fn times(self, m: Multiplier) -> Self {
        let num = i128::from(self.0) * i128::from(m.0);
        Self(clamp_i64(div_round_half_even(num, i128::from(PPM))))
    }

    /// `self × num / den` (den > 0), rounded half-to-even; used for the cache-price defaults
    /// (×1.25, ×2, ×0.1).
    #[must_use]
    pub fn scale(self, num: i64, den: i64) -> Self {
        debug_assert!(den > 0);
        Self(clamp_i64(div_round_half_even(
            i128::from(self.0) * i128::from(num),
            i128::from(den.max(1)),
        )))
    }

    /// The exact decimal value in dollars.
    #[must_use]
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 9).normalize()
    }

    /// Exact conversion from a decimal; more than 9 decimal places is an error, not a rounding.
    pub fn from_decimal(d: Decimal) -> Result<Self, MoneyError> {
        let scaled = d
            .checked_mul(Decimal::from(NANOS_PER_USD))
            .ok_or_else(|| MoneyError::OutOfRange(d.to_string()))?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise(d.to_string(), 9));
        }
        scaled
            .to_i64()
            .map(Self)
            .ok_or_else(|| MoneyError::OutOfRange(d.to_string()))
    }

    /// Lossy conversion for the original Aether's export format, which stores floats.
    #[must_use]
    pub fn to_f64_lossy(self) -> f64 {
        self.to_decimal().to_f64().unwrap_or(0.0)
    }

    /// Parses a JSON number given as f64 through its shortest decimal representation.
    pub fn from_f64(f: f64) -> Result<Self, MoneyError> {
        parse_f64_decimal(f).and_then(Self::from_decimal)
    }

    /// Rejects negative amounts (prices, quotas).
    pub fn non_negative(self) -> Result<Self, MoneyError> {
        if self.0 < 0 {
            Err(MoneyError::Negative(self.to_string()))
        } else {
            Ok(self)
        }
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn div_round_half_even(num: i128, den: i128) -> i128 {
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + 1
            }
        }
    }
}

fn parse_f64_decimal(f: f64) -> Result<Decimal, MoneyError> {
    if !f.is_finite() {
        return Err(MoneyError::NotANumber(f.to_string()));
    }
    // Rust prints the shortest decimal that round-trips, i.e. the literal the caller wrote.
    let s = format!("{f}");
    Decimal::from_str(&s).map_err(|_| MoneyError::OutOfRange(s))
}

impl FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let d = Decimal::from_str_exact(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map_err(|_| MoneyError::NotANumber(s.to_string()))?;
        Self::from_decimal(d)
    }
}

impl fmt::Display for Usd {
    /// The normalized decimal (`"0.00003"`, `"1.5"`, `"0"`). Every usage record and journal
    /// entry formats a dozen of these, so the plain case is written from the integer directly;
    /// width, precision or sign flags go through `Decimal` (same text, tested against it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.precision().is_some() || f.width().is_some() || f.sign_plus() || f.alternate() {
            return fmt::Display::fmt(&self.to_decimal(), f);
        }
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD.unsigned_abs();
        let mut frac = abs % NANOS_PER_USD.unsigned_abs();
        if self.0 < 0 {
            f.write_str("-")?;
        }
        write!(f, "{whole}")?;
        if frac != 0 {
            let mut digits = 9;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            write!(f, ".{frac:0digits$}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${self}")
    }
}

impl Add for Usd {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        self.saturating_add(o)
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

impl Sub for Usd {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        self.saturating_sub(o)
    }
}

impl Neg for Usd {
    type Output = Self;
    fn neg(self) -> Self {
        Self(self.0.saturating_neg())
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NumOrStr::deserialize(d)?;
        let r = match v {
            NumOrStr::Int(i) => i
                .checked_mul(NANOS_PER_USD)
                .map(Self)
                .ok_or_else(|| MoneyError::OutOfRange(i.to_string())),
            NumOrStr::Float(f) => Self::from_f64(f),
            NumOrStr::Str(s) => Self::from_str(&s),
        };
        r.map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Int(i64),
    Float(f64),
    Str(String),
}

/// A dimensionless factor (a provider key's cost multiplier), exact to 10⁻⁶.
/// Serialized as a JSON number: six decimals always survive a float round trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Multiplier(i64);

impl Multiplier {
    pub const ONE: Self = Self(PPM);
    pub const ZERO: Self = Self(0);

    #[must_use]
    pub const fn from_ppm(ppm: i64) -> Self {
        Self(ppm)
    }

    #[must_use]
    pub const fn ppm(self) -> i64 {
        self.0
    }

    pub fn from_decimal(d: Decimal) -> Result<Self, MoneyError> {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(MoneyError::Negative(d.to_string()));
        }
        let scaled = d
            .checked_mul(Decimal::from(PPM))
            .ok_or_else(|| MoneyError::OutOfRange(d.to_string()))?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise(d.to_string(), 6));
        }
        scaled
            .to_i64()
            .map(Self)
            .ok_or_else(|| MoneyError::OutOfRange(d.to_string()))
    }

    pub fn from_f64(f: f64) -> Result<Self, MoneyError> {
        parse_f64_decimal(f).and_then(Self::from_decimal)
    }

    #[must_use]
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 6).normalize()
    }

    #[must_use]
    pub fn to_f64(self) -> f64 {
        self.to_decimal().to_f64().unwrap_or(1.0)
    }
}

impl Default for Multiplier {
    fn default() -> Self {
        Self::ONE
    }
}

impl FromStr for Multiplier {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = Decimal::from_str_exact(s.trim()).map_err(|_| MoneyError::NotANumber(s.into()))?;
        Self::from_decimal(d)
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_decimal(), f)
    }
}

impl fmt::Debug for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "×{self}")
    }
}

impl Serialize for Multiplier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.to_f64())
    }
}

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = match NumOrStr::deserialize(d)? {
            NumOrStr::Int(i) => i
                .checked_mul(PPM)
                .ok_or_else(|| MoneyError::OutOfRange(i.to_string()))
                .and_then(|v| Self::from_decimal(Decimal::new(v, 6))),
            NumOrStr::Float(f) => Self::from_f64(f),
            NumOrStr::Str(s) => Self::from_str(&s),
        };
        r.map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_normalized_decimal() {
        let mut values = vec![
            0,
            1,
            -1,
            9,
            10,
            100_000_000,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            -1_500_000_000,
            30_000,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        // A deterministic spread over every magnitude and trailing-zero count.
        let mut x: i64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let zeros = u32::try_from(x.rem_euclid(12)).unwrap();
            values.push((x / 10_i64.pow(zeros)) * 10_i64.pow(zeros) / 1000);
        }
        for v in values {
            let u = Usd::from_nanos(v);
            assert_eq!(u.to_string(), u.to_decimal().to_string(), "{v}");
        }
        // Flags still mean what they mean for a decimal.
        let u = Usd::from_nanos(1_234_500_000);
        assert_eq!(format!("{u:.2}"), format!("{:.2}", u.to_decimal()));
        assert_eq!(format!("{u:>8}"), "  1.2345");
    }

    #[test]
    fn parses_strings_and_numbers_exactly() {
        assert_eq!("0.000015".parse::<Usd>().unwrap().nanos(), 15_000);
        assert_eq!("3".parse::<Usd>().unwrap(), Usd::dollars(3));
        assert_eq!(
            serde_json::from_str::<Usd>("0.1").unwrap().nanos(),
            100_000_000
        );
        assert_eq!(
            serde_json::from_str::<Usd>("\"12.345\"").unwrap().nanos(),
            12_345_000_000
        );
        assert_eq!(serde_json::from_str::<Usd>("15").unwrap(), Usd::dollars(15));
        assert!(
            "0.0000000001".parse::<Usd>().is_err(),
            "sub-nano must be refused"
        );
        assert!("abc".parse::<Usd>().is_err());
        assert_eq!(
            serde_json::to_string(&Usd::from_nanos(15_000)).unwrap(),
            "\"0.000015\""
        );
        assert_eq!(Usd::dollars(-2).to_string(), "-2");
    }

    #[test]
    fn per_million_rounds_half_even_once() {
        // $3 per 1M tokens, 1 token = 3000 nano-USD
        assert_eq!(Usd::per_million(1, Usd::dollars(3)).nanos(), 3000);
        // $0.0375 per 1M, 1 token = 37.5 nano → 38 (half to even: 37.5 → 38)
        let p: Usd = "0.0375".parse().unwrap();
        assert_eq!(Usd::per_million(1, p).nanos(), 38);
        // 3 tokens = 112.5 → 112 (even)
        assert_eq!(Usd::per_million(3, p).nanos(), 112);
        // 1M tokens is exact
        assert_eq!(Usd::per_million(1_000_000, p), p);
    }

    #[test]
    fn multiplier_is_exact() {
        let m: Multiplier = serde_json::from_str("0.55").unwrap();
        assert_eq!(m.ppm(), 550_000);
        assert_eq!(Usd::dollars(1).times(m).to_string(), "0.55");
        assert_eq!(serde_json::to_string(&m).unwrap(), "0.55");
        assert!(serde_json::from_str::<Multiplier>("-1").is_err());
        assert_eq!(Usd::from_nanos(3).times(m).nanos(), 2); // 1.65 → 2
    }

    #[test]
    fn scale_for_cache_defaults() {
        let input = Usd::dollars(3);
        assert_eq!(input.scale(5, 4).to_string(), "3.75");
        assert_eq!(input.scale(1, 10).to_string(), "0.3");
    }
}

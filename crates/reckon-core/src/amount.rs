//! Fixed-point amounts.
//!
//! An [`Amount`] counts micro-units: 1 unit (1 MB, 1 credit, 1 USD, 1 API call)
//! is `1_000_000`. Six decimal places hold a thousandth of a cent and a byte of
//! a megabyte; integers keep every sum exact, which floats cannot.
//!
//! The value is never negative and never above [`AMOUNT_MICROS_MAX`], which
//! keeps every amount and every account total inside `i64` (the column type
//! of both SQLite and PostgreSQL) so storage is lossless.

use std::fmt;

/// Decimal places carried by every amount.
pub const AMOUNT_DECIMALS: u32 = 6;
/// Micro-units per unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;
/// Largest amount any single value or account total may reach: 10^12 units.
/// Far above any real balance, and still 9x below `i64::MAX` micros, so adding
/// two in-range amounts can be checked without overflow tricks.
pub const AMOUNT_MICROS_MAX: i64 = 1_000_000_000_000 * MICROS_PER_UNIT;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

/// What to do with digits past the sixth decimal place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Refuse them (`TooManyDecimals`): the native API's rule.
    Exact,
    /// Round up to the next micro-unit: for reservations, which must never
    /// cover less than was asked.
    Up,
    /// Round half up: for charges computed in floating point by a client.
    HalfUp,
}

/// Why text or a number could not become an [`Amount`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    Empty,
    Negative,
    NotANumber,
    TooManyDecimals,
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AmountError::Empty => "amount is empty",
            AmountError::Negative => "amount must not be negative",
            AmountError::NotANumber => "amount must be a decimal number such as 12 or \"12.5\"",
            AmountError::TooManyDecimals => "amount has more than 6 decimal places",
            AmountError::TooLarge => "amount is above the maximum of 1000000000000 units",
        };
        f.write_str(text)
    }
}

impl std::error::Error for AmountError {}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(AMOUNT_MICROS_MAX);

    /// Builds an amount from micro-units; `None` when out of range.
    pub const fn from_micros(micros: i64) -> Option<Amount> {
        if micros < 0 || micros > AMOUNT_MICROS_MAX {
            None
        } else {
            Some(Amount(micros))
        }
    }

    /// Whole units; `None` when out of range.
    pub const fn from_units(units: i64) -> Option<Amount> {
        match units.checked_mul(MICROS_PER_UNIT) {
            Some(m) => Amount::from_micros(m),
            None => None,
        }
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Sum, or `None` when it would pass [`Amount::MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        // Both are <= MAX < i64::MAX / 2, so the raw sum cannot overflow.
        Amount::from_micros(self.0 + other.0)
    }

    /// Difference, or `None` when it would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        Amount::from_micros(self.0 - other.0)
    }

    /// Difference clamped at zero.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount((self.0 - other.0).max(0))
    }

    /// Parses decimal text exactly: `"12"`, `"12.5"`, `"0.000001"`.
    ///
    /// Exponents (`1e3`) are accepted when they still denote an exact value
    /// with at most six decimals, because JSON encoders emit them for large
    /// and small numbers. Anything that would need rounding is refused rather
    /// than rounded: silent rounding is how balances drift.
    pub fn parse(text: &str) -> Result<Amount, AmountError> {
        Amount::parse_rounded(text, Rounding::Exact)
    }

    /// Parses like [`Amount::parse`], rounding past six decimals as told.
    /// Protocols whose clients send floats (`0.1 + 0.2`) use this.
    pub fn parse_rounded(text: &str, rounding: Rounding) -> Result<Amount, AmountError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let (text, negative) = match text.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (text.strip_prefix('+').unwrap_or(text), false),
        };
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = text[i + 1..].parse().map_err(|_| AmountError::NotANumber)?;
                (&text[..i], exp)
            }
            None => (text, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AmountError::NotANumber);
        }
        // The digits of both parts, read in place (a joined copy was an
        // allocation per amount, and a batch parses a thousand). `point`
        // counts how many of the significant digits stand before the
        // decimal point once the exponent has moved it.
        let digits = Digits {
            int: int_part.as_bytes(),
            frac: frac_part.as_bytes(),
        };
        let all = digits.len();
        let first = (0..all).take_while(|&i| digits.at(i) == b'0').count();
        // Each leading zero dropped moves the point left; trailing zeros do
        // not move it.
        let point = int_part.len() as i64 + exponent as i64 - first as i64;
        let end = all
            - (first..all)
                .rev()
                .take_while(|&i| digits.at(i) == b'0')
                .count();
        if first == end {
            return Ok(Amount::ZERO);
        }
        if negative {
            return Err(AmountError::Negative);
        }
        let mut len = end - first;
        let mut decimals = len as i64 - point;
        let mut carry = false;
        if decimals > AMOUNT_DECIMALS as i64 {
            // Significant digits that stand within six decimals; negative
            // when zeros the text never wrote lie between them and the rest.
            let keep_signed = len as i64 - (decimals - AMOUNT_DECIMALS as i64);
            let keep = keep_signed.max(0) as usize;
            let dropped = first + keep..end;
            carry = match rounding {
                Rounding::Exact => return Err(AmountError::TooManyDecimals),
                Rounding::Up => dropped.clone().any(|i| digits.at(i) != b'0'),
                Rounding::HalfUp => keep_signed >= 0 && digits.at(dropped.start) >= b'5',
            };
            len = keep;
            decimals = AMOUNT_DECIMALS as i64;
        }
        let shift = AMOUNT_DECIMALS as i64 - decimals; // zeros to append to reach micros
        if len as i64 + shift > 19 {
            return Err(AmountError::TooLarge);
        }
        let mut micros: i64 = 0;
        for i in first..first + len {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add((digits.at(i) - b'0') as i64))
                .ok_or(AmountError::TooLarge)?;
        }
        for _ in 0..shift {
            micros = micros.checked_mul(10).ok_or(AmountError::TooLarge)?;
        }
        if carry {
            micros += 1;
        }
        Amount::from_micros(micros).ok_or(AmountError::TooLarge)
    }
}

/// The digits before and after the point as one sequence, without joining
/// them.
struct Digits<'a> {
    int: &'a [u8],
    frac: &'a [u8],
}

impl Digits<'_> {
    fn len(&self) -> usize {
        self.int.len() + self.frac.len()
    }

    fn at(&self, i: usize) -> u8 {
        match self.int.get(i) {
            Some(&b) => b,
            None => self.frac[i - self.int.len()],
        }
    }
}

/// The longest text of an amount: 13 digits of units, a point and 6
/// decimals.
const DECIMAL_TEXT_BYTES_MAX: usize = 20;

/// An amount's shortest exact decimal text, held on the stack: responses
/// write several amounts each, and a `String` per amount was an allocation.
/// The text sits at the end of `bytes`, from `start`: it is written
/// backwards, and left there rather than moved to the front.
pub struct DecimalText {
    bytes: [u8; DECIMAL_TEXT_BYTES_MAX],
    start: usize,
}

impl DecimalText {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and '.' are ever written.
        std::str::from_utf8(self.as_bytes()).expect("ASCII")
    }

    /// The same text as bytes, without `as_str`'s UTF-8 check.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

impl Amount {
    /// The shortest exact decimal form: "12", "12.5", "0.000001".
    pub fn decimal(self) -> DecimalText {
        let mut text = DecimalText {
            bytes: [0; DECIMAL_TEXT_BYTES_MAX],
            start: DECIMAL_TEXT_BYTES_MAX,
        };
        let mut units = self.0 / MICROS_PER_UNIT;
        let mut frac = self.0 % MICROS_PER_UNIT;
        // Written backwards from the end.
        let mut at = DECIMAL_TEXT_BYTES_MAX;
        if frac != 0 {
            let mut digits = AMOUNT_DECIMALS;
            while frac % 10 == 0 {
                frac /= 10;
                digits -= 1;
            }
            for _ in 0..digits {
                at -= 1;
                text.bytes[at] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            at -= 1;
            text.bytes[at] = b'.';
        }
        loop {
            at -= 1;
            text.bytes[at] = b'0' + (units % 10) as u8;
            units /= 10;
            if units == 0 {
                break;
            }
        }
        text.start = at;
        text
    }
}

/// Renders the shortest exact decimal: `12`, `12.5`, `0.000001`.
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.decimal().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        let cases: &[(&str, Result<i64, AmountError>)] = &[
            ("0", Ok(0)),
            ("12", Ok(12_000_000)),
            ("12.5", Ok(12_500_000)),
            ("0.000001", Ok(1)),
            (".5", Ok(500_000)),
            ("5.", Ok(5_000_000)),
            ("007.250", Ok(7_250_000)),
            ("1e3", Ok(1_000_000_000)),
            ("1.5E-3", Ok(1_500)),
            ("2.5e-6", Err(AmountError::TooManyDecimals)),
            ("0.0000001", Err(AmountError::TooManyDecimals)),
            ("0.00000010", Err(AmountError::TooManyDecimals)),
            ("0.1000000", Ok(100_000)),
            ("-1", Err(AmountError::Negative)),
            ("-0", Ok(0)),
            ("", Err(AmountError::Empty)),
            ("abc", Err(AmountError::NotANumber)),
            ("1.2.3", Err(AmountError::NotANumber)),
            ("NaN", Err(AmountError::NotANumber)),
            ("inf", Err(AmountError::NotANumber)),
            (".", Err(AmountError::NotANumber)),
            ("1e", Err(AmountError::NotANumber)),
            ("1000000000000", Ok(AMOUNT_MICROS_MAX)),
            ("1000000000000.000001", Err(AmountError::TooLarge)),
            ("99999999999999999999999", Err(AmountError::TooLarge)),
            ("1e400", Err(AmountError::TooLarge)),
            ("0.05", Ok(50_000)),
            ("37.66", Ok(37_660_000)),
        ];
        for (text, want) in cases {
            let got = Amount::parse(text).map(Amount::micros);
            assert_eq!(&got, want, "parsing {text:?}");
        }
    }

    /// The parser as it was before it read digits in place: the one below
    /// must agree with it on every input.
    fn reference(text: &str, rounding: Rounding) -> Result<Amount, AmountError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let (text, negative) = match text.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (text.strip_prefix('+').unwrap_or(text), false),
        };
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = text[i + 1..].parse().map_err(|_| AmountError::NotANumber)?;
                (&text[..i], exp)
            }
            None => (text, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AmountError::NotANumber);
        }
        // All digits in one string; `point` counts how many of them stand
        // before the decimal point once the exponent has moved it.
        let all_digits = format!("{int_part}{frac_part}");
        let mut point = int_part.len() as i64 + exponent as i64;
        let digits = all_digits.trim_start_matches('0');
        point -= (all_digits.len() - digits.len()) as i64; // each leading zero dropped
        let digits = digits.trim_end_matches('0'); // trailing zeros do not move the point
        if digits.is_empty() {
            return Ok(Amount::ZERO);
        }
        if negative {
            return Err(AmountError::Negative);
        }
        let mut decimals = digits.len() as i64 - point;
        let mut digits = digits;
        let mut carry = false;
        if decimals > AMOUNT_DECIMALS as i64 {
            // Digits of `digits` that stand within six decimals; negative
            // when zeros the text never wrote lie between them and the rest.
            let keep_signed = digits.len() as i64 - (decimals - AMOUNT_DECIMALS as i64);
            let keep = keep_signed.max(0) as usize;
            let dropped = &digits[keep..];
            carry = match rounding {
                Rounding::Exact => return Err(AmountError::TooManyDecimals),
                Rounding::Up => dropped.bytes().any(|b| b != b'0'),
                Rounding::HalfUp => {
                    keep_signed >= 0 && dropped.as_bytes().first().is_some_and(|b| *b >= b'5')
                }
            };
            digits = &digits[..keep];
            decimals = AMOUNT_DECIMALS as i64;
        }
        let shift = AMOUNT_DECIMALS as i64 - decimals; // zeros to append to reach micros
        if digits.len() as i64 + shift > 19 {
            return Err(AmountError::TooLarge);
        }
        let mut micros: i64 = 0;
        for b in digits.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add((b - b'0') as i64))
                .ok_or(AmountError::TooLarge)?;
        }
        for _ in 0..shift {
            micros = micros.checked_mul(10).ok_or(AmountError::TooLarge)?;
        }
        if carry {
            micros += 1;
        }
        Amount::from_micros(micros).ok_or(AmountError::TooLarge)
    }

    #[test]
    fn parse_agrees_with_the_joining_parser() {
        let mut inputs: Vec<String> = [
            "",
            " ",
            "0",
            "-0",
            "+0",
            "00",
            "0.",
            ".0",
            ".",
            "-",
            "+",
            "e",
            "1e",
            "1e-",
            "1",
            "1.5",
            "-1",
            "+1",
            " 12.50 ",
            "0.000001",
            "0.0000001",
            "0.0000005",
            "0.00000049",
            "1.0000005",
            "999999999999.9999995",
            "1000000000000",
            "1000000000001",
            "9223372036854775807",
            "1e3",
            "1E-6",
            "1e-7",
            "5e-7",
            "1.5e2",
            "0.05e1",
            "100e-2",
            "1e12",
            "1e13",
            "1e400",
            "1e-400",
            "1a",
            "1.2.3",
            "--1",
            "0x10",
            "١",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Random texts over the characters that matter.
        let alphabet = b"0123456789000.eE-+5 ";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 14) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((x >> (i * 4 % 60)) as usize + i) % alphabet.len()] as char)
                .collect();
            inputs.push(text);
        }
        for text in &inputs {
            for rounding in [Rounding::Exact, Rounding::Up, Rounding::HalfUp] {
                assert_eq!(
                    Amount::parse_rounded(text, rounding),
                    reference(text, rounding),
                    "{text:?} {rounding:?}"
                );
            }
        }
    }

    #[test]
    fn rounds_only_when_asked() {
        let cases: &[(&str, Rounding, i64)] = &[
            ("0.30000000000000004", Rounding::HalfUp, 300_000),
            ("0.30000000000000004", Rounding::Up, 300_001),
            ("1.2345675", Rounding::HalfUp, 1_234_568),
            ("1.2345674999", Rounding::HalfUp, 1_234_567),
            ("0.0000001", Rounding::Up, 1),
            ("0.0000001", Rounding::HalfUp, 0),
            ("0.0000005", Rounding::HalfUp, 1),
            ("1e-9", Rounding::Up, 1),
            ("5", Rounding::Up, 5_000_000),
            ("2.5e-7", Rounding::HalfUp, 0),
            ("5e-8", Rounding::HalfUp, 0),
            ("5e-7", Rounding::HalfUp, 1),
            ("0.9999999", Rounding::HalfUp, 1_000_000),
        ];
        for (text, rounding, micros) in cases {
            assert_eq!(
                Amount::parse_rounded(text, *rounding).map(Amount::micros),
                Ok(*micros),
                "{text} {rounding:?}"
            );
        }
        assert_eq!(
            Amount::parse_rounded("0.9999999", Rounding::Exact),
            Err(AmountError::TooManyDecimals)
        );
    }

    #[test]
    fn displays_shortest_exact_form() {
        for (micros, text) in [
            (0, "0"),
            (1, "0.000001"),
            (12_500_000, "12.5"),
            (37_660_000, "37.66"),
            (10_000_000, "10"),
            (100_000_001, "100.000001"),
            (AMOUNT_MICROS_MAX, "1000000000000"),
            (AMOUNT_MICROS_MAX - 1, "999999999999.999999"),
        ] {
            assert_eq!(Amount::from_micros(micros).unwrap().to_string(), text);
        }
    }

    /// Against the obvious formatting, over small values and a spread of
    /// large ones.
    #[test]
    fn decimal_matches_plain_formatting() {
        let reference = |micros: i64| {
            let (units, frac) = (micros / MICROS_PER_UNIT, micros % MICROS_PER_UNIT);
            if frac == 0 {
                units.to_string()
            } else {
                format!("{units}.{frac:06}")
                    .trim_end_matches('0')
                    .to_string()
            }
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let spread = (0..100_000).map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 1) as i64 % (AMOUNT_MICROS_MAX + 1)
        });
        for micros in (0..20_000).chain(spread) {
            let a = Amount::from_micros(micros).unwrap();
            assert_eq!(a.decimal().as_str(), reference(micros), "{micros}");
        }
    }

    #[test]
    fn display_and_parse_round_trip() {
        for micros in [0, 1, 10, 999_999, 1_000_000, 123_456_789, AMOUNT_MICROS_MAX] {
            let a = Amount::from_micros(micros).unwrap();
            assert_eq!(Amount::parse(&a.to_string()), Ok(a));
        }
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(
            Amount::MAX.checked_add(Amount::from_micros(1).unwrap()),
            None
        );
        assert_eq!(
            Amount::ZERO.checked_sub(Amount::from_micros(1).unwrap()),
            None
        );
        assert_eq!(Amount::from_micros(-1), None);
    }
}

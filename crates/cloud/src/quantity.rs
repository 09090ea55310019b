//! Kubernetes resource quantities (`500m`, `4Gi`, `10G`), exactly enough to
//! check declared sizes, add the tiers up for a namespace quota and compare.

/// A quantity in thousandths of its unit (millicores, millibytes), so every
/// quantity the town can write is an exact integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Milli(pub u128);

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: [(&str, u32); 6] = [
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

impl Milli {
    /// A whole number of units.
    pub const fn units(n: u128) -> Milli {
        Milli(n * 1000)
    }

    /// Parse a non-negative Kubernetes quantity; `None` if it is not one, or
    /// finer than a thousandth of a unit.
    pub fn parse(s: &str) -> Option<Milli> {
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() && frac.is_empty() || number.ends_with('.') && frac.is_empty() {
            return None;
        }
        if frac.len() > 9 || whole.len() > 20 {
            return None;
        }
        let digits: u128 = format!("{whole}{frac}").parse().ok()?;
        // value = digits / 10^frac * multiplier * 1000, the multiplier being
        // 2^b (binary) or 10^d (decimal, d may be -3 for milli).
        let (num, den): (u128, u128) =
            if let Some(&(_, b)) = BINARY.iter().find(|(x, _)| *x == suffix) {
                (
                    digits.checked_mul(1000)?.checked_mul(1u128 << b)?,
                    10u128.pow(frac.len() as u32),
                )
            } else {
                let exp: i32 = match suffix {
                    "" => 0,
                    "m" => -3,
                    s if s.starts_with(['e', 'E']) => s[1..].parse().ok()?,
                    s => DECIMAL.iter().find(|(x, _)| *x == s)?.1 as i32,
                };
                let e = exp + 3 - frac.len() as i32;
                if !(-30..=30).contains(&e) {
                    return None;
                }
                if e >= 0 {
                    (digits.checked_mul(10u128.pow(e as u32))?, 1)
                } else {
                    (digits, 10u128.pow((-e) as u32))
                }
            };
        (num % den == 0).then(|| Milli(num / den))
    }

    /// As CPU: `2`, `1500m`.
    pub fn cpu(self) -> String {
        if self.0.is_multiple_of(1000) {
            (self.0 / 1000).to_string()
        } else {
            format!("{}m", self.0)
        }
    }

    /// As bytes (or any count): in the unit that gives the smallest whole
    /// number, binary on a tie (`4Gi`, `2G`, `1536Mi`).
    pub fn bytes(self) -> String {
        if !self.0.is_multiple_of(1000) {
            return format!("{}m", self.0);
        }
        let n = self.0 / 1000;
        let mut best = (n, "");
        for (suffix, unit) in BINARY
            .iter()
            .map(|&(s, b)| (s, 1u128 << b))
            .chain(DECIMAL.iter().map(|&(s, d)| (s, 10u128.pow(d))))
        {
            if n != 0 && n.is_multiple_of(unit) && n / unit < best.0 {
                best = (n / unit, suffix);
            }
        }
        format!("{}{}", best.0, best.1)
    }
}

impl std::ops::Add for Milli {
    type Output = Milli;
    fn add(self, o: Milli) -> Milli {
        Milli(self.0 + o.0)
    }
}

impl std::iter::Sum for Milli {
    fn sum<I: Iterator<Item = Milli>>(iter: I) -> Milli {
        iter.fold(Milli(0), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::Milli;

    #[test]
    fn parses_the_forms_kubernetes_accepts() {
        assert_eq!(Milli::parse("1"), Some(Milli(1000)));
        assert_eq!(Milli::parse("500m"), Some(Milli(500)));
        assert_eq!(Milli::parse("1.5"), Some(Milli(1500)));
        assert_eq!(Milli::parse("4Gi"), Some(Milli(4 << 30).scale()));
        assert_eq!(Milli::parse("10G"), Some(Milli::units(10_000_000_000)));
        assert_eq!(Milli::parse("1e3"), Some(Milli::units(1000)));
        assert_eq!(Milli::parse("0.5Gi"), Some(Milli::units(512 << 20)));
        for bad in [
            "", "Gi", "1.", ".", "10 GB", "-1", "1Gb", "1x", "0.0001", "1e99",
        ] {
            assert_eq!(Milli::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(Milli::units(3).cpu(), "3");
        assert_eq!(Milli(2500).cpu(), "2500m");
        assert_eq!(Milli::units(12 << 30).bytes(), "12Gi");
        assert_eq!(Milli::units(1536 << 20).bytes(), "1536Mi");
        assert_eq!(Milli::units(2_000_000_000).bytes(), "2G");
        assert_eq!(Milli::units(7).bytes(), "7");
        assert_eq!(Milli(0).bytes(), "0");
    }

    impl Milli {
        fn scale(self) -> Milli {
            Milli(self.0 * 1000)
        }
    }
}

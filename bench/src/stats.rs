//! The statistics the benchmark tables print: medians, 95th percentiles, milliseconds and
//! ratios, computed as the shell scripts computed them (so that numbers stay comparable with
//! earlier runs in docs/performance.md). Nothing here panics: an empty sample prints "—".

/// Durations of one kind of call, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn new() -> Samples {
        Samples::default()
    }

    pub fn push(&mut self, us: u64) {
        self.0.push(us);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v = self.0.clone();
        v.sort_unstable();
        v
    }

    /// The middle value; with an even count, the mean of the two middle ones.
    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v.get(n / 2).map(|&x| x as f64)
        } else {
            let (a, b) = (v.get((n / 2).checked_sub(1)?)?, v.get(n / 2)?);
            Some((*a as f64 + *b as f64) / 2.0)
        }
    }

    /// The nearest-rank 95th percentile: the value at rank round(0.95 n), at least the first.
    pub fn p95(&self) -> Option<f64> {
        let v = self.sorted();
        let rank = ((v.len() as f64) * 0.95 + 0.5) as usize;
        v.get(rank.max(1) - 1).map(|&x| x as f64)
    }
}

impl FromIterator<u64> for Samples {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Samples {
        Samples(iter.into_iter().collect())
    }
}

/// Microseconds as milliseconds with two decimals ("7.70"); "—" when there is no value.
pub fn ms(us: Option<f64>) -> String {
    match us {
        Some(us) if us.is_finite() => format!("{:.2}", us / 1000.0),
        _ => "—".into(),
    }
}

/// `num / den` with `decimals` decimals and an "x" ("5.5x"); "—" when either is missing or
/// the denominator is not positive.
pub fn ratio(num: Option<f64>, den: Option<f64>, decimals: usize) -> String {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && n.is_finite() && d.is_finite() => {
            format!("{:.*}x", decimals, n / d)
        }
        _ => "—".into(),
    }
}

/// A process's peak RSS in KiB from `ru_maxrss` (which Linux reports in KiB, as GNU time's
/// `%M` printed it); `None` for a value no process can have (zero or negative).
pub fn rss_kib(ru_maxrss: i64) -> Option<u64> {
    u64::try_from(ru_maxrss).ok().filter(|&k| k > 0)
}

/// "2208 KiB", or "—" when the RSS is unknown.
pub fn kib(rss: Option<u64>) -> String {
    rss.map_or_else(|| "—".into(), |k| format!("{k} KiB"))
}

/// An integer with thousands separators: 5000 → "5,000".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u64]) -> Samples {
        v.iter().copied().collect()
    }

    #[test]
    fn median_of_odd_and_even_counts_unsorted() {
        assert_eq!(s(&[5, 1, 3]).median(), Some(3.0));
        assert_eq!(s(&[4, 1, 3, 2]).median(), Some(2.5));
        assert_eq!(s(&[7]).median(), Some(7.0));
        assert_eq!(s(&[8, 2]).median(), Some(5.0));
    }

    #[test]
    fn empty_samples_have_no_statistics() {
        assert_eq!(Samples::new().median(), None);
        assert_eq!(Samples::new().p95(), None);
        assert_eq!(ms(Samples::new().median()), "—");
    }

    #[test]
    fn p95_is_the_nearest_rank_as_the_awk_computed_it() {
        // awk: i = int(NR * 0.95 + 0.5); if (i < 1) i = 1; print a[i] (1-based, sorted).
        let hundred: Samples = (1..=100).rev().collect();
        assert_eq!(hundred.p95(), Some(95.0));
        let fifty: Samples = (1..=50).collect();
        assert_eq!(fifty.p95(), Some(48.0)); // int(48.0) = 48
        assert_eq!(s(&[3, 1, 2]).p95(), Some(3.0)); // int(3.35) = 3
        assert_eq!(s(&[9]).p95(), Some(9.0));
        assert_eq!(s(&[2, 1]).p95(), Some(2.0)); // int(2.4) = 2
        let ten: Samples = (1..=10).collect();
        assert_eq!(ten.p95(), Some(10.0)); // int(10.0) = 10
    }

    #[test]
    fn milliseconds_have_two_decimals() {
        assert_eq!(ms(Some(7700.0)), "7.70");
        assert_eq!(ms(Some(42_236.5)), "42.24");
        assert_eq!(ms(Some(0.0)), "0.00");
        assert_eq!(ms(Some(1_690_680.0)), "1690.68");
        assert_eq!(ms(Some(f64::NAN)), "—");
        assert_eq!(ms(None), "—");
    }

    #[test]
    fn ratios_round_and_refuse_a_zero_denominator() {
        assert_eq!(ratio(Some(42_240.0), Some(7_700.0), 1), "5.5x");
        assert_eq!(ratio(Some(1_640.0), Some(1_600.0), 2), "1.02x");
        assert_eq!(ratio(Some(1.0), Some(3.0), 1), "0.3x");
        assert_eq!(ratio(Some(1.0), Some(0.0), 1), "—");
        assert_eq!(ratio(Some(1.0), Some(-2.0), 1), "—");
        assert_eq!(ratio(None, Some(1.0), 1), "—");
        assert_eq!(ratio(Some(1.0), None, 1), "—");
    }

    #[test]
    fn rss_comes_from_ru_maxrss_in_kib() {
        assert_eq!(rss_kib(2208), Some(2208));
        assert_eq!(rss_kib(0), None);
        assert_eq!(rss_kib(-1), None);
        assert_eq!(kib(rss_kib(1560)), "1560 KiB");
        assert_eq!(kib(None), "—");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(5000), "5,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

//! Summaries of samples (median, p90, mean, standard deviation) and how figures are printed.

/// A summary of one candidate's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The median (the mean of the two middle samples for an even count).
    pub median: f64,
    /// The 90th percentile (nearest rank).
    pub p90: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The sample standard deviation (0 for one sample).
    pub stdev: f64,
    /// The smallest sample.
    pub min: f64,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none (or one is not finite).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        // Nearest rank: the smallest sample with at least 90% of the samples at or below it.
        let rank = (0.9 * n as f64).ceil() as usize;
        let p90 = sorted[rank.clamp(1, n) - 1];
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let stdev = if n > 1 {
            (sorted.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Summary {
            n,
            median,
            p90,
            mean,
            stdev,
            min: sorted[0],
        })
    }
}

/// Paired comparison of two candidates that ran interleaved: both sample lists are cut into
/// rounds of `per_round` samples, each round summarized by its median, and the ratios
/// `a / b` of the same round summarized. Slow drifts of the machine's load cancel out within a
/// round. `None` when the lists do not pair up.
pub fn paired_ratios(a: &[f64], b: &[f64], per_round: usize) -> Option<Summary> {
    if per_round == 0 || a.len() != b.len() || a.len() % per_round != 0 {
        return None;
    }
    let ratios: Vec<f64> = a
        .chunks(per_round)
        .zip(b.chunks(per_round))
        .map(|(x, y)| Some(Summary::of(x)?.median / Summary::of(y)?.median))
        .collect::<Option<Vec<f64>>>()?;
    Summary::of(&ratios)
}

/// A duration given in nanoseconds, with a unit that keeps three or four significant digits.
pub fn fmt_ns(ns: f64) -> String {
    let abs = ns.abs();
    if abs >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if abs >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if abs >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A size in bytes, as MiB (or KiB below one MiB).
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes.abs() >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.median, 3.0);
        assert_eq!(s.mean, 3.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.p90, 5.0);
        assert!((s.stdev - 2.0).abs() < 1e-12);
    }

    #[test]
    fn even_count_and_p90_nearest_rank() {
        let samples: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.median, 5.5);
        assert_eq!(s.p90, 9.0);
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.p90, 90.0);
        assert_eq!(s.median, 50.5);
    }

    #[test]
    fn one_sample() {
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.p90, s.mean, s.stdev), (7.0, 7.0, 7.0, 0.0));
    }

    #[test]
    fn nothing_to_summarize() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn paired() {
        // Round medians: a = 2, 6; b = 1, 4: ratios 2 and 1.5.
        let a = [1.0, 2.0, 3.0, 6.0, 6.0, 9.0];
        let b = [1.0, 1.0, 5.0, 4.0, 4.0, 3.0];
        let s = paired_ratios(&a, &b, 3).unwrap();
        assert_eq!(s.n, 2);
        assert_eq!(s.median, 1.75);
        assert_eq!(paired_ratios(&a, &b[..3], 3), None);
        assert_eq!(paired_ratios(&a, &b, 4), None);
        assert_eq!(paired_ratios(&a, &b, 0), None);
        assert_eq!(paired_ratios(&a, &b, 1).unwrap().n, 6);
    }

    #[test]
    fn units() {
        assert_eq!(fmt_ns(512.0), "512 ns");
        assert_eq!(fmt_ns(41_250.0), "41.2 µs");
        assert_eq!(fmt_ns(85_420_000.0), "85.4 ms");
        assert_eq!(fmt_ns(2_500_000_000.0), "2.50 s");
        assert_eq!(fmt_bytes(3.5 * 1024.0 * 1024.0), "3.50 MiB");
        assert_eq!(fmt_bytes(512.0 * 1024.0), "512 KiB");
    }
}

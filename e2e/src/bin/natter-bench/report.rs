//! Figures: percentiles, ratios to the raw NATS baseline, machine facts.

use serde_json::{Value, json};

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Two decimals.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `value / base` when there is a base, to three significant digits (a
/// small ratio such as 0.004 must not read as 0).
pub fn ratio(value: f64, base: Option<f64>) -> Value {
    match base {
        Some(b) if b > 0.0 => json!(significant(value / b, 3)),
        _ => Value::Null,
    }
}

/// `x` rounded to `digits` significant digits.
pub fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1, 5 and 15 minute load averages (Linux).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 99.9), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 1.0), 7.0);
    }

    #[test]
    fn ratios_need_a_base() {
        assert_eq!(ratio(5.0, Some(20.0)), json!(0.25));
        assert_eq!(ratio(5.0, None), Value::Null);
        assert_eq!(ratio(5.0, Some(0.0)), Value::Null);
        assert_eq!(ratio(4.0, Some(1000.0)), json!(0.004));
        assert_eq!(ratio(2.0, Some(3.0)), json!(0.667));
    }
}

//! Exponential backoff with full jitter, shared by every sink that retries.

use crate::config::common::BackoffConfig;
use rand::Rng;
use std::time::Duration;

/// The delays between attempts of one request.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    max_retries: Option<u32>,
    retries: u32,
}

impl Backoff {
    pub fn new(config: &BackoffConfig) -> Backoff {
        Backoff { min: config.min_period.0, max: config.max_period.0, max_retries: config.max_retries, retries: 0 }
    }

    /// The wait before the next attempt, or `None` when the retries are used up. A server's
    /// `Retry-After` wins when it is longer (capped at the maximum period).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| self.retries >= max) {
            return None;
        }
        let exp = self.min.saturating_mul(2u32.saturating_pow(self.retries.min(30)));
        let ceiling = exp.min(self.max).max(self.min);
        self.retries += 1;
        // Jitter between half the ceiling and the ceiling: spreads agents out but keeps growth.
        let half = ceiling / 2;
        let jitter = Duration::from_secs_f64(rand::rng().random_range(0.0..=half.as_secs_f64()));
        let delay = half + jitter;
        Some(match retry_after {
            Some(server) if server > delay => server.min(self.max),
            _ => delay,
        })
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }
}

/// Reads a `Retry-After` header given in seconds (the form Loki and Prometheus send).
pub fn parse_retry_after(value: Option<&http::HeaderValue>) -> Option<Duration> {
    let secs: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    #[test]
    fn grows_within_bounds_and_stops_after_max_retries() {
        let config = BackoffConfig {
            min_period: HumanDuration::from_millis(500),
            max_period: HumanDuration::from_secs(4),
            max_retries: Some(5),
        };
        let mut b = Backoff::new(&config);
        let ceilings = [500, 1000, 2000, 4000, 4000];
        for ceiling in ceilings {
            let d = b.next_delay(None).unwrap();
            assert!(
                d >= Duration::from_millis(ceiling / 2) && d <= Duration::from_millis(ceiling),
                "{d:?} for {ceiling}"
            );
        }
        assert_eq!(b.next_delay(None), None);
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let mut b = Backoff::new(&BackoffConfig::default());
        assert_eq!(b.next_delay(Some(Duration::from_secs(30))), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(Some(&http::HeaderValue::from_static("7"))), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(Some(&http::HeaderValue::from_static("soon"))), None);
    }
}

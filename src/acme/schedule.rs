//! When to renew and how long to wait after a failure. Pure functions.

use std::time::Duration;

use time::OffsetDateTime;

/// When a certificate should be renewed: inside the CA's ARI window (RFC 9773) when
/// it offers one, else when a third of the lifetime remains — so 90-day certificates
/// renew at 60 days, and 6-day ones after 4 days.
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ari_window: Option<(OffsetDateTime, OffsetDateTime)>,
) -> OffsetDateTime {
    if let Some((start, end)) = ari_window {
        if end > start {
            return start + (end - start) / 2;
        }
        return start;
    }
    let lifetime = not_after - not_before;
    not_after - lifetime / 3
}

/// Delay before the next attempt after `failures` consecutive failures: one minute,
/// doubling, at most six hours. A rate-limit answer waits at least an hour, and a
/// Retry-After from the CA is honoured when longer.
pub fn backoff(failures: u32, rate_limited: bool, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = Duration::from_secs(60).saturating_mul(1u32 << exp);
    let mut d = base.min(Duration::from_secs(6 * 3600));
    if rate_limited {
        d = d.max(Duration::from_secs(3600));
    }
    if let Some(r) = retry_after {
        d = d.max(r);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration as D;

    #[test]
    fn a_third_of_the_lifetime_remains() {
        let nb = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(renew_at(nb, nb + D::days(90), None), nb + D::days(60));
        assert_eq!(renew_at(nb, nb + D::days(6), None), nb + D::days(4));
    }

    #[test]
    fn ari_window_wins() {
        let nb = OffsetDateTime::UNIX_EPOCH;
        let w = (nb + D::days(10), nb + D::days(12));
        assert_eq!(renew_at(nb, nb + D::days(90), Some(w)), nb + D::days(11));
    }

    #[test]
    fn backoff_doubles_to_six_hours() {
        assert_eq!(backoff(1, false, None), Duration::from_secs(60));
        assert_eq!(backoff(2, false, None), Duration::from_secs(120));
        assert_eq!(backoff(5, false, None), Duration::from_secs(960));
        assert_eq!(backoff(40, false, None), Duration::from_secs(6 * 3600));
        assert_eq!(backoff(1, true, None), Duration::from_secs(3600));
        assert_eq!(
            backoff(1, false, Some(Duration::from_secs(7200))),
            Duration::from_secs(7200)
        );
    }
}

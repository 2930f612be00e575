//! What one delivery attempt's result means (GATEWAY.md 8): delivered, retried after a
//! backoff (connect errors, timeouts, 5xx, 408, 429; `Retry-After` honoured up to
//! `max_age`), or dead (any other status, or `max_age` passed).

use std::time::{Duration, SystemTime};

use super::Failure;
use crate::config::{millis, Durable};
use crate::upstream::Attempted;

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Failed(Failure),
}

/// The outcome label of `pollgate_delivery_attempts_total`.
impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed(Failure::Retry { .. }) => "retry",
            Self::Failed(Failure::Dead { .. }) => "dead",
        }
    }
}

/// Decides attempt number `attempts` (1-based) of a delivery queued at `queued_ms`.
pub fn judge(
    attempt: &Attempted,
    durable: &Durable,
    attempts: u32,
    queued_ms: u64,
    now_ms: u64,
) -> Verdict {
    let (retryable, error) = match attempt {
        Attempted::Answered { status, .. } if (200..300).contains(status) => {
            return Verdict::Delivered
        }
        Attempted::Answered { status, .. } => (
            *status >= 500 || *status == 408 || *status == 429,
            format!("answered {status}"),
        ),
        Attempted::Failed { error } => (true, error.clone()),
    };
    if !retryable {
        return Verdict::Failed(Failure::Dead { error });
    }
    let deadline = queued_ms.saturating_add(millis(durable.max_age));
    if now_ms >= deadline {
        let error = format!("{error}; max_age ({:?}) passed", durable.max_age);
        return Verdict::Failed(Failure::Dead { error });
    }
    let wait = backoff(durable, attempts);
    let asked = match attempt {
        Attempted::Answered {
            retry_after: Some(value),
            ..
        } => retry_after(value, SystemTime::now()),
        _ => None,
    };
    // Every pause is at least the backoff; a longer Retry-After is honoured, but the last
    // attempt is never later than max_age.
    let wait = asked.map_or(wait, |asked| asked.max(wait));
    let next_ms = now_ms.saturating_add(millis(wait)).min(deadline);
    Verdict::Failed(Failure::Retry { next_ms, error })
}

/// The pause after attempt `attempts` (1-based): `min · 2^(attempts-1)`, capped at `max`,
/// with jitter in its upper half, never below `min`.
pub fn backoff(durable: &Durable, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(40);
    let full = durable
        .backoff_min
        .saturating_mul(1u32 << doublings.min(31))
        .min(durable.backoff_max);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
        .max(durable.backoff_min)
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 10.2.3).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn durable() -> Durable {
        Durable {
            max_age: 3600 * S,
            backoff_min: S,
            backoff_max: 60 * S,
            lease: 30 * S,
        }
    }

    fn answered(status: u16, retry_after: Option<&str>) -> Attempted {
        Attempted::Answered {
            status,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    #[test]
    fn two_hundreds_deliver_and_only_some_failures_are_retried() {
        let d = durable();
        assert_eq!(judge(&answered(204, None), &d, 1, 0, 0), Verdict::Delivered);
        for status in [500, 503, 408, 429] {
            let v = judge(&answered(status, None), &d, 1, 0, 0);
            assert_eq!(v.label(), "retry", "{status}");
        }
        for status in [400, 401, 404, 409, 422, 301] {
            let v = judge(&answered(status, None), &d, 1, 0, 0);
            assert_eq!(
                v,
                Verdict::Failed(Failure::Dead {
                    error: format!("answered {status}")
                })
            );
        }
        let refused = Attempted::Failed {
            error: "cannot connect".into(),
        };
        assert_eq!(judge(&refused, &d, 1, 0, 0).label(), "retry");
    }

    #[test]
    fn backoff_doubles_within_min_and_max_with_jitter() {
        let d = durable();
        for attempts in 1..40 {
            let full = (S * (1 << (attempts - 1).min(20))).min(60 * S);
            for _ in 0..20 {
                let b = backoff(&d, attempts);
                assert!(b >= S && b >= full / 2 && b <= full, "{attempts}: {b:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_beyond_backoff_max_up_to_max_age() {
        let d = durable();
        let now = 1_000_000;
        let v = judge(&answered(429, Some("120")), &d, 1, now, now);
        assert_eq!(
            v,
            Verdict::Failed(Failure::Retry {
                next_ms: now + 120_000,
                error: "answered 429".into()
            })
        );
        // Longer than what is left of max_age: the last attempt is at max_age.
        let v = judge(&answered(503, Some("999999")), &d, 1, now, now + 1000);
        assert_eq!(
            v,
            Verdict::Failed(Failure::Retry {
                next_ms: now + 3_600_000,
                error: "answered 503".into()
            })
        );
        // Shorter than the backoff: the backoff wins (every pause is at least min).
        let Verdict::Failed(Failure::Retry { next_ms, .. }) =
            judge(&answered(429, Some("0")), &d, 1, now, now)
        else {
            panic!("retried")
        };
        assert!(next_ms >= now + 1000);
    }

    #[test]
    fn a_failure_after_max_age_is_dead() {
        let d = durable();
        let v = judge(&answered(503, None), &d, 9, 0, 3_600_000);
        assert_eq!(v.label(), "dead");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("7", now), Some(7 * S));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30 * S)
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}

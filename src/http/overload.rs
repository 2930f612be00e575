//! The overload guard for request bodies (GATEWAY.md 12): every body being read counts
//! against one budget, `server.max_buffered_bytes`, and must arrive within
//! `server.body_timeout`. Without it, anyone who knows a subscription id could make the
//! gateway buffer `max_body_bytes` per connection before any signature is checked.
//!
//! A declared `Content-Length` is reserved in full when the headers arrive, so a call that
//! cannot fit is refused before a byte of its body is read; a chunked body reserves each
//! chunk as it arrives.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

/// Bytes of request bodies being read, all calls together. A cheap-clone handle; the
/// limit is passed per call, so a reload that changes it applies to the next call.
#[derive(Debug, Clone, Default)]
pub struct BodyBudget {
    used: Arc<AtomicU64>,
}

/// Bytes held from a [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicU64>,
    bytes: u64,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than max_body_bytes")]
    TooLarge,
    #[error("bodies being read are at max_buffered_bytes")]
    Overloaded,
    #[error("the body did not arrive within body_timeout")]
    TimedOut,
    #[error("the body broke off: {0}")]
    Broken(String),
}

impl BodyBudget {
    /// Bytes currently reserved.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes` if the total stays within `limit`.
    pub fn reserve(&self, bytes: u64, limit: u64) -> Option<Reservation> {
        let mut reservation = Reservation {
            used: self.used.clone(),
            bytes: 0,
        };
        reservation.grow(bytes, limit).then_some(reservation)
    }
}

impl Reservation {
    /// Adds `more` bytes if the budget's total stays within `limit`.
    fn grow(&mut self, more: u64, limit: u64) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= limit)
            })
            .is_ok();
        if fits {
            self.bytes += more;
        }
        fits
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How one body may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `server.max_body_bytes`.
    pub max_bytes: u64,
    /// `server.max_buffered_bytes`.
    pub budget: u64,
    /// `server.body_timeout`.
    pub timeout: Duration,
}

/// Reads a whole body within `limits`, counting it against `budget`. `declared` is the
/// Content-Length: it is reserved before reading (and already checked against
/// `max_bytes`); without one, each chunk is reserved as it arrives. The reservation is
/// returned with the bytes, so they count until the caller has checked them.
pub async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    budget: &BodyBudget,
    limits: BodyLimits,
) -> Result<(Bytes, Reservation), BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut reservation = budget
        .reserve(declared.unwrap_or(0), limits.budget)
        .ok_or(BodyError::Overloaded)?;
    let read = {
        let mut read = std::pin::pin!(collect(body, declared, &mut reservation, limits));
        // A till's body usually arrives with its head: take it without arming a timer
        // (one more timer per call is measurable at tens of thousands of calls a second).
        match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(read) => read,
            Poll::Pending => tokio::time::timeout(limits.timeout, read)
                .await
                .map_err(|_| BodyError::TimedOut)?,
        }
    };
    read.map(|bytes| (bytes, reservation))
}

async fn collect<B>(
    body: B,
    declared: Option<u64>,
    reservation: &mut Reservation,
    limits: BodyLimits,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    // Most bodies arrive as one frame: keep it as it is, copy only when there are more.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing the checks use
        };
        total += data.len() as u64;
        if total > limits.max_bytes {
            return Err(BodyError::TooLarge);
        }
        // hyper never delivers more than a declared length, so only chunked bodies grow.
        if declared.is_none() && !reservation.grow(data.len() as u64, limits.budget) {
            return Err(BodyError::Overloaded);
        }
        match &first {
            None => first = Some(data),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_fits_until_the_limit_and_is_given_back_when_dropped() {
        let budget = BodyBudget::default();
        let a = budget.reserve(60, 100).expect("60 of 100 fits");
        assert!(budget.reserve(41, 100).is_none(), "101 of 100 does not");
        let b = budget.reserve(40, 100).expect("exactly 100 fits");
        assert_eq!(budget.in_use(), 100);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_refused_reservation_holds_nothing() {
        let budget = BodyBudget::default();
        assert!(budget.reserve(u64::MAX, 100).is_none());
        assert_eq!(budget.in_use(), 0);
    }
}

//! How a request is kept so it can be sent again, and how each attempt is
//! labelled for the balancer.
//!
//! A retry or hedge sends the same request more than once, so the layer
//! keeps a copy of each attempt before sending it. A [`Replay`] says how:
//!
//! - [`Cloned`]: any `Req: Clone`, copied as is. No attempt context; the
//!   cheapest (no allocation per request).
//! - [`Tracked`]: any `Req: Clone + HasAttemptContext` (for example
//!   [`WithAttempt<R>`](ha_core::WithAttempt)): also attaches an
//!   [`AttemptContext`] when the request has none, and gives every retry and
//!   hedge the next attempt number, so a balancer below sends it to an
//!   endpoint this request has not tried. A deadline the context carries
//!   bounds the retries.
//! - [`Relabel`]: any `Req: Clone` that numbers its own attempts (a field of
//!   your request type): copied as is, and your function labels each retry
//!   and hedge.
//! - [`HttpReplay`](crate::body::HttpReplay) (feature `http`): any
//!   `http::Request<B>`, tracked like [`Tracked`], whose body is buffered up
//!   to a cap while the first attempt streams it.
//!
//! ```
//! use ha_core::{AttemptContext, HasAttemptContext, WithAttempt};
//! use ha_retry::replay::{Replay, Tracked};
//!
//! let mut req = Tracked.prepare(WithAttempt::new("get /x"), None);
//! let mut kept = Tracked.copy(&req).unwrap();
//! Tracked.next_attempt(&mut kept);
//! assert_eq!(req.attempt_context().unwrap().attempt(), 1);
//! assert_eq!(kept.attempt_context().unwrap().attempt(), 2);
//! ```

use ha_core::{AttemptContext, HasAttemptContext, Instant};

/// How a layer keeps copies of a request and labels its attempts; see the
/// [module docs](self).
pub trait Replay<Req> {
    /// The request type the inner service receives.
    type Request;

    /// Turns the incoming request into the first attempt, attaching an
    /// attempt context (with `deadline`, the layer's own) when the strategy
    /// tracks attempts and the request has none.
    fn prepare(&self, req: Req, deadline: Option<Instant>) -> Self::Request;

    /// The deadline the request carries in its attempt context, if any
    /// (default: none, for strategies that attach no context).
    fn deadline(&self, req: &Self::Request) -> Option<Instant> {
        let _ = req;
        None
    }

    /// A copy to keep for a later attempt, made before `req` is sent;
    /// `None` when the request cannot be copied.
    fn copy(&self, req: &Self::Request) -> Option<Self::Request>;

    /// Whether a kept copy can be sent now: after the attempt it was copied
    /// from ended (`concurrently == false`, a retry), or while that attempt is
    /// still in flight (`concurrently == true`, a hedge). Default: always,
    /// for strategies whose copies are complete.
    fn can_replay(&self, kept: &Self::Request, concurrently: bool) -> bool {
        let _ = (kept, concurrently);
        true
    }

    /// Labels `req` as the next attempt of its request (default: nothing).
    /// Called on a kept copy before it is sent: a copy may hold its attempt
    /// context aside until then ([`HttpReplay`](crate::body::HttpReplay)
    /// keeps it in the body, which lets it go once the body is read).
    fn next_attempt(&self, req: &mut Self::Request) {
        let _ = req;
    }

    /// As [`next_attempt`](Self::next_attempt), for a hedge: sent while
    /// the earlier attempts are still in flight
    /// ([`AttemptContext::next_hedge`]). Default: `next_attempt`.
    fn next_hedge(&self, req: &mut Self::Request) {
        self.next_attempt(req);
    }

    /// Whether a timer below has promised to end the attempt `kept` was
    /// copied from by the request's deadline
    /// ([`AttemptContext::cover_deadline`]), so that the layer need not
    /// register a deadline timer of its own while that attempt runs.
    /// Default: never.
    fn deadline_covered(&self, kept: &Self::Request) -> bool {
        let _ = kept;
        false
    }

    /// Whether the balancer below counted an available endpoint the request
    /// `kept` was copied from has not tried yet
    /// ([`AttemptContext::untried`]): its retry then goes at once, to a
    /// server that has not just failed it. Default: never (the backoff
    /// decides).
    fn untried_left(&self, kept: &Self::Request) -> bool {
        let _ = kept;
        false
    }

    /// Whether the balancer below found its endpoints queueing when it
    /// picked the attempt `kept` is a copy of
    /// ([`AttemptContext::queueing`]): the fleet is past its capacity, and
    /// a failed attempt that was sent is not retried. Default: never.
    fn queueing(&self, kept: &Self::Request) -> bool {
        let _ = kept;
        false
    }
}

/// Copies `Req: Clone` requests as they are; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cloned;

impl<Req: Clone> Replay<Req> for Cloned {
    type Request = Req;

    #[inline]
    fn prepare(&self, req: Req, _deadline: Option<Instant>) -> Req {
        req
    }

    #[inline]
    fn copy(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Copies `Req: Clone + HasAttemptContext` requests and numbers their
/// attempts; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracked;

pub(crate) fn attach<R: HasAttemptContext>(req: &mut R, deadline: Option<Instant>) {
    if req.attempt_context().is_none() {
        req.set_attempt_context(match deadline {
            Some(at) => AttemptContext::with_deadline(at),
            None => AttemptContext::new(),
        });
    }
}

pub(crate) fn advance<R: HasAttemptContext>(req: &mut R, next: fn(&AttemptContext) -> AttemptContext) {
    if let Some(next) = req.attempt_context().map(next) {
        req.set_attempt_context(next);
    }
}

impl<Req: Clone + HasAttemptContext> Replay<Req> for Tracked {
    type Request = Req;

    fn prepare(&self, mut req: Req, deadline: Option<Instant>) -> Req {
        attach(&mut req, deadline);
        req
    }

    fn deadline(&self, req: &Req) -> Option<Instant> {
        req.attempt_context().and_then(AttemptContext::deadline)
    }

    fn copy(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn can_replay(&self, _kept: &Req, _concurrently: bool) -> bool {
        true
    }

    fn next_attempt(&self, req: &mut Req) {
        advance(req, AttemptContext::next_attempt);
    }

    fn next_hedge(&self, req: &mut Req) {
        advance(req, AttemptContext::next_hedge);
    }

    fn deadline_covered(&self, kept: &Req) -> bool {
        kept.attempt_context().is_some_and(AttemptContext::deadline_covered)
    }

    fn untried_left(&self, kept: &Req) -> bool {
        kept.attempt_context().is_some_and(|c| c.untried() > 0)
    }

    fn queueing(&self, kept: &Req) -> bool {
        kept.attempt_context().is_some_and(AttemptContext::queueing)
    }
}

/// Copies `Req: Clone` requests and labels each next attempt with a
/// function of yours, for request types that carry their own attempt
/// number; see the [module docs](self).
///
/// ```
/// use ha_retry::replay::{Relabel, Replay};
///
/// #[derive(Clone, Copy)]
/// struct Query { id: u64, attempt: u32 }
///
/// let relabel = Relabel::new(|q: &mut Query| q.attempt += 1);
/// let mut next = relabel.copy(&Query { id: 7, attempt: 0 }).unwrap();
/// relabel.next_attempt(&mut next);
/// assert_eq!((next.id, next.attempt), (7, 1));
/// ```
#[derive(Clone, Copy)]
pub struct Relabel<F> {
    label: F,
}

impl<F> Relabel<F> {
    /// Labels each retry and hedge with `label`.
    pub const fn new(label: F) -> Self {
        Relabel { label }
    }
}

impl<F> std::fmt::Debug for Relabel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relabel").finish_non_exhaustive()
    }
}

impl<Req: Clone, F: Fn(&mut Req)> Replay<Req> for Relabel<F> {
    type Request = Req;

    #[inline]
    fn prepare(&self, req: Req, _deadline: Option<Instant>) -> Req {
        req
    }

    #[inline]
    fn copy(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    #[inline]
    fn next_attempt(&self, req: &mut Req) {
        (self.label)(req);
    }
}

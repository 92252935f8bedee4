//! What a stack can send: requests it knows how to keep for another attempt
//! and label with their attempt context.
//!
//! Two kinds are supported: `http::Request<B>` for any body `B` (the body is
//! kept for replay, up to a cap, while the first attempt streams it; the
//! context travels in the request's extensions), and
//! [`WithAttempt<R>`](ha_core::WithAttempt) for any other `R: Clone`.

use ha_core::classify::{ErrorsAreFailures, HttpClassifier};
use ha_core::{HasAttemptContext, WithAttempt};
use ha_retry::body::{HttpReplay, HttpReplayed, ReplayBody};
use ha_retry::replay::{Replay, Tracked};

/// A request type a stack can retry and hedge.
#[diagnostic::on_unimplemented(
    message = "an ha stack cannot send `{Self}`: it cannot be replayed for another attempt",
    label = "not a request an ha stack can retry",
    note = "send an `http::Request<B>` whose body `B` is an `http_body::Body + Send + 'static` with `Data = bytes::Bytes`, or wrap your request in `ha::core::WithAttempt<R>` with `R: Clone + Send + Sync + 'static`"
)]
pub trait StackRequest: Sized + Send + 'static {
    /// The request as the balancer and the transport see it: kept for
    /// replay, labelled with its attempt.
    type Sent: HasAttemptContext + Send + 'static;
    /// How the retry layer keeps it.
    type Replay: Replay<Self, Request = Self::Sent> + Clone + Send + Sync + 'static;
    /// How the hedge layer under the retry layer keeps it (without keeping
    /// the body a second time).
    type HedgeReplay: Replay<Self::Sent, Request = Self::Sent> + Clone + Send + Sync + 'static;
    /// The classifier a stack of these requests uses unless told otherwise.
    type Classifier: Default + Clone + Send + Sync + 'static;

    /// The retry layer's strategy, keeping bodies up to `max_body_bytes`.
    fn replay(max_body_bytes: usize) -> Self::Replay;

    /// The hedge layer's strategy.
    fn hedge_replay() -> Self::HedgeReplay;
}

impl<B> StackRequest for http::Request<B>
where
    B: http_body::Body + Send + 'static,
{
    type Sent = http::Request<ReplayBody<B>>;
    type Replay = HttpReplay;
    type HedgeReplay = HttpReplayed;
    type Classifier = HttpClassifier;

    fn replay(max_body_bytes: usize) -> HttpReplay {
        HttpReplay::new(max_body_bytes)
    }

    fn hedge_replay() -> HttpReplayed {
        HttpReplayed
    }
}

impl<R> StackRequest for WithAttempt<R>
where
    R: Clone + Send + Sync + 'static,
{
    type Sent = WithAttempt<R>;
    type Replay = Tracked;
    type HedgeReplay = Tracked;
    type Classifier = ErrorsAreFailures;

    fn replay(_max_body_bytes: usize) -> Tracked {
        Tracked
    }

    fn hedge_replay() -> Tracked {
        Tracked
    }
}

//! Retrying `http::Request`s whose bodies are streams.
//!
//! An HTTP body can be read once. [`ReplayBody`] wraps it so the first
//! attempt streams it as usual while a copy of each chunk is kept, up to a
//! cap (default 64 KiB). A later attempt replays the kept chunks and then,
//! if the first attempt stopped reading part-way, continues with the rest of
//! the original body. A body longer than the cap is not kept: its request is
//! sent once and never retried or hedged.
//!
//! [`HttpReplay`] is the [`Replay`] strategy that wraps bodies this way and
//! tracks attempts in the request's extensions;
//! [`RetryLayer::http`](crate::RetryLayer::http) uses it.
//!
//! A hedge runs while the first attempt may still be reading the body, so a
//! hedge is only sent once the whole body has been read and kept (or was
//! empty), and only for idempotent requests (see
//! [`HttpRequestInfo`]).
//!
//! The body hands its state from one attempt to the next through a mutex
//! taken once when an attempt starts reading and once when it stops (dropped
//! part-way, or done); frames themselves are read without locking. A retry
//! can start before the transport has let go of the attempt before it (a
//! connection task that still holds the half-sent body of a request whose
//! response already failed): its copy then waits for the body to be handed
//! over instead of failing. The wait lasts until the transport drops that
//! body (or it completes, or outgrows the cap), so a stack retrying streamed
//! bodies bounds its attempts with a per-try timeout or a deadline (the
//! `ha` stack's defaults do); and a task must not await a copy while it
//! holds, unpolled, a clone it has read part of.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use ha_retry::body::ReplayBody;
//!
//! # tokio_test_block_on(async {
//! let first = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 64 * 1024);
//! let second = first.clone();
//! assert_eq!(first.collect().await.unwrap().to_bytes(), "hello");
//! assert!(second.is_replayable());
//! assert_eq!(second.collect().await.unwrap().to_bytes(), "hello");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use ha_core::classify::HttpRequestInfo;
use ha_core::sync::atomic::{AtomicBool, Ordering};
use ha_core::sync::{Arc, LockExt, Mutex};
use ha_core::{AttemptContext, HasAttemptContext, Instant};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

use crate::replay::{advance, attach, Replay};

/// The default cap on the bytes kept for replay: 64 KiB.
pub const DEFAULT_MAX_REPLAY_BYTES: usize = 64 * 1024;

/// A body that keeps what it streams so a later attempt can send it again;
/// see the [module docs](self). Clones share the kept bytes.
pub struct ReplayBody<B> {
    // `None` for a body that was empty from the start: nothing to keep, and
    // nothing to allocate (most GETs).
    shared: Option<Arc<Shared<B>>>,
    // The reading state, while this clone is the one reading the original
    // body; boxed, so that the body (which the client moves with its request
    // several times) stays a few words.
    reading: Option<Box<Reading<B>>>,
    slot: Slot,
}

/// What a clone needs besides its reading state, in two words: with a
/// `Full<Bytes>` body, the whole `http::Request` then stays within 256
/// bytes, which the client copies several times per request (past 256
/// bytes, each copy takes glibc's slower loop).
enum Slot {
    /// Where this clone is in the kept chunks (`u32::MAX`: past them), and
    /// whether it sent the trailers.
    Cursor { pos: u32, trailers_sent: bool },
    /// The attempt context of a request kept for a later attempt (see
    /// `kept_copy`), until `next_attempt` puts the next one in its
    /// extensions; the clone has sent nothing.
    Stashed(AttemptContext),
}

impl Slot {
    const START: Slot = Slot::Cursor { pos: 0, trailers_sent: false };

    /// A cursor at chunk `pos` (past them all if `pos` does not fit).
    fn at(pos: usize, trailers_sent: bool) -> Slot {
        Slot::Cursor { pos: u32::try_from(pos).unwrap_or(PAST), trailers_sent }
    }

    /// Where this clone is in the kept chunks; a stashed copy has sent nothing.
    fn pos(&self) -> usize {
        match self {
            Slot::Cursor { pos, .. } => *pos as usize,
            Slot::Stashed(_) => 0,
        }
    }

    fn trailers_sent(&self) -> bool {
        matches!(self, Slot::Cursor { trailers_sent: true, .. })
    }
}

/// The cursor past every kept chunk and the trailers.
const PAST: u32 = u32::MAX;

/// Most chunks a body keeps (a cursor counts them in 32 bits); a body in
/// more chunks is not kept, like one over the byte cap.
const MAX_CHUNKS: usize = PAST as usize - 1;

struct Shared<B> {
    max: usize,
    // The original body's hint, taken before anything was read: the whole
    // body, which is what a clone that has sent nothing yet will send.
    hint: SizeHint,
    complete: OnceLock<Complete>,
    handover: Mutex<Handover<B>>,
    capped: AtomicBool,
}

/// The original body between attempts, and who waits for it.
struct Handover<B> {
    /// The reading state, when no clone is reading the original body.
    reading: Option<Box<Reading<B>>>,
    /// A clone has taken `reading` and not yet let go of it.
    held: bool,
    /// Copies polled while `held`: woken when the reader lets go.
    waiters: Vec<Waker>,
}

struct Reading<B> {
    rest: Option<B>,
    kept: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    capped: bool,
}

struct Complete {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

/// A copy of the body cannot be sent: the original outgrew the replay cap,
/// broke while it was read, or held a frame that cannot be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayUnavailable {
    capped: bool,
}

impl ReplayUnavailable {
    /// True when the body was too large to keep.
    pub fn was_capped(&self) -> bool {
        self.capped
    }
}

impl fmt::Display for ReplayUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.capped {
            f.write_str("request body exceeded the replay cap and cannot be sent again")
        } else {
            f.write_str("request body could not be kept and cannot be sent again")
        }
    }
}

impl Error for ReplayUnavailable {}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `max_bytes` of it for replay.
    pub fn new(body: B, max_bytes: usize) -> Self {
        let shared = (!body.is_end_stream()).then(|| {
            let hint = body.size_hint();
            let reading =
                Box::new(Reading { rest: Some(body), kept: Vec::new(), len: 0, trailers: None, capped: false });
            Arc::new(Shared {
                max: max_bytes,
                hint,
                complete: OnceLock::new(),
                handover: Mutex::new(Handover { reading: Some(reading), held: false, waiters: Vec::new() }),
                capped: AtomicBool::new(false),
            })
        });
        ReplayBody { shared, reading: None, slot: Slot::START }
    }
}

impl<B> ReplayBody<B> {
    /// False once the body outgrew the cap: a copy can no longer be sent.
    pub fn is_replayable(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| !s.capped.load(Ordering::Acquire))
    }

    /// True once the whole body has been read and kept: copies can be sent
    /// even while another attempt is in flight.
    pub fn is_complete(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| s.complete.get().is_some())
    }
}

impl<B> Clone for ReplayBody<B> {
    fn clone(&self) -> Self {
        ReplayBody { shared: self.shared.clone(), reading: None, slot: Slot::START }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let (Some(reading), Some(shared)) = (self.reading.take(), &self.shared) {
            // Stopped part-way: let the next attempt carry on from here.
            let rest = (reading.rest.is_some() && !reading.capped).then_some(reading);
            shared.let_go(rest);
        }
    }
}

impl<B> Shared<B> {
    /// No copy can be sent any more: the copies waiting for the body fail
    /// now rather than when the reader is done with it.
    fn cap(&self) {
        self.capped.store(true, Ordering::Release);
        self.wake_waiters(|_| {});
    }

    /// The reading clone lets go of the original body, handing over `rest`
    /// if it stopped part-way (else the body is complete, or cannot be
    /// replayed), and wakes the copies waiting for it.
    fn let_go(&self, rest: Option<Box<Reading<B>>>) {
        self.wake_waiters(|handover| {
            handover.reading = rest;
            handover.held = false;
        });
    }

    /// Changes the handover with `change` and wakes the copies waiting,
    /// outside the lock.
    fn wake_waiters(&self, change: impl FnOnce(&mut Handover<B>)) {
        let waiters = {
            let mut handover = self.handover.lock_or_recover();
            change(&mut handover);
            std::mem::take(&mut handover.waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }

    /// Takes the original body for a copy that is not reading it, or
    /// registers the copy to be woken when the clone reading it lets go.
    fn find(&self, cx: &Context<'_>) -> Found<'_, B> {
        let mut handover = self.handover.lock_or_recover();
        if let Some(reading) = handover.reading.take() {
            handover.held = true;
            return Found::Reading(reading);
        }
        // Completed and capped are set before the lock is taken to wake the
        // waiters (`let_go`, `cap`), so a copy that finds neither while the
        // body is held is woken.
        if let Some(done) = self.complete.get() {
            Found::Complete(done)
        } else if !handover.held || self.capped.load(Ordering::Acquire) {
            Found::Unavailable
        } else {
            if !handover.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                handover.waiters.push(cx.waker().clone());
            }
            Found::Held
        }
    }
}

/// What a copy that is not reading finds when it looks for the body.
enum Found<'a, B> {
    /// The original body, to read on from where the last reader stopped.
    Reading(Box<Reading<B>>),
    /// The whole body, kept.
    Complete(&'a Complete),
    /// Another clone is reading it; this one is woken when it lets go.
    Held,
    /// It can never be sent again.
    Unavailable,
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(shared) = this.shared.as_deref() else { return Poll::Ready(None) };
        if this.reading.is_none() {
            if let Some(done) = shared.complete.get() {
                return send_kept(done, &mut this.slot);
            }
            match shared.find(cx) {
                Found::Reading(reading) => {
                    this.reading = Some(reading);
                    this.slot = Slot::START;
                }
                Found::Complete(done) => return send_kept(done, &mut this.slot),
                Found::Held => return Poll::Pending,
                Found::Unavailable => {
                    let capped = shared.capped.load(Ordering::Acquire);
                    return Poll::Ready(Some(Err(ReplayUnavailable { capped }.into())));
                }
            }
        }
        let max = shared.max;
        let Some(reading) = this.reading.as_mut() else { return Poll::Ready(None) };
        let pos = this.slot.pos();
        if reading.capped && pos < reading.kept.len() {
            return Poll::Ready(Some(Err(ReplayUnavailable { capped: true }.into())));
        }
        if let Some(chunk) = reading.kept.get(pos) {
            this.slot = Slot::at(pos + 1, false);
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(rest) = reading.rest.as_mut() else { return Poll::Ready(None) };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        if !reading.capped {
                            if reading.len + bytes.len() <= max && reading.kept.len() < MAX_CHUNKS {
                                reading.len += bytes.len();
                                reading.kept.push(bytes.clone());
                                this.slot = Slot::at(reading.kept.len(), false);
                            } else {
                                reading.capped = true;
                                reading.kept = Vec::new();
                                this.slot = Slot::START;
                                shared.cap();
                            }
                        }
                        let frame = Frame::data(bytes);
                        // A sender that knows the length may stop polling after the last
                        // byte: complete now, so a retry need not wait for this clone.
                        if reading.rest.as_ref().is_some_and(Body::is_end_stream) {
                            reading.rest = None;
                            if !reading.capped {
                                let kept = std::mem::take(&mut reading.kept);
                                let _ = shared.complete.set(Complete { chunks: kept, trailers: None });
                                this.reading = None;
                                shared.let_go(None);
                                this.slot = Slot::Cursor { pos: PAST, trailers_sent: true };
                            }
                        }
                        frame
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            reading.trailers = Some(trailers.clone());
                            this.slot = Slot::at(this.slot.pos(), true);
                            Frame::trailers(trailers)
                        }
                        // A frame kind http-body does not know yet: pass nothing we cannot keep.
                        Err(_) => return Poll::Ready(Some(Err(ReplayUnavailable { capped: false }.into()))),
                    },
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The body broke: what was kept is incomplete, so no copy may be sent.
                reading.capped = true;
                shared.cap();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                reading.rest = None;
                if !reading.capped {
                    let kept = std::mem::take(&mut reading.kept);
                    let trailers = reading.trailers.take();
                    // Read by an attempt dropped before the body's end: this
                    // one, which took over, has not sent them yet.
                    let unsent = if this.slot.trailers_sent() { None } else { trailers.clone() };
                    let _ = shared.complete.set(Complete { chunks: kept, trailers });
                    // From here on this clone is a replayer that has sent everything.
                    this.reading = None;
                    shared.let_go(None);
                    this.slot = Slot::Cursor { pos: PAST, trailers_sent: true };
                    if let Some(t) = unsent {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(shared) = &self.shared else { return true };
        match (&self.reading, shared.complete.get()) {
            (None, Some(done)) => {
                self.slot.pos() >= done.chunks.len() && (self.slot.trailers_sent() || done.trailers.is_none())
            }
            (Some(r), _) => r.rest.is_none() && self.slot.pos() >= r.kept.len(),
            (None, None) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Some(shared) = &self.shared else { return SizeHint::with_exact(0) };
        match (&self.reading, shared.complete.get()) {
            (None, Some(done)) => {
                let left: usize = done.chunks.iter().skip(self.slot.pos()).map(Bytes::len).sum();
                SizeHint::with_exact(left as u64)
            }
            (Some(r), _) => r.size_hint(self.slot.pos()),
            // Nothing sent by this clone yet: the whole body, so that a body of
            // known length goes out with a content-length (and no lock is taken).
            (None, None) => shared.hint,
        }
    }
}

impl<B: Body> Reading<B> {
    /// What is left to send from position `pos` of the kept chunks on.
    fn size_hint(&self, pos: usize) -> SizeHint {
        let kept: usize = self.kept.iter().skip(pos).map(Bytes::len).sum();
        let rest = self.rest.as_ref().map(Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0));
        let kept = kept as u64;
        // Built afresh: raising the lower bound of a hint before its upper one panics.
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(kept));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(kept));
        }
        hint
    }
}

/// Sends the next kept chunk of a completed body, then its trailers.
fn send_kept(done: &Complete, slot: &mut Slot) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let (pos, trailers_sent) = (slot.pos(), slot.trailers_sent());
    if let Some(chunk) = done.chunks.get(pos) {
        *slot = Slot::at(pos + 1, trailers_sent);
        return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
    }
    if !trailers_sent {
        *slot = Slot::Cursor { pos: PAST, trailers_sent: true };
        if let Some(t) = &done.trailers {
            return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
        }
    }
    Poll::Ready(None)
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("max", &self.shared.as_ref().map(|s| s.max))
            .field("complete", &self.is_complete())
            .field("replayable", &self.is_replayable())
            .finish()
    }
}

/// The [`Replay`] strategy for `http::Request<B>`: bodies wrapped in
/// [`ReplayBody`], attempts tracked in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpReplay {
    max_bytes: usize,
}

impl HttpReplay {
    /// Keeps up to `max_bytes` of each body.
    pub const fn new(max_bytes: usize) -> Self {
        HttpReplay { max_bytes }
    }

    /// The cap on the bytes kept.
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Default for HttpReplay {
    fn default() -> Self {
        HttpReplay::new(DEFAULT_MAX_REPLAY_BYTES)
    }
}

/// Whether `kept` may be sent again: a hedge (sent while the first attempt
/// may still be reading the body) only once the whole body is kept, and only
/// for an idempotent request.
fn replayable<B>(kept: &Request<ReplayBody<B>>, concurrently: bool) -> bool {
    if concurrently {
        kept.body().is_complete() && HttpRequestInfo::of(kept).idempotent
    } else {
        kept.body().is_replayable()
    }
}

/// The [`Replay`] strategy for a layer below one using [`HttpReplay`]: the
/// request's body is already a [`ReplayBody`], so it is kept as it is and
/// buffered once, however many layers send it again (a hedge under a
/// retry, for example).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use ha_core::HasAttemptContext;
/// use ha_retry::body::{HttpReplay, HttpReplayed};
/// use ha_retry::replay::Replay;
///
/// let req = http::Request::get("http://svc/").body(Full::new(Bytes::from_static(b"x"))).unwrap();
/// let req = HttpReplay::default().prepare(req, None);
/// let mut kept = HttpReplayed.copy(&HttpReplayed.prepare(req, None)).unwrap();
/// HttpReplayed.next_attempt(&mut kept);
/// assert_eq!(kept.attempt_context().unwrap().attempt(), 2);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpReplayed;

/// Puts the next attempt's context (made by `make` from this one's) in
/// `req`, from its body's stash or its extensions.
fn next<B>(req: &mut Request<ReplayBody<B>>, make: fn(&AttemptContext) -> AttemptContext) {
    match std::mem::replace(&mut req.body_mut().slot, Slot::START) {
        Slot::Stashed(ctx) => req.set_attempt_context(make(&ctx)),
        cursor => {
            req.body_mut().slot = cursor;
            advance(req, make);
        }
    }
}

impl<B: Body> Replay<Request<ReplayBody<B>>> for HttpReplayed {
    type Request = Request<ReplayBody<B>>;

    fn prepare(&self, mut req: Self::Request, deadline: Option<Instant>) -> Self::Request {
        attach(&mut req, deadline);
        req
    }

    fn deadline(&self, req: &Self::Request) -> Option<Instant> {
        req.attempt_context().and_then(|c| c.deadline())
    }

    fn copy(&self, req: &Self::Request) -> Option<Self::Request> {
        Some(kept_copy(req))
    }

    fn can_replay(&self, kept: &Self::Request, concurrently: bool) -> bool {
        replayable(kept, concurrently)
    }

    fn next_attempt(&self, req: &mut Self::Request) {
        next(req, AttemptContext::next_attempt);
    }

    fn next_hedge(&self, req: &mut Self::Request) {
        next(req, AttemptContext::next_hedge);
    }

    fn deadline_covered(&self, kept: &Self::Request) -> bool {
        kept_context(kept).is_some_and(AttemptContext::deadline_covered)
    }

    fn untried_left(&self, kept: &Self::Request) -> bool {
        kept_context(kept).is_some_and(|c| c.untried() > 0)
    }

    fn queueing(&self, kept: &Self::Request) -> bool {
        kept_context(kept).is_some_and(AttemptContext::queueing)
    }
}

/// The attempt context of a kept copy: in its body until the copy is sent
/// (see `kept_copy`), else in its extensions.
fn kept_context<B>(kept: &Request<ReplayBody<B>>) -> Option<&AttemptContext> {
    match &kept.body().slot {
        Slot::Stashed(ctx) => Some(ctx),
        Slot::Cursor { .. } => kept.attempt_context(),
    }
}

/// A copy of `req` to keep for a later attempt.
///
/// When the attempt context is the request's only extension (the usual
/// case), the copy's extensions stay empty and its body holds the context
/// until [`Replay::next_attempt`] puts the next attempt's context in them:
/// a copy that is never sent (the first attempt succeeded) allocates no
/// extensions map.
fn kept_copy<B>(req: &Request<ReplayBody<B>>) -> Request<ReplayBody<B>> {
    let extensions = req.extensions();
    let mut body = req.body().clone();
    let mut kept = match (extensions.get::<AttemptContext>(), &req.body().slot) {
        (Some(ctx), _) if extensions.len() == 1 => {
            body.slot = Slot::Stashed(ctx.clone());
            Request::new(body)
        }
        (_, slot) => {
            if let Slot::Stashed(ctx) = slot {
                body.slot = Slot::Stashed(ctx.clone());
            }
            let mut kept = Request::new(body);
            *kept.extensions_mut() = extensions.clone();
            kept
        }
    };
    *kept.method_mut() = req.method().clone();
    *kept.uri_mut() = req.uri().clone();
    *kept.version_mut() = req.version();
    // A new request's map is empty and allocates nothing: clone only a
    // map with headers in it.
    if !req.headers().is_empty() {
        *kept.headers_mut() = req.headers().clone();
    }
    kept
}

impl<B: Body> Replay<Request<B>> for HttpReplay {
    type Request = Request<ReplayBody<B>>;

    fn prepare(&self, req: Request<B>, deadline: Option<Instant>) -> Self::Request {
        HttpReplayed.prepare(req.map(|b| ReplayBody::new(b, self.max_bytes)), deadline)
    }

    // Once wrapped, a request is kept exactly as a layer below keeps it.
    fn deadline(&self, req: &Self::Request) -> Option<Instant> {
        HttpReplayed.deadline(req)
    }

    fn copy(&self, req: &Self::Request) -> Option<Self::Request> {
        HttpReplayed.copy(req)
    }

    fn can_replay(&self, kept: &Self::Request, concurrently: bool) -> bool {
        HttpReplayed.can_replay(kept, concurrently)
    }

    fn next_attempt(&self, req: &mut Self::Request) {
        HttpReplayed.next_attempt(req)
    }

    fn next_hedge(&self, req: &mut Self::Request) {
        HttpReplayed.next_hedge(req)
    }

    fn deadline_covered(&self, kept: &Self::Request) -> bool {
        HttpReplayed.deadline_covered(kept)
    }

    fn untried_left(&self, kept: &Self::Request) -> bool {
        HttpReplayed.untried_left(kept)
    }

    fn queueing(&self, kept: &Self::Request) -> bool {
        HttpReplayed.queueing(kept)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};

    #[test]
    fn a_replayable_body_is_four_words() {
        // With `Full<Bytes>` (four words too) the request stays as small as
        // the caller's own, within the size the client copies fastest.
        assert!(std::mem::size_of::<ReplayBody<Full<Bytes>>>() <= 4 * std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<Option<AttemptContext>>(), std::mem::size_of::<AttemptContext>());
    }

    #[test]
    fn a_first_attempt_of_known_length_says_so() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"twelve bytes")), DEFAULT_MAX_REPLAY_BYTES);
        assert_eq!(body.size_hint().exact(), Some(12), "sent with a content-length, not chunked");
        assert!(!body.is_end_stream());
    }

    #[test]
    fn a_body_read_to_its_length_is_complete_without_the_final_poll() {
        let mut first = ReplayBody::new(Full::new(Bytes::from_static(b"abc")), DEFAULT_MAX_REPLAY_BYTES);
        let copy = first.clone();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let frame = Pin::new(&mut first).poll_frame(&mut cx);
        assert!(matches!(frame, Poll::Ready(Some(Ok(_)))));
        // A sender that knows the length stops here and keeps `first` alive.
        assert!(first.is_end_stream());
        assert!(copy.is_complete(), "a retry can replay at once");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(copy.collect()).unwrap().to_bytes(), "abc");
        drop(first);
    }

    /// Frames that know exactly how many bytes are left.
    struct Chunks(std::collections::VecDeque<Frame<Bytes>>);

    impl Chunks {
        fn data(chunks: &[&'static [u8]]) -> Self {
            Chunks(chunks.iter().map(|c| Frame::data(Bytes::from_static(c))).collect())
        }

        /// `ab`, `cd`, then trailers.
        fn with_trailers() -> Self {
            let mut body = Chunks::data(&[b"ab", b"cd"]);
            body.0.push_back(Frame::trailers(trailers()));
            body
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.iter().filter_map(|f| f.data_ref()).map(Bytes::len).sum::<usize>() as u64)
        }
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        t
    }

    #[test]
    fn the_hint_of_a_body_kept_part_way_is_sound() {
        let mut first = ReplayBody::new(Chunks::data(&[b"ab", b"cd"]), DEFAULT_MAX_REPLAY_BYTES);
        let next = first.clone();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(Pin::new(&mut first).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(first.size_hint().exact(), Some(2));
        // Stopped part-way: the next attempt takes over with two bytes kept and two to read.
        drop(first);
        assert_eq!(next.size_hint().exact(), Some(4));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(next.collect()).unwrap().to_bytes(), "abcd");
    }

    #[test]
    fn a_copy_polled_while_the_last_attempt_still_holds_the_body_waits_for_it() {
        // The transport let the first attempt's response fail while its
        // connection task still holds the half-sent body.
        let mut first = ReplayBody::new(Chunks::data(&[b"ab", b"cd"]), DEFAULT_MAX_REPLAY_BYTES);
        let mut retry = first.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(Pin::new(&mut first).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut retry_cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut retry).poll_frame(&mut retry_cx).is_pending(), "waits, does not fail");
        assert!(!woken.0.load(Ordering::SeqCst));
        drop(first);
        assert!(woken.0.load(Ordering::SeqCst), "woken when the body is handed over");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(retry.collect()).unwrap().to_bytes(), "abcd");
    }

    #[test]
    fn a_copy_waiting_for_a_body_that_outgrows_the_cap_fails_at_once() {
        let mut first = ReplayBody::new(Chunks::data(&[b"ab", b"cd", b"ef"]), 3);
        let mut retry = first.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(Pin::new(&mut first).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        assert!(Pin::new(&mut retry).poll_frame(&mut Context::from_waker(&waker)).is_pending());
        // The first attempt reads past the cap and goes on sending.
        assert!(matches!(Pin::new(&mut first).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(woken.0.load(Ordering::SeqCst), "woken when the body can no longer be kept");
        let Poll::Ready(Some(Err(e))) = Pin::new(&mut retry).poll_frame(&mut cx) else { panic!("fails") };
        assert!(e.downcast_ref::<ReplayUnavailable>().is_some_and(ReplayUnavailable::was_capped));
        drop(first);
    }

    #[derive(Default)]
    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_kept_copy_labels_its_attempt_when_sent() {
        use ha_core::attempt::EndpointId;
        let req =
            http::Request::post("http://svc/x").header("a", "1").body(Full::new(Bytes::from_static(b"b"))).unwrap();
        let first = HttpReplay::default().prepare(req, None);
        let mut kept = HttpReplayed.copy(&first).unwrap();
        assert!(kept.extensions().is_empty(), "no extensions map until the copy is sent");
        first.attempt_context().unwrap().record_tried(EndpointId::from_raw(3));
        HttpReplayed.next_attempt(&mut kept);
        let ctx = kept.attempt_context().unwrap();
        assert_eq!(ctx.attempt(), 2);
        assert!(ctx.was_tried(EndpointId::from_raw(3)), "the history is shared with the first attempt");
        assert_eq!(
            (kept.method(), kept.uri(), &kept.headers()["a"]),
            (first.method(), first.uri(), &first.headers()["a"])
        );
        assert!(!ctx.is_hedge());
        let mut third = HttpReplayed.copy(&kept).unwrap();
        HttpReplayed.next_hedge(&mut third);
        assert_eq!(third.attempt_context().unwrap().attempt(), 3);
        assert!(third.attempt_context().unwrap().is_hedge(), "a hedge says so from the stash too");

        // Extensions of the caller's are kept with the context.
        let mut req = http::Request::get("http://svc/").body(Empty::<Bytes>::new()).unwrap();
        req.extensions_mut().insert(7u8);
        let first = HttpReplay::default().prepare(req, None);
        let mut kept = HttpReplayed.copy(&first).unwrap();
        assert_eq!(kept.extensions().get::<u8>(), Some(&7));
        HttpReplayed.next_hedge(&mut kept);
        assert_eq!((kept.attempt_context().unwrap().attempt(), kept.extensions().get::<u8>()), (2, Some(&7)));
        assert!(kept.attempt_context().unwrap().is_hedge(), "a hedge says so from the extensions too");
    }

    #[test]
    fn a_stashed_copy_sends_the_whole_body_and_passes_its_context_on() {
        let req = http::Request::post("http://svc/").body(Full::new(Bytes::from_static(b"hello"))).unwrap();
        let first = HttpReplay::default().prepare(req, None);
        let kept = HttpReplayed.copy(&first).unwrap();
        // A copy of a copy that was never sent carries the same context.
        let mut again = HttpReplayed.copy(&kept).unwrap();
        assert!(kept_context(&again).is_some());
        HttpReplayed.next_attempt(&mut again);
        assert_eq!(again.attempt_context().unwrap().attempt(), 2);
        // Sent as it is (no next attempt labelled), the stashed copy still
        // replays every byte once the first attempt has read them.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "hello");
            assert_eq!(kept.into_body().collect().await.unwrap().to_bytes(), "hello");
            assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "hello");
        });
    }

    #[test]
    fn trailers_are_replayed_after_the_data() {
        let first = ReplayBody::new(Chunks::with_trailers(), DEFAULT_MAX_REPLAY_BYTES);
        let (second, mut third) = (first.clone(), first.clone());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            for body in [first, second] {
                let all = body.collect().await.unwrap();
                assert_eq!(all.trailers(), Some(&trailers()));
                assert_eq!(all.to_bytes(), "abcd");
            }
            let mut frames = 0;
            while let Some(frame) = third.frame().await {
                frames += 1;
                let left = if frame.unwrap().is_trailers() { None } else { third.size_hint().exact() };
                assert_eq!(third.is_end_stream(), frames == 3, "after frame {frames}");
                assert_eq!(left, [Some(2), Some(0), None][frames - 1]);
            }
            assert_eq!(frames, 3);
        });
    }

    #[test]
    fn trailers_read_by_an_attempt_dropped_before_the_end_are_sent_by_the_next() {
        let mut first = ReplayBody::new(Chunks::with_trailers(), DEFAULT_MAX_REPLAY_BYTES);
        let second = first.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..3 {
            assert!(matches!(Pin::new(&mut first).poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        }
        // Gone after the trailers, before the body's end was seen.
        drop(first);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let all = rt.block_on(second.collect()).unwrap();
        assert_eq!(all.trailers(), Some(&trailers()));
        assert_eq!(all.to_bytes(), "abcd");
    }

    #[test]
    fn an_empty_body_keeps_nothing_and_replays_at_once() {
        let body = ReplayBody::new(Empty::<Bytes>::new(), DEFAULT_MAX_REPLAY_BYTES);
        assert!(body.shared.is_none(), "nothing allocated");
        assert!(body.is_end_stream() && body.is_complete() && body.is_replayable());
        assert_eq!(body.size_hint().exact(), Some(0));
        let copy = body.clone();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            assert!(body.collect().await.unwrap().to_bytes().is_empty());
            assert!(copy.collect().await.unwrap().to_bytes().is_empty());
        });
    }
}

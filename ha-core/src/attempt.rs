//! What one logical request carries across its attempts.
//!
//! A retry or hedge layer creates an [`AttemptContext`] when a request first
//! enters it and hands a clone to every attempt; the balancer reads it to
//! avoid endpoints this request already tried and records the endpoint it
//! picks. Clones share one set of tried endpoints (so a hedge sees what the
//! first attempt picked), while each clone has its own attempt number.
//!
//! For `http::Request` the context lives in the request's extensions; any
//! other request type can carry it by implementing [`HasAttemptContext`] or
//! by being wrapped in [`WithAttempt`].
//!
//! ```
//! use ha_core::attempt::{AttemptContext, EndpointId, HasAttemptContext};
//!
//! let mut req = http::Request::get("/").body(()).unwrap();
//! req.set_attempt_context(AttemptContext::new());
//!
//! // The balancer picks endpoint 7 for the first attempt.
//! let ctx = req.attempt_context().unwrap();
//! ctx.record_tried(EndpointId::from_raw(7));
//!
//! // The retry layer sends attempt 2 with the same shared history.
//! let second = ctx.next_attempt();
//! assert_eq!(second.attempt(), 2);
//! assert!(second.was_tried(EndpointId::from_raw(7)));
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::{NonZeroU32, NonZeroU64};

use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::Arc;
use crate::Instant;

/// How many tried endpoints a context remembers. Later ones are not
/// recorded; a request that has tried this many endpoints is past any sane
/// retry policy.
pub const MAX_TRIED: usize = 16;

/// A compact identity of an endpoint, shared by the balancer and the
/// attempt context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(NonZeroU64);

impl EndpointId {
    /// The identity of an endpoint key (its address, its discovery key):
    /// equal keys give equal ids within one build of the program.
    pub fn from_key<K: Hash + ?Sized>(key: &K) -> Self {
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        key.hash(&mut h);
        Self::from_raw(h.finish())
    }

    /// An id from a raw number; `0` is mapped to `u64::MAX` because zero marks
    /// an empty slot.
    pub fn from_raw(raw: u64) -> Self {
        EndpointId(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MAX))
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

struct Shared {
    tried: [AtomicU64; MAX_TRIED],
    len: AtomicUsize,
    deadline: Option<Instant>,
    // The attempt whose own timeout ends it by the deadline (0: none).
    covered: AtomicU32,
    // Endpoints available and not yet tried, as the last pick counted them.
    untried: AtomicU32,
    // Whether the endpoints of the last pick queued (see `set_queueing`).
    queueing: AtomicBool,
}

impl Shared {
    fn new(deadline: Option<Instant>) -> Self {
        Shared {
            tried: std::array::from_fn(|_| AtomicU64::new(0)),
            len: AtomicUsize::new(0),
            deadline,
            covered: AtomicU32::new(0),
            untried: AtomicU32::new(0),
            queueing: AtomicBool::new(false),
        }
    }
}

/// The state one logical request carries across attempts; see the
/// [module docs](self).
///
/// Every request that enters a retry or hedge layer gets one, so its shared
/// part is recycled: when the last clone of a context is dropped, its
/// allocation goes to a small per-thread free list that the next new context
/// on that thread takes, and a request costs no allocation in the steady
/// state.
#[derive(Clone)]
pub struct AttemptContext {
    // `None` only while being dropped, when the allocation is handed back.
    shared: Option<Arc<Shared>>,
    // Never zero: `Option<AttemptContext>`, and enums holding one, use the
    // niche, so a request body that keeps a context stays small.
    attempt: NonZeroU32,
    // Sent beside earlier attempts still in flight, not after they ended.
    hedge: bool,
}

impl Drop for AttemptContext {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            recycle::give_back(shared);
        }
    }
}

/// The per-thread free list of contexts' shared parts.
#[cfg(not(loom))]
mod recycle {
    use std::cell::RefCell;

    use super::{Arc, Instant, Shared};

    /// Most free allocations a thread keeps.
    const KEEP: usize = 64;

    thread_local! {
        static FREE: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take(deadline: Option<Instant>) -> Arc<Shared> {
        let reused = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
        if let Some(mut shared) = reused {
            // Only unshared allocations are ever put back, so this holds.
            if let Some(s) = Arc::get_mut(&mut shared) {
                s.deadline = deadline;
                return shared;
            }
        }
        Arc::new(Shared::new(deadline))
    }

    pub(super) fn give_back(mut shared: Arc<Shared>) {
        let Some(s) = Arc::get_mut(&mut shared) else { return };
        *s.len.get_mut() = 0;
        *s.covered.get_mut() = 0;
        *s.untried.get_mut() = 0;
        *s.queueing.get_mut() = false;
        for slot in &mut s.tried {
            *slot.get_mut() = 0;
        }
        let _ = FREE.try_with(move |free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(shared);
            }
        });
    }
}

/// Under loom every context allocates: the models are about the atomics.
#[cfg(loom)]
mod recycle {
    use super::{Arc, Instant, Shared};

    pub(super) fn take(deadline: Option<Instant>) -> Arc<Shared> {
        Arc::new(Shared::new(deadline))
    }

    pub(super) fn give_back(_shared: Arc<Shared>) {}
}

impl AttemptContext {
    /// A context for a new request, at attempt 1, with no deadline.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A context for a new request that must be done by `deadline`.
    pub fn with_deadline(deadline: Instant) -> Self {
        Self::build(Some(deadline))
    }

    fn build(deadline: Option<Instant>) -> Self {
        AttemptContext { shared: Some(recycle::take(deadline)), attempt: NonZeroU32::MIN, hedge: false }
    }

    fn shared(&self) -> &Shared {
        self.shared.as_deref().expect("a context's shared part is taken only when it is dropped")
    }

    /// The attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt.get()
    }

    /// A clone for the next attempt, sent after the earlier ones ended (a
    /// retry), sharing the history.
    pub fn next_attempt(&self) -> Self {
        AttemptContext { shared: self.shared.clone(), attempt: self.attempt.saturating_add(1), hedge: false }
    }

    /// A clone for the next attempt, sent while earlier ones may still be
    /// in flight (a hedge), sharing the history.
    pub fn next_hedge(&self) -> Self {
        AttemptContext { shared: self.shared.clone(), attempt: self.attempt.saturating_add(1), hedge: true }
    }

    /// True for a hedge ([`next_hedge`](Self::next_hedge)): the endpoints
    /// tried so far may still be working on this request.
    pub fn is_hedge(&self) -> bool {
        self.hedge
    }

    /// The overall deadline of the request, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.shared().deadline
    }

    /// Records that this attempt will end by the request's deadline
    /// whatever its endpoint does: a timer below the layer that enforces the
    /// deadline (a per-try timeout) is armed to end it no later. That layer
    /// may then leave its own deadline timer unarmed for this attempt (see
    /// [`deadline_covered`](Self::deadline_covered)). Call it only once that
    /// timer is armed, and only when the attempt's result is returned when
    /// it fires (nothing hedges this attempt below the layer asking).
    pub fn cover_deadline(&self) {
        self.shared().covered.store(self.attempt.get(), Ordering::Release);
    }

    /// True when a timer below has promised to end this attempt by the
    /// request's deadline ([`cover_deadline`](Self::cover_deadline) was
    /// called on this attempt's context).
    pub fn deadline_covered(&self) -> bool {
        self.shared().covered.load(Ordering::Acquire) == self.attempt.get()
    }

    /// Records that an attempt of this request went to `id`.
    pub fn record_tried(&self, id: EndpointId) {
        if self.was_tried(id) {
            return;
        }
        let slot = self.shared().len.fetch_add(1, Ordering::AcqRel);
        if let Some(cell) = self.shared().tried.get(slot) {
            cell.store(id.get(), Ordering::Release);
        } else {
            // Keep len bounded so it cannot wrap however often this is called.
            self.shared().len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// True when an attempt of this request already went to `id`.
    pub fn was_tried(&self, id: EndpointId) -> bool {
        self.tried().any(|t| t == id)
    }

    /// The endpoints tried so far, in the order they were recorded.
    pub fn tried(&self) -> impl Iterator<Item = EndpointId> + '_ {
        let n = self.shared().len.load(Ordering::Acquire).min(MAX_TRIED);
        // A slot claimed but not yet written reads as zero and is skipped.
        self.shared().tried[..n].iter().filter_map(|c| NonZeroU64::new(c.load(Ordering::Acquire)).map(EndpointId))
    }

    /// Records, from the balancer that picked this attempt's endpoint, how
    /// many available endpoints this request has still not tried. A retry
    /// layer above sends a retry at once while one is left (it goes to a
    /// server that has not just failed it) and waits its backoff once the
    /// request would go back to one.
    pub fn set_untried(&self, n: u32) {
        self.shared().untried.store(n, Ordering::Relaxed);
    }

    /// Available endpoints this request has not tried, as the balancer
    /// counted them at its last pick ([`set_untried`](Self::set_untried));
    /// 0 when no balancer said.
    pub fn untried(&self) -> u32 {
        self.shared().untried.load(Ordering::Relaxed)
    }

    /// Records, from the balancer that picked this attempt's endpoint,
    /// whether the endpoints it picks among queue (the time requests spend
    /// in flight well above its calm level): the fleet is past its capacity,
    /// and a retry layer above does not retry a failed attempt that was
    /// sent, since the retry would add load to the queues.
    pub fn set_queueing(&self, queueing: bool) {
        self.shared().queueing.store(queueing, Ordering::Relaxed);
    }

    /// Whether the balancer found its endpoints queueing at its last pick
    /// ([`set_queueing`](Self::set_queueing)); false when no balancer said.
    pub fn queueing(&self) -> bool {
        self.shared().queueing.load(Ordering::Relaxed)
    }

    /// How many endpoints were recorded (concurrent records of one endpoint
    /// may count twice).
    pub fn tried_count(&self) -> usize {
        self.tried().count()
    }
}

impl Default for AttemptContext {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AttemptContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptContext")
            .field("attempt", &self.attempt)
            .field("hedge", &self.hedge)
            .field("tried", &self.tried().map(EndpointId::get).collect::<Vec<_>>())
            .field("deadline", &self.shared().deadline)
            .finish()
    }
}

/// A request type that can carry an [`AttemptContext`].
pub trait HasAttemptContext {
    /// The context, if a retry or hedge layer attached one.
    fn attempt_context(&self) -> Option<&AttemptContext>;

    /// Attaches (or replaces) the context.
    fn set_attempt_context(&mut self, ctx: AttemptContext);
}

#[cfg(feature = "http")]
impl<B> HasAttemptContext for http::Request<B> {
    fn attempt_context(&self) -> Option<&AttemptContext> {
        self.extensions().get::<AttemptContext>()
    }

    /// Puts the context in the request's extensions. A request with none
    /// takes a map a transport adapter gave back
    /// ([`release_extensions`]) on this thread, if there is one, so that
    /// no allocation is made for it.
    fn set_attempt_context(&mut self, ctx: AttemptContext) {
        let extensions = self.extensions_mut();
        if extensions.is_empty() {
            if let Some(spare) = spare::take() {
                *extensions = spare;
            }
        }
        match extensions.get_mut::<AttemptContext>() {
            Some(slot) => *slot = ctx,
            None => {
                extensions.insert(ctx);
            }
        }
    }
}

/// Called by a transport adapter on a request it is about to hand to a
/// client that does not read the attempt context (the context's readers, a
/// balancer and a per-try timeout, are above it): when the context is the
/// request's only extension, takes the extensions map out of the request
/// and keeps it on a small per-thread free list, where
/// [`HasAttemptContext::set_attempt_context`] on the next request of this
/// thread finds it. A request otherwise pays for a map of its own (three
/// allocations: the map, its table and the boxed context) just to carry its
/// context down the stack.
///
/// A request with other extensions keeps them all, its context included.
///
/// ```
/// use ha_core::attempt::{release_extensions, AttemptContext, HasAttemptContext};
///
/// let mut req = http::Request::get("/").body(()).unwrap();
/// req.set_attempt_context(AttemptContext::new());
/// release_extensions(&mut req);
/// assert!(req.extensions().is_empty());
///
/// let mut next = http::Request::get("/").body(()).unwrap();
/// next.set_attempt_context(AttemptContext::new().next_attempt());
/// assert_eq!(next.attempt_context().unwrap().attempt(), 2);
/// ```
#[cfg(feature = "http")]
pub fn release_extensions<B>(req: &mut http::Request<B>) {
    let extensions = req.extensions_mut();
    if extensions.len() != 1 {
        return;
    }
    let Some(slot) = extensions.get_mut::<AttemptContext>() else { return };
    // The context is let go now (its shared part recycled); the map keeps
    // a placeholder, overwritten before it is ever read.
    drop(std::mem::replace(slot, AttemptContext { shared: None, attempt: NonZeroU32::MIN, hedge: false }));
    spare::give_back(std::mem::take(extensions));
}

/// The per-thread free list of extensions maps holding a placeholder context.
#[cfg(all(feature = "http", not(loom)))]
mod spare {
    use std::cell::RefCell;

    /// Most maps a thread keeps.
    const KEEP: usize = 64;

    thread_local! {
        static SPARE: RefCell<Vec<http::Extensions>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Option<http::Extensions> {
        SPARE.try_with(|spare| spare.borrow_mut().pop()).ok().flatten()
    }

    pub(super) fn give_back(extensions: http::Extensions) {
        let _ = SPARE.try_with(move |spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEEP {
                spare.push(extensions);
            }
        });
    }
}

/// Under loom no map is kept: the models are about the atomics.
#[cfg(all(feature = "http", loom))]
mod spare {
    pub(super) fn take() -> Option<http::Extensions> {
        None
    }

    pub(super) fn give_back(_extensions: http::Extensions) {}
}

/// Wraps any request so it can carry an [`AttemptContext`].
#[derive(Debug, Clone)]
pub struct WithAttempt<R> {
    /// The wrapped request.
    pub request: R,
    context: Option<AttemptContext>,
}

impl<R> WithAttempt<R> {
    /// Wraps `request` with no context yet.
    pub fn new(request: R) -> Self {
        WithAttempt { request, context: None }
    }

    /// Unwraps the request.
    pub fn into_inner(self) -> R {
        self.request
    }
}

impl<R> HasAttemptContext for WithAttempt<R> {
    fn attempt_context(&self) -> Option<&AttemptContext> {
        self.context.as_ref()
    }

    fn set_attempt_context(&mut self, ctx: AttemptContext) {
        self.context = Some(ctx);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_dropped_context_is_reused_clean() {
        let first = AttemptContext::with_deadline(Instant::now() + Duration::from_secs(5));
        first.record_tried(EndpointId::from_raw(9));
        first.set_untried(2);
        first.set_queueing(true);
        let second = first.next_attempt();
        assert!(second.queueing(), "one request's attempts share what the balancer said");
        let ptr = Arc::as_ptr(first.shared.as_ref().unwrap());
        drop(first);
        // Still shared with `second`: not recycled, so a new context gets a fresh one.
        let other = AttemptContext::new();
        assert_ne!(Arc::as_ptr(other.shared.as_ref().unwrap()), ptr);
        drop(second);
        let reused = AttemptContext::new();
        assert_eq!(Arc::as_ptr(reused.shared.as_ref().unwrap()), ptr, "the last clone's drop recycled it");
        assert_eq!(reused.tried_count(), 0);
        assert!(!reused.was_tried(EndpointId::from_raw(9)));
        assert_eq!(reused.deadline(), None);
        assert_eq!((reused.untried(), reused.queueing()), (0, false));
        assert_eq!(reused.attempt(), 1);
        drop(other);
    }

    #[test]
    fn attempts_count_up_and_share_history() {
        let ctx = AttemptContext::new();
        assert_eq!(ctx.attempt(), 1);
        let a = EndpointId::from_key("10.0.0.1:80");
        let b = EndpointId::from_key("10.0.0.2:80");
        assert_ne!(a, b);
        assert_eq!(a, EndpointId::from_key("10.0.0.1:80"));
        ctx.record_tried(a);
        let hedge = ctx.next_hedge();
        hedge.record_tried(b);
        let third = hedge.next_attempt();
        assert_eq!((hedge.attempt(), third.attempt()), (2, 3));
        // A hedge says so; the retry after it is not one.
        assert!(hedge.is_hedge() && !third.is_hedge() && !ctx.is_hedge());
        // Every clone sees both endpoints, in order, once.
        ctx.record_tried(a);
        assert_eq!(ctx.tried().collect::<Vec<_>>(), vec![a, b]);
        assert!(third.was_tried(a) && third.was_tried(b));
        assert!(!third.was_tried(EndpointId::from_raw(3)));
        assert_eq!(ctx.tried_count(), 2);
    }

    #[test]
    fn history_is_bounded() {
        let ctx = AttemptContext::new();
        for i in 1..=100 {
            ctx.record_tried(EndpointId::from_raw(i));
        }
        assert_eq!(ctx.tried_count(), MAX_TRIED);
        assert!(ctx.was_tried(EndpointId::from_raw(MAX_TRIED as u64)));
        assert!(!ctx.was_tried(EndpointId::from_raw(MAX_TRIED as u64 + 1)));
    }

    #[test]
    fn zero_is_not_an_empty_slot() {
        let ctx = AttemptContext::new();
        ctx.record_tried(EndpointId::from_raw(0));
        assert!(ctx.was_tried(EndpointId::from_raw(0)));
        assert_eq!(ctx.tried_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_carried_by_every_clone() {
        let at = Instant::now() + Duration::from_secs(2);
        let ctx = AttemptContext::with_deadline(at);
        assert_eq!(ctx.next_attempt().deadline(), Some(at));
        assert_eq!(AttemptContext::new().deadline(), None);
    }

    #[test]
    fn released_extensions_carry_only_the_next_requests_context() {
        let first = AttemptContext::new();
        first.record_tried(EndpointId::from_raw(3));
        let mut req = http::Request::get("/").body(()).unwrap();
        req.set_attempt_context(first.next_attempt());
        release_extensions(&mut req);
        assert!(req.extensions().is_empty());
        assert!(req.attempt_context().is_none());

        // This thread's next request takes the map, holding its own context only.
        let mut next = http::Request::get("/").body(()).unwrap();
        next.set_attempt_context(AttemptContext::new());
        assert_eq!(next.extensions().len(), 1);
        let ctx = next.attempt_context().unwrap();
        assert_eq!((ctx.attempt(), ctx.tried_count()), (1, 0));

        // A request with extensions of its own keeps them, and its context.
        let mut mixed = http::Request::get("/").body(()).unwrap();
        mixed.extensions_mut().insert(7u8);
        mixed.set_attempt_context(AttemptContext::new());
        release_extensions(&mut mixed);
        assert_eq!(mixed.extensions().get::<u8>(), Some(&7));
        assert!(mixed.attempt_context().is_some());
        // Replacing a context keeps the other extensions too.
        mixed.set_attempt_context(AttemptContext::new().next_attempt());
        assert_eq!((mixed.extensions().len(), mixed.attempt_context().unwrap().attempt()), (2, 2));
    }

    #[test]
    fn http_requests_and_wrapped_requests_carry_the_context() {
        let mut req = http::Request::get("/").body(()).unwrap();
        assert!(req.attempt_context().is_none());
        req.set_attempt_context(AttemptContext::new().next_attempt());
        assert_eq!(req.attempt_context().unwrap().attempt(), 2);

        let mut wrapped = WithAttempt::new(42u32);
        assert!(wrapped.attempt_context().is_none());
        wrapped.set_attempt_context(AttemptContext::new());
        wrapped.attempt_context().unwrap().record_tried(EndpointId::from_raw(9));
        let copy = wrapped.clone();
        assert!(copy.attempt_context().unwrap().was_tried(EndpointId::from_raw(9)));
        assert_eq!(copy.into_inner(), 42);
    }
}

//! [`Body`]: a request body for stacks over HTTP transports.
//!
//! Any `http_body::Body` with `Bytes` data works as a stack's request body;
//! this one holds either bytes or any such body boxed, so one client type
//! sends both. Its error type is a plain struct, which matters in one case:
//! a request type that mentions `Box<dyn Error + Send + Sync>` as a type
//! argument (such as `BoxBody<Bytes, BoxError>`) makes rustc reject a
//! spawned task that awaits the stack ("implementation of `Service` is not
//! general enough", rust-lang/rust#102211); `ha::Body` does not.
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Body as _;
//!
//! let full = ha::Body::from("hello");
//! assert_eq!(full.size_hint().exact(), Some(5));
//! let streamed = ha::Body::new(http_body_util::Full::new(Bytes::from_static(b"hi")));
//! assert!(!streamed.is_end_stream());
//! assert!(ha::Body::empty().is_end_stream());
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tower::BoxError;

/// A request body: bytes, or any body with `Bytes` data, boxed.
pub struct Body {
    inner: UnsyncBoxBody<Bytes, BodyError>,
}

impl Body {
    /// A body with no bytes.
    pub fn empty() -> Self {
        Body { inner: Empty::new().map_err(|never| match never {}).boxed_unsync() }
    }

    /// Boxes any body with `Bytes` data (a stream, a file, a channel).
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body { inner: body.map_err(|e| BodyError(e.into())).boxed_unsync() }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body { inner: Full::new(bytes).map_err(|never| match never {}).boxed_unsync() }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::from(Bytes::from(s))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::from(Bytes::from_static(s.as_bytes()))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::from(Bytes::from(v))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").field("size_hint", &self.inner.size_hint()).finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error of a boxed [`Body`]: the wrapped body's error as its source.
#[derive(Debug)]
pub struct BodyError(BoxError);

impl BodyError {
    /// The wrapped body's error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body failed: {}", self.0)
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

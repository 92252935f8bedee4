//! Waiting for a response's trailers: the frames read before them are kept
//! and replayed to the caller, followed by the rest of the body.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tonic::Status;
use tower::BoxError;

use super::classify::GrpcStatus;

/// The default cap on the response bytes kept while waiting for trailers:
/// 4 MiB, tonic's default maximum decoded message size.
pub const DEFAULT_MAX_TRAILER_WAIT_BYTES: usize = 4 * 1024 * 1024;

/// Reads `res`'s body until its trailers (or its end), keeping at most
/// `max_bytes` of data, and returns the response with a body that replays
/// what was read, then the rest. The status of the trailers (or
/// [`GrpcStatus::missing_trailers`] when the body ended without any) goes
/// into the response's extensions; past `max_bytes` no status is recorded
/// and the response is classified as of its headers. An error while
/// reading is the call's error.
pub(crate) async fn until_trailers(
    res: Response<tonic::body::Body>,
    max_bytes: usize,
) -> Result<Response<tonic::body::Body>, BoxError> {
    let (mut parts, mut body) = res.into_parts();
    let mut frames = VecDeque::new();
    let mut kept = 0usize;
    let mut status = None;
    let mut rest = None;
    loop {
        if kept > max_bytes {
            rest = Some(body);
            break;
        }
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    status = Some(GrpcStatus::from_headers(trailers).unwrap_or(GrpcStatus::missing_trailers()));
                    frames.push_back(frame);
                    break;
                }
                kept = kept.saturating_add(frame.data_ref().map_or(0, Buf::remaining));
                frames.push_back(frame);
            }
            Some(Err(status)) => return Err(status.into()),
            None => {
                status = Some(GrpcStatus::missing_trailers());
                break;
            }
        }
    }
    if let Some(status) = status {
        parts.extensions.insert(status);
    }
    Ok(Response::from_parts(parts, tonic::body::Body::new(Replayed { frames, rest })))
}

/// Frames already read, then the rest of the body, if any.
struct Replayed {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<tonic::body::Body>,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self.frames.iter().filter_map(Frame::data_ref).map(|d| d.len() as u64).sum();
        let rest = self.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(kept));
        if let Some(upper) = rest.upper() {
            // At least the lower bound: both grew by `kept`, saturating.
            hint.set_upper(upper.saturating_add(kept).max(hint.lower()));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use tonic::Code;

    fn frames(body: tonic::body::Body) -> Vec<Frame<Bytes>> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move {
            let mut body = body;
            let mut out = Vec::new();
            while let Some(f) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                out.push(f.unwrap());
            }
            out
        })
    }

    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn response(data: &[&'static str], grpc_status: Option<&str>) -> Response<tonic::body::Body> {
        let mut fs: VecDeque<_> = data.iter().map(|d| Frame::data(Bytes::from_static(d.as_bytes()))).collect();
        if let Some(s) = grpc_status {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", s.parse().unwrap());
            fs.push_back(Frame::trailers(t));
        }
        Response::new(tonic::body::Body::new(Frames(fs)))
    }

    fn run(res: Response<tonic::body::Body>, max: usize) -> Response<tonic::body::Body> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(until_trailers(res, max)).unwrap()
    }

    #[test]
    fn trailers_are_recorded_and_the_body_replayed() {
        let res = run(response(&["ab", "cd"], Some("14")), 1024);
        assert_eq!(res.extensions().get::<GrpcStatus>().map(|s| s.code), Some(Code::Unavailable));
        let fs = frames(res.into_body());
        assert_eq!(fs.len(), 3);
        assert_eq!(fs[1].data_ref().unwrap(), "cd");
        assert_eq!(fs[2].trailers_ref().unwrap()["grpc-status"], "14");
    }

    #[test]
    fn size_hints_count_the_kept_frames() {
        let done = Replayed { frames: [Frame::data(Bytes::from_static(b"abc"))].into(), rest: None };
        assert_eq!(done.size_hint().exact(), Some(3));
        let rest = tonic::body::Body::new(Frames([Frame::data(Bytes::from_static(b"de"))].into()));
        let more = Replayed { frames: [Frame::data(Bytes::from_static(b"abc"))].into(), rest: Some(rest) };
        assert_eq!(more.size_hint().lower(), 3);
        assert!(!more.is_end_stream());
    }

    #[test]
    fn a_body_without_trailers_is_a_protocol_error() {
        let res = run(response(&["ab"], None), 1024);
        assert_eq!(res.extensions().get::<GrpcStatus>(), Some(&GrpcStatus::missing_trailers()));
        assert_eq!(frames(res.into_body()).len(), 1);
    }

    #[test]
    fn past_the_cap_the_status_is_left_to_the_headers() {
        let res = run(response(&["abc", "def", "ghi"], Some("13")), 2);
        assert!(res.extensions().get::<GrpcStatus>().is_none());
        let fs = frames(res.into_body());
        assert_eq!(fs.len(), 4, "nothing is lost");
        assert_eq!(fs[3].trailers_ref().unwrap()["grpc-status"], "13");
    }
}

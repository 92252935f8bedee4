//! Backends behind a channel, for stacks that need `Send` services.
//!
//! The simulation is single-threaded (`Rc`, `RefCell`), but ha's facade
//! `Stack` and tower's `Buffer` require `Send + Sync` services. A [`Remote`]
//! is a `Send` handle: its call goes down a channel to a local task that
//! calls the [`SimBackend`] and sends the answer back. On the paused clock
//! the hop costs no virtual time (time only moves when every task waits),
//! and dropping the caller's future drops the backend's, as a direct call
//! would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tower::{BoxError, Service};

use super::sim::{SimBackend, SimRequest};

struct Call {
    index: usize,
    req: SimRequest,
    reply: oneshot::Sender<Result<(), BoxError>>,
}

/// A `Send + Sync` handle on one simulated backend.
#[derive(Clone, Debug)]
pub struct Remote {
    tx: mpsc::UnboundedSender<Call>,
    index: usize,
}

/// Serves `backends` from a local task (call inside the run's `LocalSet`);
/// one handle per backend, in order.
pub fn serve(backends: &[SimBackend]) -> Vec<Remote> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
    let local: Vec<SimBackend> = backends.to_vec();
    tokio::task::spawn_local(async move {
        while let Some(Call { index, req, mut reply }) = rx.recv().await {
            let work = local[index].clone().call(req);
            tokio::task::spawn_local(async move {
                tokio::select! {
                    r = work => { let _ = reply.send(r); }
                    () = reply.closed() => {}
                }
            });
        }
    });
    (0..backends.len()).map(|index| Remote { tx: tx.clone(), index }).collect()
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Service<SimRequest> for Remote {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: SimRequest) -> Self::Future {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(Call { index: self.index, req, reply }).is_ok();
        Box::pin(async move {
            if !sent {
                return Err("the simulation has ended".into());
            }
            rx.await.map_err(|_| BoxError::from("the simulation dropped the call"))?
        })
    }
}

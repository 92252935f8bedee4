// A client's error must convert into `tower::BoxError`.
use ha::core::WithAttempt;
use ha::{Stack, Target};
use tower::service_fn;

fn main() {
    let transport = |_t: &Target| service_fn(|req: WithAttempt<String>| async move { Ok::<_, ()>(req.request) });
    let _ = Stack::<_, WithAttempt<String>>::builder(transport).build();
}

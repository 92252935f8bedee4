// The HTTP classifier cannot classify a non-HTTP client's results.
use ha::core::classify::HttpClassifier;
use ha::core::WithAttempt;
use ha::{Stack, Target};
use tower::{service_fn, BoxError};

fn main() {
    let transport = |_t: &Target| service_fn(|req: WithAttempt<String>| async move { Ok::<_, BoxError>(req.request) });
    let _ = Stack::<_, WithAttempt<String>>::builder(transport).classifier(HttpClassifier::default()).build();
}

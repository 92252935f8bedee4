// A request type the stack cannot keep for another attempt.
use ha::{Stack, Target};
use tower::{service_fn, BoxError};

fn main() {
    let transport = |_t: &Target| service_fn(|req: String| async move { Ok::<_, BoxError>(req) });
    let _ = Stack::<_, String>::builder(transport).build();
}

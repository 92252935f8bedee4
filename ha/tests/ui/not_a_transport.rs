// A transport must make a tower client for each endpoint.
use ha::core::WithAttempt;
use ha::Stack;

fn main() {
    let transport = 42u32;
    let _ = Stack::<_, WithAttempt<String>>::builder(transport).build();
}

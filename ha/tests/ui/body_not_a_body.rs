// The hyper stack sends `http::Request<B>` where `B` is an HTTP body.
fn main() {
    let _ = ha::hyper::builder::<u32>().build();
}

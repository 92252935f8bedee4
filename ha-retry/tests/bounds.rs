//! Every exported service and future is `Send + 'static`, and the services are `Clone`.

use std::convert::Infallible;
use std::future::Ready;

use ha_retry::interop::{HaPolicy, TowerPolicyLayer};
use ha_retry::{HedgeConfig, HedgeLayer, RetryBudget, RetryConfig, RetryLayer};
use tower::{service_fn, Layer, Service};

fn assert_service<S, Req>(svc: S)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    drop(svc);
}

fn inner(
) -> impl Service<u32, Response = u32, Error = Infallible, Future = Ready<Result<u32, Infallible>>> + Clone + Send {
    service_fn(|x: u32| std::future::ready(Ok(x)))
}

#[test]
fn services_are_send_clone_and_static() {
    assert_service::<_, u32>(RetryLayer::new(RetryConfig::default()).unwrap().layer(inner()));
    assert_service::<_, u32>(HedgeLayer::new(HedgeConfig::default()).unwrap().layer(inner()));
    let budget = RetryBudget::new(Default::default()).unwrap();
    assert_service::<_, u32>(
        TowerPolicyLayer::new(HaPolicy::new(RetryConfig::default()).unwrap(), budget).layer(inner()),
    );
    #[cfg(feature = "http")]
    http_services();
}

#[cfg(feature = "http")]
fn http_services() {
    let http = service_fn(|_: http::Request<ha_retry::body::ReplayBody<http_body_util::Full<bytes::Bytes>>>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(())))
    });
    assert_service::<_, http::Request<http_body_util::Full<bytes::Bytes>>>(
        RetryLayer::http(RetryConfig::default()).unwrap().layer(http),
    );
    assert_service::<_, http::Request<http_body_util::Full<bytes::Bytes>>>(
        HedgeLayer::builder(HedgeConfig::default()).http().build().unwrap().layer(http),
    );
}

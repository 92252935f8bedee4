//! The tower layer that puts a circuit breaker around a service.

use std::sync::Arc;

use ha_core::classify::ErrorsAreFailures;
use ha_core::{Events, Instant};
use tower_layer::Layer;

use crate::breaker::Breaker;
use crate::config::{BreakerConfig, ConfigError};
use crate::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`].
///
/// By default each wrapped service gets a breaker of its own (one per
/// endpoint when a balancer builds one stack per endpoint); with
/// [`CircuitBreakerLayer::shared`] every service shares one.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ErrorsAreFailures> {
    config: BreakerConfig,
    name: Arc<str>,
    events: Events,
    classifier: C,
    shared: Option<Arc<Breaker>>,
}

impl CircuitBreakerLayer {
    /// A layer building breakers with `config`, validated now.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CircuitBreakerLayer {
            config,
            name: "breaker".into(),
            events: Events::new(),
            classifier: ErrorsAreFailures::default(),
            shared: None,
        })
    }

    /// A layer whose services all share `breaker`.
    pub fn shared(breaker: Arc<Breaker>) -> Self {
        CircuitBreakerLayer {
            config: breaker.config(),
            name: breaker.name().into(),
            events: Events::new(),
            classifier: ErrorsAreFailures::default(),
            shared: Some(breaker),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Names the breakers (in events and `tracing`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Sends the breakers' state changes to `events`.
    pub fn events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Classifies results with `classifier` instead of "errors are failures".
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            config: self.config,
            name: self.name,
            events: self.events,
            classifier,
            shared: self.shared,
        }
    }

    /// A new breaker with this layer's settings (what `layer` uses).
    pub fn build_breaker(&self) -> Arc<Breaker> {
        match &self.shared {
            Some(b) => b.clone(),
            None => Arc::new(
                Breaker::new(self.name.clone(), self.config.clone(), self.events.clone(), Instant::now())
                    .expect("the config was validated when the layer was built"),
            ),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.build_breaker(), self.classifier.clone())
    }
}

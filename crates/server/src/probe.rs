//! The gateway as the management layer's [`UpstreamProbe`]: "test model" and "fetch upstream
//! models" go out through the request path's URL building, upstream auth and proxy clients.
//! The admin crate does not depend on the gateway; this adapter is where they meet. It is
//! installed as an axum extension for the JSON API and the console.

use std::sync::Arc;

use aether_admin::service::probe::{
    ModelListing, Probe, ProbeResult, UpstreamModel, UpstreamProbe,
};
use aether_domain::entities::Endpoint;
use aether_gateway::Gateway;
use axum::Extension;

struct GatewayProbe(Gateway);

#[async_trait::async_trait]
impl UpstreamProbe for GatewayProbe {
    async fn test_model(&self, endpoint: &Endpoint, secret: &str, model: &str) -> ProbeResult {
        let o = self.0.probe_model(endpoint, secret, model).await;
        ProbeResult {
            ok: o.ok,
            status: o.status,
            latency_ms: o.latency_ms,
            url: o.url,
            answered_model: o.answered_model,
            excerpt: o.excerpt,
            usage: o.usage,
            error_class: o.error_class.map(str::to_string),
            error: o.error,
        }
    }

    async fn list_models(&self, endpoint: &Endpoint, secret: &str) -> ModelListing {
        let o = self.0.probe_model_list(endpoint, secret).await;
        ModelListing {
            ok: o.ok,
            status: o.status,
            latency_ms: o.latency_ms,
            url: o.url,
            models: o
                .models
                .into_iter()
                .map(|m| UpstreamModel {
                    id: m.id,
                    display_name: m.display_name,
                })
                .collect(),
            pages: o.pages,
            truncated: o.truncated,
            error_class: o.error_class.map(str::to_string),
            error: o.error,
        }
    }
}

/// The extension layer that hands the probe to the API's and the console's handlers.
pub fn layer(gateway: &Gateway) -> Extension<Probe> {
    Extension(Probe(Arc::new(GatewayProbe(gateway.clone()))))
}

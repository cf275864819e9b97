//! An HTTP API handed from one role to another running in the same process.
//!
//! A role that serves a router (the shard) can also hand it to a role beside it (its bridge),
//! which then sends its requests to the router itself instead of through a socket: the same
//! routes, middleware, limits, spans and answers, without TCP, HTTP/1.1 framing or the copies
//! through the kernel. The serving role withdraws the router when it starts to drain, so a
//! caller then sees it as unreachable, as it would see a closed socket.

use axum::body::Body;
use axum::http::{Request, Response};
use std::sync::{Arc, RwLock};
use tower::ServiceExt;

/// A slot for a router served in this process: filled by the role that serves it, read by the
/// roles that call it. Clones share the slot.
#[derive(Clone, Default)]
pub struct InProcess(Arc<RwLock<Option<axum::Router>>>);

impl InProcess {
    /// An empty slot: calls fail until a router is served in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `router` in this slot (replacing any router served before).
    pub fn serve(&self, router: axum::Router) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(router);
    }

    /// Withdraws the router: calls from now on fail as a closed socket would. Calls already
    /// made finish.
    pub fn withdraw(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether a router is served now.
    pub fn serving(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Hands `request` to the router; `None` when none is served.
    pub async fn call(&self, request: Request<Body>) -> Option<Response<Body>> {
        let router = self.0.read().unwrap_or_else(|p| p.into_inner()).clone()?;
        // A router's service is always ready and never fails (`Infallible`).
        Some(router.oneshot(request).await.unwrap_or_else(|never| match never {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;

    #[tokio::test]
    async fn a_served_router_answers_and_a_withdrawn_one_does_not() {
        let slot = InProcess::new();
        let call = |body: &'static str| {
            let slot = slot.clone();
            async move {
                let request =
                    Request::builder().method("POST").uri("/echo").body(Body::from(body)).unwrap();
                let response = slot.call(request).await?;
                let status = response.status().as_u16();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                Some((status, String::from_utf8(bytes.to_vec()).unwrap()))
            }
        };
        assert_eq!(call("before").await, None, "nothing served yet");
        assert!(!slot.serving());
        slot.serve(axum::Router::new().route("/echo", post(|body: String| async move { body })));
        assert!(slot.serving());
        assert_eq!(call("hello").await, Some((200, "hello".into())));
        // The router's own answers come back as they are, errors included.
        let missing = Request::builder().uri("/nowhere").body(Body::empty()).unwrap();
        assert_eq!(slot.call(missing).await.map(|r| r.status().as_u16()), Some(404));
        slot.withdraw();
        assert_eq!(call("after").await, None, "withdrawn");
    }
}

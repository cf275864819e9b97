//! How a bridge reaches its own city's shard: the shard's HTTP API over TCP, or — when the two
//! run in one process (`urbis devnet`) — the same router handed over in process
//! (`urbis_ops::in_process`): the same routes, limits and answers, without a socket.
//!
//! Either way the bridge sends the same requests and reads the same answers; nothing it
//! decides depends on which way it reached its shard.

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use std::time::Duration;
use urbis_ops::in_process::InProcess;

/// The largest answer read from the shard in process (an outbound page of 256 packets with
/// their proofs is a few megabytes).
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// The way to the own shard, and its address (for the log and for HTTP).
#[derive(Clone)]
pub(crate) struct Shard {
    /// `http://host:port`, without a trailing slash.
    base: String,
    way: Way,
}

#[derive(Clone)]
enum Way {
    Http(reqwest::Client),
    InProcess { router: InProcess, timeout: Duration },
}

/// A shard's answer: its status and its whole body.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Shard {
    /// Over HTTP at `base`, each request given up after `timeout`.
    pub fn http(base: &str, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), way: Way::Http(client) })
    }

    /// Through the router its shard serves in this process; `base` is only named in errors.
    pub fn in_process(base: &str, router: InProcess, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            way: Way::InProcess { router, timeout },
        }
    }

    /// `GET path` (a path and query, from `/`).
    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<Reply> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        match &self.way {
            Way::Http(client) => {
                let mut request = client.request(method, format!("{}{path}", self.base));
                if let Some(body) = body {
                    request = request.header(header::CONTENT_TYPE, "application/json").body(body);
                }
                let response = request.send().await?;
                let status = response.status();
                Ok(Reply { status, body: response.bytes().await? })
            }
            Way::InProcess { router, timeout } => {
                let mut request = Request::builder().method(method).uri(path);
                if body.is_some() {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                }
                let request = request.body(body.map_or_else(Body::empty, Body::from))?;
                let answer = async {
                    let response = router
                        .call(request)
                        .await
                        .with_context(|| format!("shard {} is not serving", self.base))?;
                    let status = response.status();
                    let body = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX)
                        .await
                        .context("reading the shard's answer")?;
                    Ok(Reply { status, body })
                };
                tokio::time::timeout(*timeout, answer)
                    .await
                    .with_context(|| format!("shard {} did not answer in time", self.base))?
            }
        }
    }
}

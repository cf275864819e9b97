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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    /// A router that answers what it was sent, as a shard would: JSON in, status and JSON out.
    fn router() -> axum::Router {
        axum::Router::new()
            .route("/v1/echo", post(|body: Bytes| async move { (StatusCode::OK, body) }))
            .route(
                "/v1/query",
                get(|q: axum::extract::RawQuery| async move { q.0.unwrap_or_default() }),
            )
            .route(
                "/v1/refuse",
                get(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "{\"detail\":\"no\"}") }),
            )
    }

    #[tokio::test]
    async fn both_ways_to_the_shard_give_the_same_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router()).await });
        let served = InProcess::new();
        served.serve(router());
        let timeout = Duration::from_secs(5);
        let ways = [
            Shard::http(&format!("{base}/"), timeout).unwrap(),
            Shard::in_process(&base, served.clone(), timeout),
        ];
        let mut answers = Vec::new();
        for shard in &ways {
            let echo = shard.post("/v1/echo", br#"{"packets":[1,2]}"#.to_vec()).await.unwrap();
            let query = shard.get("/v1/query?destination=berlin&after=7").await.unwrap();
            let refused = shard.get("/v1/refuse").await.unwrap();
            let missing = shard.get("/v1/nowhere").await.unwrap();
            assert!(echo.is_success() && !refused.is_success());
            assert_eq!(echo.json::<serde_json::Value>().unwrap()["packets"][1], 2);
            answers.push([echo, query, refused, missing].map(|r| (r.status, r.text())));
        }
        assert_eq!(answers[0], answers[1], "the same answers over HTTP and in process");
        assert_eq!(answers[1][1].1, "destination=berlin&after=7");
        assert_eq!(answers[1][2].0, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answers[1][3].0, StatusCode::NOT_FOUND);

        // A shard that withdrew its router (it is draining) is unreachable, as a closed socket.
        served.withdraw();
        let e = ways[1].get("/v1/query").await.err().expect("withdrawn");
        assert!(e.to_string().contains("is not serving"), "{e}");
    }

    #[tokio::test]
    async fn an_in_process_call_is_given_up_after_its_timeout() {
        let served = InProcess::new();
        served.serve(axum::Router::new().route(
            "/v1/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        ));
        let shard = Shard::in_process("http://shard", served, Duration::from_millis(50));
        let e = shard.get("/v1/slow").await.err().expect("timed out");
        assert!(e.to_string().contains("did not answer in time"), "{e}");
    }
}

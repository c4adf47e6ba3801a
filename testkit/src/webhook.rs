//! A real HTTP server that records the webhooks it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 OK.
    Accept,
    /// This status, e.g. 500.
    Fail(u16),
    /// Never answers.
    Hang,
}

/// A real HTTP server on 127.0.0.1 that records every webhook body it gets.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    behaviour: Mutex<Behaviour>,
    /// Every request body, including the ones answered with an error.
    requests: Mutex<Vec<serde_json::Value>>,
}

impl WebhookReceiver {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind webhook receiver");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State { behaviour: Mutex::new(behaviour), requests: Mutex::new(Vec::new()) });
        let server_state = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let state = server_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        WebhookReceiver { addr, state, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/test-secret-token", self.addr)
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().expect("lock") = behaviour;
    }

    /// Every body received so far, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The texts of the bodies received so far.
    pub fn texts(&self) -> Vec<String> {
        self.requests().iter().filter_map(|b| b["text"].as_str().map(str::to_owned)).collect()
    }

    /// Waits until a body matches, or `within` passes.
    pub async fn wait_for(
        &self,
        within: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(found) = self.requests().into_iter().find(&matches) {
                return Some(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl WebhookReceiver {
    /// Waits up to 10 s for a message whose text contains every one of `parts`, and returns its text.
    pub async fn wait_for_text(&self, parts: &[&str]) -> String {
        let found = self
            .wait_for(Duration::from_secs(10), |body| {
                body["text"].as_str().is_some_and(|text| parts.iter().all(|part| text.contains(part)))
            })
            .await;
        match found {
            Some(body) => body["text"].as_str().unwrap_or_default().to_owned(),
            None => panic!("no webhook message containing {parts:?}; got {:?}", self.texts()),
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    state.requests.lock().expect("lock").push(json);
    let behaviour = *state.behaviour.lock().expect("lock");
    let status = match behaviour {
        Behaviour::Accept => StatusCode::OK,
        Behaviour::Fail(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    };
    Ok(Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok"))).expect("response"))
}

//! A small HTTP server on loopback for tests: serves byte bodies by path,
//! can fail on purpose (status codes, a connection that drops mid-body) and
//! counts requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// A status code with an empty body.
    Status(u16),
    /// Announces the whole length but sends only the first `sent` bytes,
    /// then drops the connection.
    Truncated { body: Vec<u8>, sent: usize },
}

/// A running server; stops when dropped.
pub struct FileServer {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    pub async fn start() -> FileServer {
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (r, h) = (r.clone(), h.clone());
            async move {
                let path = uri.path().to_string();
                *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                let reply = r.lock().unwrap().get(&path).cloned();
                match reply {
                    None => StatusCode::NOT_FOUND.into_response(),
                    Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap().into_response(),
                    Some(Reply::Body(b)) => b.into_response(),
                    Some(Reply::Truncated { body, sent }) => {
                        let len = body.len();
                        let first = body[..sent].to_vec();
                        let stream = futures::stream::iter(vec![
                            Ok::<_, std::io::Error>(first),
                            Err(std::io::Error::other("dropped on purpose")),
                        ]);
                        Response::builder().header(header::CONTENT_LENGTH, len).body(Body::from_stream(stream)).unwrap()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FileServer { base, routes, hits, task }
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

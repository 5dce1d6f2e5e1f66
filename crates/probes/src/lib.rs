//! `/healthz` and `/readyz`, served the same way by the controller and the node agent: healthy
//! while the process serves, ready once its [`Readiness`] says so (the controller's cache is
//! filled; the node agent verified its node). Other routes, like `/metrics`, can be merged in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Whether the process is ready, with an optional detail for `/readyz`'s body; cheap to
/// clone and share.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<Mutex<String>>);

impl Readiness {
    /// Marks the process ready (`true`) or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Marks the process ready or not, with `detail` (lines) after the status in `/readyz`'s
    /// body, e.g. which parts of the runtime this host cannot run and why.
    pub fn set_with(&self, ready: bool, detail: String) {
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = detail;
        self.set(ready);
    }

    fn detail(&self) -> String {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks the process ready.
    pub fn set_ready(&self) {
        self.set(true);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/healthz` (always 200 while serving) and `/readyz` (200 when ready, else 503 with
/// `not_ready`).
pub fn router(readiness: Readiness, not_ready: &'static str) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                let detail = readiness.detail();
                async move {
                    let (code, status) = if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, not_ready)
                    };
                    if detail.is_empty() {
                        (code, status.to_string())
                    } else {
                        (code, format!("{status}\n{detail}"))
                    }
                }
            }),
        )
}

/// Serves `router` on `address` until the task is dropped or aborted.
pub async fn serve(address: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn ready_follows_the_flag() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let readiness = Readiness::default();
        let app = router(readiness.clone(), "cache not synced");
        tokio::spawn(async move { axum::serve(listener, app).await });
        assert!(get(port, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(port, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("cache not synced"), "{not_ready}");
        readiness.set_ready();
        assert!(get(port, "/readyz").await.starts_with("HTTP/1.1 200"));
        readiness.set_with(
            true,
            "kata-qemu: NoVhostVsock: /dev/vhost-vsock is missing".into(),
        );
        let ready = get(port, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        assert!(
            ready.ends_with("ok\nkata-qemu: NoVhostVsock: /dev/vhost-vsock is missing"),
            "{ready}"
        );
    }
}

//! Serving a webhook router over [`crate::tls::TlsListener`] with limits that hold under
//! abuse (docs/security.md): the API server calls us with a 10 s timeout and, with
//! `failurePolicy: Fail`, a webhook that hangs blocks every write it is registered for.
//!
//! - **Headers** must arrive within [`Limits::header_read`] (slow-loris on the request line or
//!   headers: the connection is closed), and may take at most 64 KiB.
//! - **A request**, body included, is answered within [`Limits::request`], shorter than the API
//!   server's timeout (a body that trickles in gets 408, not a hung task).
//! - **At most [`Limits::max_in_flight`] requests** are worked on at once; more wait for a slot
//!   within their own deadline.
//! - **At most [`Limits::max_connections`] connections** are open, handshakes included.
//! - Bodies are capped by the routers (`DefaultBodyLimit`: 413 beyond it).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::tls::TlsListener;

/// The server's limits; [`Limits::default`] is what the webhooks run with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read: Duration,
    pub request: Duration,
    pub max_in_flight: usize,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(5),
            request: Duration::from_secs(8),
            max_in_flight: 32,
            max_connections: 256,
        }
    }
}

/// Most bytes of a request's line and headers.
const HEADER_MAX: usize = 64 * 1024;

/// `app` with the request deadline and the in-flight bound.
pub fn limited(app: Router, limits: Limits) -> Router {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight));
    let deadline = limits.request;
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let slots = slots.clone();
            async move {
                let work = async {
                    let _slot = slots.acquire_owned().await;
                    next.run(request).await
                };
                match tokio::time::timeout(deadline, work).await {
                    Ok(response) => response,
                    Err(_) => (
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request was not complete within {} s",
                            deadline.as_secs()
                        ),
                    )
                        .into_response(),
                }
            }
        },
    ))
}

/// Serves `app` on `listener` with `limits` until `shutdown`; connections in progress then get
/// a few seconds to finish.
pub async fn serve(
    mut listener: TlsListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = limited(app, limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(HEADER_MAX);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(
                    http.serve_connection(TokioIo::new(accepted.stream), service),
                );
                let (peer, permit) = (accepted.peer, accepted.permit);
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection.await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

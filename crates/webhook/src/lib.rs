//! Admission webhooks. In the seed: the OperatingSystemConfig webhook that provisions
//! Firecracker's devmapper pool on the nodes of pools whose Kata ContainerRuntime offers `fc`
//! ([`osc`]), served over TLS ([`tls`]) with certificates and registration handled the way
//! Gardener's extension webhooks handle theirs ([`certificates`], [`registration`]).
//! In the garden: the Shoot admission webhook ([`admission`]), certificate from files.

pub mod admission;
pub mod certificates;
pub mod osc;
pub mod registration;
pub mod serve;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tracing::{info, warn};

use crate::osc::{ClusterApi, Install};
use crate::tls::{Certificate, TlsListener};

/// Largest AdmissionReview we read (the API server's own request limit is 3 MiB).
const BODY_LIMIT: usize = 4 << 20;

/// Errors of the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registration(#[from] registration::Error),
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("webhook server on {address}: {source}")]
    Io {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How the webhook server runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub registration: registration::Config,
    /// Where the TLS server listens.
    pub bind: SocketAddr,
    /// How often certificates and the registration are checked (and renewed when due).
    pub renew_period: Duration,
    /// What the OSC webhook installs (the installation mode and the node images).
    pub install: Install,
}

/// The webhook routes (without TLS), for the server and for tests.
pub fn router(clusters: ClusterApi, install: Install) -> Router {
    Router::new()
        .route(
            osc::PATH,
            post(
                |State((clusters, install)): State<(ClusterApi, std::sync::Arc<Install>)>,
                 Json(body): Json<Value>| async move {
                    Json(osc::review(body, &clusters, &install).await)
                },
            ),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state((clusters, std::sync::Arc::new(install)))
}

/// Registers the webhook (certificates, configuration) and serves it until `shutdown`.
/// The first registration is retried until it succeeds: there is nothing to serve before.
pub async fn run(
    client: kube::Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let certificate = Certificate::default();
    let mut delay = Duration::from_secs(1);
    while let Err(e) = registration::reconcile(&client, &options.registration, &certificate).await {
        warn!(error = %e, "registering the webhook failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    let tcp = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| Error::Io {
            address: options.bind,
            source,
        })?;
    let address = tcp.local_addr().unwrap_or(options.bind);
    let limits = serve::Limits::default();
    let listener = TlsListener::new(tcp, certificate.server_config()?, limits.max_connections)
        .map_err(|source| Error::Io { address, source })?;
    info!(%address, "webhook server listening");

    let renewal = {
        let client = client.clone();
        let certificate = certificate.clone();
        let config = options.registration.clone();
        let period = options.renew_period;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match registration::reconcile(&client, &config, &certificate).await {
                    Ok(true) => info!("serving a renewed webhook certificate"),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, "renewing the webhook registration failed; retrying next period")
                    }
                }
            }
        })
    };
    let app = router(ClusterApi::new(client), options.install);
    serve::serve(listener, app, limits, shutdown).await;
    renewal.abort();
    Ok(())
}

//! The garden's Shoot admission webhook: `core.gardener.cloud/v1beta1` Shoots (create and
//! update) reviewed by [`sandbox_runtime::admission::review`], the code the seed controller
//! and the offline `validate` command use, with the Shoot's CloudProfile (or
//! NamespacedCloudProfile) read from the garden.
//!
//! Answers: rejections carry every finding as `field: message` (and as status causes);
//! warnings (e.g. unknown gVisor flags) reach the client as admission warnings. When the
//! CloudProfile cannot be read the webhook answers HTTP 500, so the configured
//! `failurePolicy` decides rather than a guess. Deletes are never reviewed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::api::{Api, DynamicObject};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{response::StatusCause, response::StatusDetails};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sandbox_api::shoot::{
    CLOUD_PROFILE_KIND, CloudProfileReference, NAMESPACED_CLOUD_PROFILE_KIND,
    NamespacedCloudProfile,
};
use sandbox_api::{CloudProfile, Shoot};
use sandbox_runtime::admission::{self, Rules, Verdict};
use serde_json::Value;
use tracing::{debug, info, warn};

/// The webhook's path on our server.
pub const PATH: &str = "/webhooks/validate-shoot";
/// The webhook's name in the ValidatingWebhookConfiguration.
pub const NAME: &str = "validate-shoot.runtime-sandbox.extensions.gardener.cloud";
/// Largest AdmissionReview we read (the API server's own request limit is 3 MiB).
const BODY_LIMIT: usize = 4 << 20;

/// Where CloudProfiles come from.
pub trait CloudProfiles: Send + Sync + 'static {
    /// The CloudProfile `reference` names for a Shoot in `namespace` (a
    /// NamespacedCloudProfile as the CloudProfile it resolves to), None if there is none, or
    /// why it cannot be read.
    fn get(
        &self,
        reference: &CloudProfileReference,
        namespace: &str,
    ) -> impl Future<Output = Result<Option<CloudProfile>, String>> + Send;
}

/// CloudProfiles read from the garden's API.
#[derive(Clone)]
pub struct GardenApi(pub kube::Client);

impl CloudProfiles for GardenApi {
    /// One GET, decoded straight into the fields admission reads (see
    /// [`sandbox_api::CloudProfile`]): a real CloudProfile's regions and provider data are
    /// skipped while parsing, not held.
    async fn get(
        &self,
        reference: &CloudProfileReference,
        namespace: &str,
    ) -> Result<Option<CloudProfile>, String> {
        let read = |e: kube::Error| format!("reading {} {}: {e}", reference.kind, reference.name);
        match reference.kind.as_str() {
            CLOUD_PROFILE_KIND => Api::<CloudProfile>::all(self.0.clone())
                .get_opt(&reference.name)
                .await
                .map_err(read),
            NAMESPACED_CLOUD_PROFILE_KIND => Ok(Api::<NamespacedCloudProfile>::namespaced(
                self.0.clone(),
                namespace,
            )
            .get_opt(&reference.name)
            .await
            .map_err(read)?
            .map(|namespaced| CloudProfile {
                metadata: namespaced.metadata,
                spec: namespaced.status.cloud_profile_spec,
            })),
            other => Err(format!("unknown CloudProfile kind {other:?}")),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Admission metrics: reviews by outcome (allowed, warned, denied, error) and their latency.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reviews: Family<OutcomeLabels, Counter>,
    durations: Histogram,
    certificate_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runtime_sandbox_admission");
        let reviews = Family::<OutcomeLabels, Counter>::default();
        let durations = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "reviews",
            "Shoot admission reviews by outcome",
            reviews.clone(),
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one Shoot admission review",
            durations.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the served certificate expires (Unix seconds; 0 until one is loaded). With failurePolicy Fail, an expired certificate blocks every Shoot write with a sandboxed runtime",
            certificate_expiry.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reviews,
            durations,
            certificate_expiry,
        }
    }
}

impl Metrics {
    fn observe(&self, outcome: &'static str, started: Instant) {
        self.reviews.get_or_create(&OutcomeLabels { outcome }).inc();
        self.durations.observe(started.elapsed().as_secs_f64());
    }

    /// Records the served certificate's expiry (Unix seconds).
    pub fn certificate_expires(&self, not_after: i64) {
        self.certificate_expiry.set(not_after);
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What the handler needs.
pub struct Context<P> {
    pub profiles: P,
    pub rules: Rules,
    pub metrics: Metrics,
}

/// The admission route (without TLS), for the server and for tests.
pub fn router<P: CloudProfiles>(context: Arc<Context<P>>) -> Router {
    Router::new()
        .route(PATH, post(handle::<P>))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(context)
}

/// `/metrics` in Prometheus' text format.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let text = metrics.encode();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    )
}

async fn handle<P: CloudProfiles>(
    State(context): State<Arc<Context<P>>>,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    match answer(&body, &context).await {
        Ok((review, outcome)) => {
            context.metrics.observe(outcome, started);
            axum::Json(review).into_response()
        }
        Err(e) => {
            context.metrics.observe("error", started);
            warn!(error = %e, "Shoot review not possible; the failure policy decides");
            (StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
        }
    }
}

/// Answers one AdmissionReview (bytes as the API server sends them): the review with the
/// response and the outcome label, or why no answer is possible (HTTP 500).
pub async fn answer<P: CloudProfiles>(
    body: &[u8],
    context: &Context<P>,
) -> Result<(Value, &'static str), String> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let mut response =
                AdmissionResponse::invalid(format!("undecodable AdmissionReview: {e}"));
            // Answered for the request's uid if it has one, so that the API server shows this
            // message instead of rejecting the answer for a uid that does not match.
            response.uid = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["request"]["uid"].as_str().map(String::from))
                .unwrap_or_default();
            return Ok((to_json(response.into_review()), "denied"));
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let response =
                AdmissionResponse::invalid(format!("AdmissionReview without request: {e}"));
            return Ok((to_json(response.into_review()), "denied"));
        }
    };
    let response = AdmissionResponse::from(&request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok((to_json(response.into_review()), "allowed"));
    }
    let shoot = match decode(request.object.as_ref()) {
        Ok(Some(shoot)) => shoot,
        Ok(None) => return Ok((to_json(response.into_review()), "allowed")),
        Err(e) => {
            let denied = response.deny(format!("the Shoot cannot be read: {e}"));
            return Ok((to_json(denied.into_review()), "denied"));
        }
    };
    // An old object we cannot read means: review everything, as on a create.
    let old = decode(request.old_object.as_ref()).ok().flatten();
    let verdict = verdict(&shoot, old.as_ref(), request.namespace.as_deref(), context).await?;
    let outcome = if !verdict.allowed() {
        "denied"
    } else if verdict.warnings.is_empty() {
        "allowed"
    } else {
        "warned"
    };
    debug!(shoot = %request.name, namespace = ?request.namespace, outcome, "Shoot reviewed");
    Ok((to_json(respond(response, &verdict).into_review()), outcome))
}

async fn verdict<P: CloudProfiles>(
    shoot: &Shoot,
    old: Option<&Shoot>,
    namespace: Option<&str>,
    context: &Context<P>,
) -> Result<Verdict, String> {
    if !admission::needs_review(shoot, old) {
        return Ok(Verdict::default());
    }
    let profile = match shoot.cloud_profile_reference() {
        Some(reference) => {
            context
                .profiles
                .get(&reference, namespace.unwrap_or_default())
                .await?
        }
        None => None,
    };
    Ok(admission::review(
        shoot,
        old,
        profile.as_ref(),
        &context.rules,
    ))
}

fn decode(object: Option<&DynamicObject>) -> Result<Option<Shoot>, serde_json::Error> {
    let Some(object) = object else {
        return Ok(None);
    };
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map(Some)
}

/// The response for `verdict`: warnings always; on rejection every finding in the message
/// and as a status cause with its field.
fn respond(response: AdmissionResponse, verdict: &Verdict) -> AdmissionResponse {
    let mut response = if verdict.allowed() {
        response
    } else {
        let mut denied = response.deny(verdict.message());
        denied.result.code = 422;
        denied.result.reason = "Invalid".into();
        denied.result.details = Some(StatusDetails {
            causes: verdict
                .errors
                .iter()
                .map(|f| StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: f.message.clone(),
                    field: f.field.clone(),
                })
                .collect(),
            name: String::new(),
            group: "core.gardener.cloud".into(),
            kind: "shoots".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        denied
    };
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.iter().map(ToString::to_string).collect());
    }
    response
}

fn to_json(review: AdmissionReview<DynamicObject>) -> Value {
    serde_json::to_value(review).unwrap_or(Value::Null)
}

/// Keeps `certificate` in step with the PEM files (as a mounted Secret changes them): loads
/// them now, then checks every `period`. A broken pair is logged and the previous one served.
pub async fn follow_files(
    certificate: crate::tls::Certificate,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    period: Duration,
    metrics: Metrics,
) {
    loop {
        let loaded = std::fs::read_to_string(&cert_file)
            .and_then(|cert| std::fs::read_to_string(&key_file).map(|key| (cert, key)));
        match loaded {
            Ok((cert, key)) => match certificate.set(&cert, &key) {
                Ok(true) => {
                    let not_after = certificate.not_after();
                    if let Some(not_after) = not_after {
                        metrics.certificate_expires(not_after);
                    }
                    info!(file = %cert_file.display(), not_after = not_after.unwrap_or_default(), "serving the certificate from its file")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(file = %cert_file.display(), error = %e, "certificate file unusable; serving the previous one")
                }
            },
            Err(e) => {
                warn!(file = %cert_file.display(), error = %e, "certificate files unreadable; serving the previous one")
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// How the admission server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where the TLS server listens.
    pub bind: std::net::SocketAddr,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// How often the certificate files are checked for changes.
    pub reload_period: Duration,
}

/// Serves the admission webhook over TLS until `shutdown`; `ready` turns true once a
/// certificate is loaded from the files.
pub async fn serve<P: CloudProfiles>(
    context: Arc<Context<P>>,
    options: ServeOptions,
    ready: sandbox_probes::Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    let certificate = crate::tls::Certificate::default();
    let follower = tokio::spawn(follow_files(
        certificate.clone(),
        options.cert_file.clone(),
        options.key_file.clone(),
        options.reload_period,
        context.metrics.clone(),
    ));
    let tcp = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|source| crate::Error::Io {
            address: options.bind,
            source,
        })?;
    let address = tcp.local_addr().unwrap_or(options.bind);
    let limits = crate::serve::Limits::default();
    let listener =
        crate::tls::TlsListener::new(tcp, certificate.server_config()?, limits.max_connections)
            .map_err(|source| crate::Error::Io { address, source })?;
    info!(%address, "Shoot admission webhook listening");
    let readiness = {
        let certificate = certificate.clone();
        tokio::spawn(async move {
            while !certificate.is_loaded() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ready.set_ready();
        })
    };
    crate::serve::serve(listener, router(context), limits, shutdown).await;
    follower.abort();
    readiness.abort();
    Ok(())
}

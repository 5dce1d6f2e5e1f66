//! A real control plane for tests: etcd and kube-apiserver on free loopback ports, with
//! private data and certificate folders, serving Gardener's real CRDs.
//!
//! ```no_run
//! # async fn t() {
//! let cp = sandbox_testenv::shared();
//! let _logs = cp.logs_on_panic();
//! let client = cp.client().await.unwrap();
//! let ns = cp.namespace(&client, "smoke").await.unwrap();
//! # }
//! ```
//!
//! One control plane may serve all tests of a test binary ([`shared`]); tests isolate
//! themselves by namespace. Each test builds its own [`kube::Client`], because a client is
//! bound to the Tokio runtime it was made on and every `#[tokio::test]` has its own.
//! The servers run under a small watchdog that stops them when its standard input closes,
//! which the kernel does when the test process ends however it ends, so no server outlives
//! its tests, also when a test panics or the process is killed.

pub mod audit;
#[cfg(feature = "images")]
pub mod chart;
#[cfg(feature = "images")]
pub mod cross;
#[cfg(feature = "nodes")]
pub mod dbus;
pub mod garden;
#[cfg(feature = "nodes")]
pub mod gardener_node;
pub mod gardenlet;
#[cfg(feature = "images")]
pub mod images;
#[cfg(feature = "nodes")]
pub mod node;
mod pki;
#[cfg(feature = "nodes")]
pub mod pods;
#[cfg(feature = "nodes")]
pub mod registry;
#[cfg(feature = "nodes")]
pub mod restarter;
mod server;
#[cfg(feature = "nodes")]
pub mod shoot;
pub mod shoot_builder;
#[cfg(feature = "nodes")]
pub mod stack;
mod tools;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use server::{Server, free_port, http_get, tls_handshake};
pub use tools::{ControlPlaneTools, Tool, helm, repo_root};

/// What can go wrong while bringing up or talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Tools(String),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not create test certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{server} did not become ready within {seconds}s; last log lines:\n{log_tail}")]
    NotReady {
        server: &'static str,
        seconds: u64,
        log_tail: String,
    },
    #[error("invalid CRD file {path}: {message}")]
    CrdFile { path: PathBuf, message: String },
    #[error("CRD {name} was not Established within {seconds}s")]
    CrdNotEstablished { name: String, seconds: u64 },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use shoot_builder::ShootBuilder;

/// How often [`eventually`] asks again.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The one polling helper of the tests: asks `f` every [`POLL`] until it gives a value, and
/// fails the test with `what` after `seconds`.
pub async fn eventually<T>(seconds: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_or(seconds, what, async || f().await.ok_or_else(String::new)).await
}

/// [`eventually`] for a check that says what it saw while the answer is not yet there
/// (`Err`), which the failure message then names.
pub async fn eventually_or<T>(
    seconds: u64,
    what: &str,
    mut f: impl AsyncFnMut() -> std::result::Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds} s: {what}{}{last}",
            if last.is_empty() { "" } else { "; last seen: " }
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A pin from `hack/versions.env` (e.g. `GARDENER_VERSION`), as written there.
pub fn pinned_version(name: &str) -> Result<String> {
    let path = repo_root().join("hack/versions.env");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| Error::Tools(format!("{name} is not pinned in {}", path.display())))
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CRD_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd + kube-apiserver with Gardener's CRDs installed.
///
/// Dropping it stops both servers and removes their folder.
pub struct ControlPlane {
    // Field order is drop order: the API server stops before etcd, etcd's watchdog
    // removes the folder last.
    apiserver: Server,
    etcd: Server,
    /// kube-apiserver's binary and flags, for [`ControlPlane::restart_apiserver`].
    apiserver_command: (PathBuf, Vec<String>),
    root: PathBuf,
    server_url: String,
    etcd_url: String,
    kubeconfig_path: PathBuf,
    kubeconfig: Kubeconfig,
    crds: Vec<String>,
    pki: pki::Pki,
    audit_log: Option<PathBuf>,
}

/// Choices for [`ControlPlane::start_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Write an audit log (`Metadata` level, one JSON line per completed request), so
    /// tests and benchmarks can count the requests each user made.
    pub audit_log: bool,
    /// Start without Gardener's extension CRDs (a garden's API server has none of them).
    pub skip_crds: bool,
    /// Serve as a shoot's API server for a real kubelet (see [`shoot`]).
    pub shoot: Option<ShootApiServer>,
}

/// How a shoot's API server differs from the seed's: kubelets and pods reach it.
#[derive(Clone, Debug)]
pub struct ShootApiServer {
    /// The address pods and the kubelet reach it at (the node's IP, not loopback: the
    /// `kubernetes` Service's endpoint). It listens on every address.
    pub address: std::net::IpAddr,
    /// The port (443, as in a real shoot: pods get `KUBERNETES_SERVICE_HOST` injected by
    /// gardener-resource-manager, and the Service's port 443).
    pub port: u16,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits until `/readyz` is ok, installs Gardener's
    /// CRDs and waits until they are Established. Builds the tools first if they are missing.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with an audit log (read it with [`audit::read`]).
    pub async fn start_audited() -> Result<Self> {
        Self::start_with(Options {
            audit_log: true,
            ..Options::default()
        })
        .await
    }

    /// [`ControlPlane::start`] with [`Options`].
    pub async fn start_with(options: Options) -> Result<Self> {
        let tools = ControlPlaneTools::locate()?;
        let root = tempfile::Builder::new()
            .prefix("sandbox-testenv-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?
            .keep();
        let etcd_client = server::free_port()?;
        let etcd_peer = server::free_port()?;
        let etcd = Server::start(
            "etcd",
            &tools.etcd,
            &[
                "--name=testenv".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=testenv=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &root,
            Some(&root),
        )?;

        let extra_sans: Vec<String> = options
            .shoot
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        let pki = pki::Pki::write(&root.join("pki"), &extra_sans)?;
        let secure_port = match &options.shoot {
            Some(shoot) => shoot.port,
            None => server::free_port()?,
        };
        // A shoot's API server: Node authorization and NodeRestriction for the kubelet, the
        // ServiceAccount admission (kube-controller-manager creates the accounts), the admin
        // certificate for talking to kubelets (logs), and every address.
        let (bind, advertise, mode, admission) = match &options.shoot {
            Some(shoot) => (
                "0.0.0.0".to_string(),
                shoot.address.to_string(),
                "Node,RBAC",
                vec![
                    "--enable-admission-plugins=NodeRestriction".to_string(),
                    format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
                    format!("--kubelet-client-key={}", pki.admin_key.display()),
                    "--kubelet-preferred-address-types=InternalIP".to_string(),
                ],
            ),
            None => (
                "127.0.0.1".to_string(),
                "127.0.0.1".to_string(),
                "RBAC",
                // No controller-manager creates default ServiceAccounts here.
                vec!["--disable-admission-plugins=ServiceAccount".to_string()],
            ),
        };
        let mut audit_args = Vec::new();
        let audit_log = if options.audit_log {
            let policy = root.join("audit-policy.yaml");
            std::fs::write(
                &policy,
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n",
            )
            .map_err(io_err(&policy))?;
            let log = root.join("audit.log");
            audit_args.push(format!("--audit-policy-file={}", policy.display()));
            audit_args.push(format!("--audit-log-path={}", log.display()));
            // Never rotated (the default rotates at 100 MB, which a benchmark of thousands of
            // objects passes; counting from a line number would then see nothing).
            audit_args.push("--audit-log-maxsize=1000000".into());
            audit_args.push("--audit-log-format=json".into());
            audit_args.push("--audit-log-mode=blocking".into());
            Some(log)
        } else {
            None
        };
        let apiserver_args: Vec<String> = [
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            format!("--bind-address={bind}"),
            format!("--advertise-address={advertise}"),
            format!("--secure-port={secure_port}"),
            format!("--cert-dir={}", root.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-issuer=https://127.0.0.1:{secure_port}"),
            // As Gardener's kube-apiservers: tokens for audience `gardener` (which
            // gardener-resource-manager's token requestor asks for) are accepted too.
            format!("--api-audiences=https://127.0.0.1:{secure_port},gardener"),
            format!(
                "--service-account-key-file={}",
                pki.service_account_public_key.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // The aggregation layer, as in every real cluster: requests to aggregated API
            // servers (the garden's gardener-apiserver) carry the user in headers, vouched
            // for by the front proxy's client certificate.
            format!(
                "--requestheader-client-ca-file={}",
                pki.front_proxy_ca_cert.display()
            ),
            format!("--requestheader-allowed-names={}", pki::FRONT_PROXY_USER),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!(
                "--proxy-client-cert-file={}",
                pki.front_proxy_client_cert.display()
            ),
            format!(
                "--proxy-client-key-file={}",
                pki.front_proxy_client_key.display()
            ),
            format!("--authorization-mode={mode}"),
            "--allow-privileged=true".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]
        .into_iter()
        .chain(admission)
        .chain(audit_args)
        .collect::<Vec<_>>();
        let apiserver = Server::start(
            "kube-apiserver",
            &tools.kube_apiserver,
            &apiserver_args,
            &root,
            None,
        )?;

        let server_url = format!("https://127.0.0.1:{secure_port}");
        let yaml = pki.kubeconfig_yaml(&server_url);
        let kubeconfig =
            Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let kubeconfig_path = root.join("kubeconfig");
        std::fs::write(&kubeconfig_path, yaml).map_err(io_err(&kubeconfig_path))?;

        let mut cp = ControlPlane {
            apiserver,
            etcd,
            apiserver_command: (tools.kube_apiserver.clone(), apiserver_args),
            root,
            server_url,
            etcd_url: format!("http://127.0.0.1:{etcd_client}"),
            kubeconfig_path,
            kubeconfig,
            crds: Vec::new(),
            pki,
            audit_log,
        };
        cp.wait_ready().await?;
        if !options.skip_crds {
            cp.crds = cp.install_crds(&tools.gardener_crds).await?;
        }
        Ok(cp)
    }

    /// A new client for this control plane, authenticated as a cluster admin
    /// (`system:masters`). Make one per Tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(self.kubeconfig.clone()).await
    }

    /// The kubeconfig of a cluster admin, for programs run by tests (and for people).
    pub fn kubeconfig(&self) -> &Kubeconfig {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The etcd's client URL, `http://127.0.0.1:<port>` (an aggregated API server may store
    /// its objects there too, under its own prefix).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The CA certificate (PEM file) that signs the API server's serving certificate and
    /// every client certificate it accepts.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// The service-account signing key (PEM file), for kube-controller-manager.
    pub fn service_account_key_path(&self) -> &Path {
        &self.pki.service_account_key
    }

    /// Writes a serving certificate for `name` (valid for `dns_names` and 127.0.0.1) signed
    /// by this control plane's CA; returns the certificate's and the key's paths.
    pub fn serving_cert(&self, name: &str, dns_names: &[&str]) -> Result<(PathBuf, PathBuf)> {
        self.pki.serving_cert(name, dns_names)
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// Path of the admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a token from the
    /// TokenRequest API (valid for an hour), bound to `bound` (e.g. a Pod, whose node the API
    /// server then records in the token) when given: what a pod's projected token is.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        bound: Option<k8s_openapi::api::authentication::v1::BoundObjectReference>,
    ) -> Result<Kubeconfig> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;

        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                bound_object_ref: bound,
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = Api::<ServiceAccount>::namespaced(self.client().await?, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| {
                Error::Tools(format!(
                    "the TokenRequest for {namespace}/{name} returned no token"
                ))
            })?;
        let mut kubeconfig = self.kubeconfig.clone();
        for auth in &mut kubeconfig.auth_infos {
            auth.auth_info = Some(kube::config::AuthInfo {
                token: Some(token.clone().into()),
                ..Default::default()
            });
        }
        Ok(kubeconfig)
    }

    /// Writes a kubeconfig for `user` in `groups` (client-certificate authentication) and
    /// returns its path; RBAC decides what the user may do.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let yaml = self
            .pki
            .user_kubeconfig_yaml(&self.server_url, user, groups)?;
        // KUBECONFIG is a ':'-separated list, and service account users contain ':'.
        let path = self
            .root
            .join(format!("kubeconfig-{}", user.replace([':', '/'], "_")));
        std::fs::write(&path, yaml).map_err(io_err(&path))?;
        Ok(path)
    }

    /// The audit log, when started with [`Options::audit_log`].
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// The folder holding the servers' data, certificates and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Names of the CRDs installed at start-up.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// Creates a namespace of its own for one test: `<prefix>-<pid>-<n>`.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(name)
    }

    /// Stops kube-apiserver and starts it again with the same flags on the same port (etcd
    /// keeps the data), and waits until it is ready: what a seed's API server rollout or crash
    /// looks like to a controller. The old log moves to `kube-apiserver.log.<n>`.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop();
        let log = self.apiserver.log_path().to_path_buf();
        let mut n = 1;
        let rotated = loop {
            let candidate = log.with_extension(format!("log.{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(&log, &rotated).map_err(io_err(&log))?;
        let (binary, args) = &self.apiserver_command;
        self.apiserver = Server::start("kube-apiserver", binary, args, &self.root, None)?;
        self.wait_ready().await
    }

    /// Freezes etcd (SIGSTOP): requests that need it hang until [`ControlPlane::resume_etcd`].
    pub fn pause_etcd(&self) -> Result<()> {
        self.etcd.signal("STOP")
    }

    /// Thaws etcd (SIGCONT).
    pub fn resume_etcd(&self) -> Result<()> {
        self.etcd.signal("CONT")
    }

    /// The last `lines` lines of each server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "--- etcd ({}) ---\n{}\n--- kube-apiserver ({}) ---\n{}",
            self.etcd.log_path().display(),
            self.etcd.log_tail(lines),
            self.apiserver.log_path().display(),
            self.apiserver.log_tail(lines),
        )
    }

    /// A guard that prints the servers' log tails if the test holding it panics.
    pub fn logs_on_panic(&self) -> LogsOnPanic<'_> {
        LogsOnPanic(self)
    }

    async fn wait_ready(&self) -> Result<()> {
        if readyz_ok(&self.client().await?, &self.apiserver, READY_TIMEOUT).await {
            return Ok(());
        }
        Err(Error::NotReady {
            server: "kube-apiserver",
            seconds: READY_TIMEOUT.as_secs(),
            log_tail: self.log_tails(30),
        })
    }

    async fn install_crds(&self, dir: &Path) -> Result<Vec<String>> {
        let client = self.client().await?;
        let api = Api::<CustomResourceDefinition>::all(client);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(io_err(path))?;
            let crd: CustomResourceDefinition =
                serde_saphyr::from_str(&text).map_err(|e| Error::CrdFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let created = api.create(&PostParams::default(), &crd).await?;
            names.push(created.metadata.name.unwrap_or_default());
        }
        let deadline = Instant::now() + CRD_TIMEOUT;
        for name in &names {
            loop {
                let crd = api.get(name).await?;
                if is_established(&crd) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::CrdNotEstablished {
                        name: name.clone(),
                        seconds: CRD_TIMEOUT.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(names)
    }
}

/// A client for `kubeconfig` (its current context). Make one per Tokio runtime.
pub async fn client_for(kubeconfig: Kubeconfig) -> Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Polls `/readyz` through `client` until it answers `ok` (true), or until `timeout` has
/// passed or `server` has exited (false).
pub(crate) async fn readyz_ok(client: &kube::Client, server: &Server, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("static request");
        match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return true,
            _ if Instant::now() > deadline || !server.is_running() => return false,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Whether a CRD's `Established` condition is `True`.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Servers whose log tails a failing test prints.
pub trait LogTails {
    /// The last `lines` lines of each server's log.
    fn log_tails(&self, lines: usize) -> String;
}

impl LogTails for ControlPlane {
    fn log_tails(&self, lines: usize) -> String {
        ControlPlane::log_tails(self, lines)
    }
}

/// Prints the servers' log tails when dropped during a panic.
pub struct LogsOnPanic<'a>(&'a dyn LogTails);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed; server logs:\n{}", self.0.log_tails(40));
        }
    }
}

/// The control plane shared by all tests of this test binary, started on first use.
///
/// Panics with the reason (including server log tails) if it cannot be started.
pub fn shared() -> &'static ControlPlane {
    static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| start_on_own_thread(ControlPlane::start));
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("cannot start the test control plane: {e}"),
    }
}

/// Runs `start` to completion on a thread and Tokio runtime of its own (callers are usually
/// inside a Tokio runtime already, whose clients must not outlive it): for the `shared()`
/// servers of a test binary.
pub(crate) fn start_on_own_thread<T, F>(start: fn() -> F) -> Result<T, String>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(start()).map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("start-up panicked".into()))
}

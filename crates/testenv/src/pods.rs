//! Running pods and containers over the CRI API, as the kubelet would, on a test node's
//! containerd ([`crate::node::TestNode`]). The tests' own CRI client: the node agent's product
//! client offers only what the agent needs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use sandbox_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use sandbox_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};

use crate::node::BUSYBOX_IMAGE;

/// A CRI client for tests on containerd's socket.
#[derive(Clone, Debug)]
pub struct Pods {
    channel: Channel,
}

impl Pods {
    /// A client for `socket`; connects lazily.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel =
            Endpoint::from_static("http://[::]:0")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .connect_with_connector_lazy(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }));
        Pods { channel }
    }

    fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }
}

/// What a container printed, and how it ended.
#[derive(Debug)]
pub struct RunResult {
    pub exit_code: i32,
    /// The container's output, without the CRI log prefixes.
    pub output: String,
}

static PODS: AtomicUsize = AtomicUsize::new(0);

fn sandbox_config(handler: &str, logs: &Path) -> Result<PodSandboxConfig, String> {
    let uid = format!(
        "{handler}-{}-{}",
        std::process::id(),
        PODS.fetch_add(1, Ordering::Relaxed)
    );
    let log_directory = logs.join(&uid);
    std::fs::create_dir_all(&log_directory).map_err(|e| e.to_string())?;
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("test-{uid}"),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_directory.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                // No CNI on a test node: host network, as hostNetwork pods use.
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    })
}

/// A pod's one container: its image, command (empty: the image's entrypoint), arguments and
/// bind mounts `(host path, container path, read-only)`.
#[derive(Clone, Debug, Default)]
pub struct Container {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub mounts: Vec<(PathBuf, String, bool)>,
}

impl Container {
    /// A busybox container running `command`.
    pub fn busybox(command: &[&str]) -> Self {
        Container {
            image: BUSYBOX_IMAGE.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Container::default()
        }
    }
}

/// Runs `command` in a busybox container of a new host-network pod with `handler` ("" is the
/// default runtime, runc), waits for it to exit, and removes the pod. `logs` is a folder for
/// the CRI log files.
pub async fn run_pod(
    cri: &Pods,
    handler: &str,
    command: &[&str],
    logs: &Path,
) -> Result<RunResult, String> {
    run_container(cri, handler, &Container::busybox(command), logs).await
}

/// Runs `container` in a new host-network pod with `handler`, waits for it to exit, and
/// removes the pod.
pub async fn run_container(
    cri: &Pods,
    handler: &str,
    container: &Container,
    logs: &Path,
) -> Result<RunResult, String> {
    let pod = start_pod_with(cri, handler, container, logs).await?;
    let result = wait_for_exit(cri, &pod.container, &pod.log_directory).await;
    remove_pod(cri, pod).await;
    result
}

async fn start_container(
    cri: &Pods,
    sandbox: &str,
    sandbox_config: &PodSandboxConfig,
    spec: &Container,
) -> Result<String, String> {
    let mut rt = cri.runtime_service();
    let container = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: spec.image.clone(),
                    ..ImageSpec::default()
                }),
                command: spec.command.clone(),
                args: spec.args.clone(),
                mounts: spec
                    .mounts
                    .iter()
                    .map(|(host, container, readonly)| Mount {
                        host_path: host.display().to_string(),
                        container_path: container.clone(),
                        readonly: *readonly,
                        ..Mount::default()
                    })
                    .collect(),
                log_path: "main.log".into(),
                ..ContainerConfig::default()
            }),
            sandbox_config: Some(sandbox_config.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {}", e.message()))?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {}", e.message()))?;
    Ok(container)
}

/// The container's state.
pub async fn container_state(cri: &Pods, container: &str) -> Result<(ContainerState, i32), String> {
    let status = cri
        .runtime_service()
        .container_status(ContainerStatusRequest {
            container_id: container.into(),
            verbose: false,
        })
        .await
        .map_err(|e| format!("ContainerStatus: {}", e.message()))?
        .into_inner()
        .status
        .ok_or("ContainerStatus without status")?;
    Ok((
        ContainerState::try_from(status.state).unwrap_or(ContainerState::ContainerUnknown),
        status.exit_code,
    ))
}

async fn wait_for_exit(
    cri: &Pods,
    container: &str,
    log_directory: &Path,
) -> Result<RunResult, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // containerd may be restarting (the node agent in the container restarts it): retry.
        let (state, exit_code) = match container_state(cri, container).await {
            Ok(state) => state,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if state == ContainerState::ContainerExited {
            let log = std::fs::read_to_string(log_directory.join("main.log")).unwrap_or_default();
            return Ok(RunResult {
                exit_code,
                output: strip_cri_log(&log),
            });
        }
        if Instant::now() > deadline {
            return Err(format!("container still {state:?} after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod with one long-running container.
pub struct RunningPod {
    pub sandbox: String,
    pub container: String,
    pub log_directory: PathBuf,
}

/// Starts a pod with `handler` whose container runs `command` until stopped.
pub async fn start_pod(
    cri: &Pods,
    handler: &str,
    command: &[&str],
    logs: &Path,
) -> Result<RunningPod, String> {
    start_pod_with(cri, handler, &Container::busybox(command), logs).await
}

/// Starts a pod with `handler` and `container`.
pub async fn start_pod_with(
    cri: &Pods,
    handler: &str,
    spec: &Container,
    logs: &Path,
) -> Result<RunningPod, String> {
    let sandbox_config = sandbox_config(handler, logs)?;
    let sandbox = cri
        .runtime_service()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox with handler {handler:?}: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let container = match start_container(cri, &sandbox, &sandbox_config, spec).await {
        Ok(container) => container,
        Err(e) => {
            let pod = RunningPod {
                sandbox,
                container: String::new(),
                log_directory: PathBuf::new(),
            };
            remove_pod(cri, pod).await;
            return Err(e);
        }
    };
    Ok(RunningPod {
        sandbox,
        container,
        log_directory: PathBuf::from(&sandbox_config.log_directory),
    })
}

/// Stops and removes a pod.
pub async fn remove_pod(cri: &Pods, pod: RunningPod) {
    let mut rt = cri.runtime_service();
    let _ = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.sandbox.clone(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.sandbox,
        })
        .await;
}

/// Stops and removes a pod, failing on any error of either call: the proof that its runtime
/// can still stop and delete it.
pub async fn stop_and_remove_pod(cri: &Pods, pod: RunningPod) -> Result<(), String> {
    let mut rt = cri.runtime_service();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.sandbox.clone(),
    })
    .await
    .map_err(|e| format!("StopPodSandbox: {}", e.message()))?;
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.sandbox,
    })
    .await
    .map_err(|e| format!("RemovePodSandbox: {}", e.message()))?;
    Ok(())
}

/// The host process id of a running pod sandbox (containerd's verbose status, `info.pid`):
/// for gVisor, the sandbox's own process.
pub async fn sandbox_pid(cri: &Pods, sandbox: &str) -> Result<u32, String> {
    let status = cri
        .runtime_service()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.into(),
            verbose: true,
        })
        .await
        .map_err(|e| format!("PodSandboxStatus: {}", e.message()))?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(
        status
            .info
            .get("info")
            .ok_or("the verbose status has no info")?,
    )
    .map_err(|e| e.to_string())?;
    info.get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("no pid in {info}"))
}

/// CRI log lines are `<time> <stream> <P|F> <text>`.
fn strip_cri_log(log: &str) -> String {
    log.lines()
        .map(|line| line.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

//! Asking containerd over the CRI API whether it answers and whether a runtime handler is
//! loaded: the proof the agent waits for before it announces a node ready.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sandbox_cri::v1::runtime_service_client::RuntimeServiceClient;
use sandbox_cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxState, PodSandboxStatusRequest, RuntimeHandler,
    StatusRequest, StatusResponse, VersionRequest,
};
use sandbox_runtime::node_plan::Handler;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// What went wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot reach containerd's CRI API at {socket}: {message}")]
    Unreachable { socket: PathBuf, message: String },
    #[error("containerd at {socket} did not answer within {seconds} s (last error: {last})")]
    Timeout {
        socket: PathBuf,
        seconds: u64,
        last: String,
    },
    #[error("containerd's CRI status is not readable: {0}")]
    Status(String),
}

/// A CRI client on containerd's socket.
#[derive(Clone, Debug)]
pub struct Cri {
    socket: PathBuf,
    channel: Channel,
}

/// What containerd reports about one runtime handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerState {
    /// Listed with the expected runtime type.
    Loaded,
    /// Listed, but with another runtime type (e.g. an outdated entry still loaded).
    WrongType { actual: String },
    /// Not listed.
    Missing,
}

impl Cri {
    /// A client for `socket`; connects lazily, so containerd need not run yet.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let socket = socket.into();
        let path = socket.clone();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let channel =
            Endpoint::from_static("http://[::]:0")
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(20))
                .connect_with_connector_lazy(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }));
        Cri { socket, channel }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> CriError {
        CriError::Unreachable {
            socket: self.socket.clone(),
            message: e.to_string(),
        }
    }

    /// containerd's version, as `<runtime name> <runtime version>`.
    pub async fn version(&self) -> Result<String, CriError> {
        let (name, version) = self.runtime_version().await?;
        Ok(format!("{name} {version}"))
    }

    /// The runtime's name and version, e.g. `("containerd", "v2.4.2")`.
    pub async fn runtime_version(&self) -> Result<(String, String), CriError> {
        let version = self
            .runtime_service()
            .version(VersionRequest::default())
            .await
            .map_err(|e| self.unreachable(e.message()))?
            .into_inner();
        Ok((version.runtime_name, version.runtime_version))
    }

    /// Waits until containerd answers a CRI `Version` call, trying every 200 ms.
    pub async fn wait_until_answering(&self, timeout: Duration) -> Result<String, CriError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.version().await {
                Ok(version) => return Ok(version),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(CriError::Timeout {
                        socket: self.socket.clone(),
                        seconds: timeout.as_secs(),
                        last: e.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Whether containerd has loaded handler `name` with `runtime_type`, from its verbose
    /// CRI status.
    pub async fn handler(&self, name: &str, runtime_type: &str) -> Result<HandlerState, CriError> {
        let status = self.status().await?;
        handler_state(&status.info, &status.runtime_handlers, name, runtime_type)
    }

    /// The CRI plugin's configuration as containerd runs with it (the verbose status's
    /// `info["config"]`): what `config.toml` and its imports amount to after containerd merged
    /// them.
    pub async fn config(&self) -> Result<serde_json::Value, CriError> {
        let status = self.status().await?;
        let config = status
            .info
            .get("config")
            .ok_or_else(|| CriError::Status("the verbose status has no \"config\" entry".into()))?;
        serde_json::from_str(config)
            .map_err(|e| CriError::Status(format!("\"config\" is not JSON: {e}")))
    }

    /// The state of each of `handlers`, in order, from one verbose CRI status.
    pub async fn handler_states(
        &self,
        handlers: &[Handler],
    ) -> Result<Vec<HandlerState>, CriError> {
        let status = self.status().await?;
        handlers
            .iter()
            .map(|h| {
                handler_state(
                    &status.info,
                    &status.runtime_handlers,
                    &h.name,
                    &h.runtime_type,
                )
            })
            .collect()
    }

    /// The pod sandboxes on this node that run with one of `handlers` and are not yet stopped.
    async fn ready_sandboxes(&self, handlers: &[&str]) -> Result<Vec<PodSandbox>, CriError> {
        Ok(self
            .runtime_service()
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(|e| self.unreachable(e.message()))?
            .into_inner()
            .items
            .into_iter()
            .filter(|s| handlers.contains(&s.runtime_handler.as_str()))
            .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
            .collect())
    }

    /// Names of the pod sandboxes on this node that run with one of `handlers` and are not
    /// yet stopped (`namespace/name`), sorted.
    pub async fn sandboxes_of(&self, handlers: &[&str]) -> Result<Vec<String>, CriError> {
        let mut names: Vec<String> = self
            .ready_sandboxes(handlers)
            .await?
            .into_iter()
            .map(sandbox_name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The running pod sandboxes of `handlers` (as [`Cri::sandboxes_of`]), each with the
    /// shim configuration file it was started with (`ConfigPath` of its handler then), from
    /// its verbose status; `None` when containerd does not say. A sandbox that ended between
    /// the list and its status is left out.
    pub async fn sandbox_config_paths(
        &self,
        handlers: &[&str],
    ) -> Result<Vec<(String, Option<String>)>, CriError> {
        let mut out = Vec::new();
        for sandbox in self.ready_sandboxes(handlers).await? {
            let status = match self
                .runtime_service()
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                    verbose: true,
                })
                .await
            {
                Ok(status) => status.into_inner(),
                Err(e) if e.code() == tonic::Code::NotFound => continue,
                Err(e) => return Err(self.unreachable(e.message())),
            };
            let name = sandbox_name(sandbox);
            out.push((name, sandbox_config_path(&status.info)));
        }
        out.sort();
        Ok(out)
    }

    async fn status(&self) -> Result<StatusResponse, CriError> {
        Ok(self
            .runtime_service()
            .status(StatusRequest { verbose: true })
            .await
            .map_err(|e| self.unreachable(e.message()))?
            .into_inner())
    }
}

/// Reads a handler's state from a verbose CRI status. containerd 1.6 to 2.x put their CRI
/// configuration as JSON under `info["config"]` with the runtimes at `containerd.runtimes`;
/// newer ones also list `runtime_handlers`, which alone do not tell the runtime type.
pub fn handler_state(
    info: &HashMap<String, String>,
    handlers: &[RuntimeHandler],
    name: &str,
    runtime_type: &str,
) -> Result<HandlerState, CriError> {
    let Some(config) = info.get("config") else {
        return Err(CriError::Status(
            "the verbose status has no \"config\" entry".into(),
        ));
    };
    let config: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| CriError::Status(format!("\"config\" is not JSON: {e}")))?;
    let Some(runtimes) = config.pointer("/containerd/runtimes") else {
        return Err(CriError::Status(
            "\"config\" has no containerd.runtimes".into(),
        ));
    };
    match runtimes.get(name) {
        Some(runtime) => {
            let actual = runtime
                .get("runtimeType")
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            if actual == runtime_type {
                Ok(HandlerState::Loaded)
            } else {
                Ok(HandlerState::WrongType {
                    actual: actual.to_string(),
                })
            }
        }
        None if handlers.iter().any(|h| h.name == name) => Ok(HandlerState::WrongType {
            actual: "(not in containerd.runtimes)".into(),
        }),
        None => Ok(HandlerState::Missing),
    }
}

/// `namespace/name` of a sandbox, or its id.
fn sandbox_name(sandbox: PodSandbox) -> String {
    match sandbox.metadata {
        Some(m) => format!("{}/{}", m.namespace, m.name),
        None => sandbox.id,
    }
}

/// The shim configuration path in a sandbox's verbose info: containerd's `info` entry (JSON)
/// has `runtimeOptions` with `config_path` (containerd 1.7 and 2.x alike).
fn sandbox_config_path(info: &HashMap<String, String>) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let options = info.get("runtimeOptions")?;
    ["config_path", "configPath", "ConfigPath"]
        .iter()
        .find_map(|key| options.get(key)?.as_str())
        .filter(|path| !path.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sandbox_s_shim_configuration_comes_from_its_verbose_info() {
        let info = |json: &str| HashMap::from([("info".to_string(), json.to_string())]);
        let path = "/opt/runtime-sandbox/example/v1/example.toml";
        for json in [
            format!(r#"{{"pid":7,"runtimeOptions":{{"type_url":"x","config_path":"{path}"}}}}"#),
            format!(r#"{{"runtimeOptions":{{"configPath":"{path}"}}}}"#),
        ] {
            assert_eq!(sandbox_config_path(&info(&json)).as_deref(), Some(path));
        }
        for json in [
            r#"{"runtimeOptions":{}}"#,
            r#"{"pid":7}"#,
            "not json",
            r#"{"runtimeOptions":{"config_path":""}}"#,
        ] {
            assert_eq!(sandbox_config_path(&info(json)), None, "{json}");
        }
        assert_eq!(sandbox_config_path(&HashMap::new()), None);
    }

    use super::*;

    fn info(config: &str) -> HashMap<String, String> {
        [("config".to_string(), config.to_string())].into()
    }

    #[test]
    fn reads_runtimes_from_the_verbose_config() {
        let i = info(
            r#"{"containerd":{"runtimes":{"runc":{"runtimeType":"io.containerd.runc.v2"},"sandboxed":{"runtimeType":"io.containerd.sandboxed.v1"}}}}"#,
        );
        let state = |name, ty| handler_state(&i, &[], name, ty).unwrap();
        assert_eq!(
            state("sandboxed", "io.containerd.sandboxed.v1"),
            HandlerState::Loaded
        );
        assert_eq!(
            state("runc", "io.containerd.sandboxed.v1"),
            HandlerState::WrongType {
                actual: "io.containerd.runc.v2".into()
            }
        );
        assert_eq!(state("other", "x"), HandlerState::Missing);
    }

    #[test]
    fn an_unreadable_status_is_an_error_not_a_missing_handler() {
        assert!(handler_state(&HashMap::new(), &[], "sandboxed", "t").is_err());
        assert!(handler_state(&info("not json"), &[], "sandboxed", "t").is_err());
        assert!(handler_state(&info("{}"), &[], "sandboxed", "t").is_err());
    }
}

//! The whole stack for a gVisor pool, as the end-to-end test and the shoot benchmark run it:
//! a seed control plane with the shoot's namespace and Cluster, the test shoot with one node
//! labelled for gVisor and our node agent's image in its containerd, and the controller (the
//! product binary) running with the chart's identity and RBAC.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::shoot::TestShoot;
use crate::{ControlPlane, Error, Result, chart, eventually, gardenlet, http_get};

/// The node label gardenlet puts on a gVisor pool's nodes.
const GVISOR_POOL_LABEL: (&str, &str) = ("containerruntime.worker.gardener.cloud/gvisor", "true");

/// How to start a [`Stack`].
pub struct StackOptions<'a> {
    /// The shoot's namespace in the seed, e.g. `shoot--e2e--sandbox`.
    pub namespace: &'a str,
    /// The Shoot the Cluster embeds (see [`crate::ShootBuilder`]).
    pub shoot: Value,
    /// The product binary (controller and node agent).
    pub binary: &'a Path,
    /// The node agent's image, `repository:tag`.
    pub image: &'a str,
    /// The controller's flags besides `--kubeconfig`; its `/readyz` must be on
    /// `127.0.0.1:<health>`.
    pub controller_args: Vec<String>,
    /// Its environment besides `IMAGEVECTOR_OVERWRITE`.
    pub controller_env: Vec<(&'a str, &'a str)>,
    pub health: u16,
    /// The controller's stderr on the test's (or dropped).
    pub show_logs: bool,
}

/// A running stack; stops the controller, the shoot and the seed when dropped, in that order.
pub struct Stack {
    controller: Child,
    pub shoot: TestShoot,
    pub admin: kube::Client,
    pub ns: String,
    pub seed: ControlPlane,
}

impl Stack {
    pub async fn start(options: StackOptions<'_>) -> Result<Stack> {
        let seed = ControlPlane::start().await?;
        let admin = seed.client().await?;
        let ns = seed.namespace(&admin, options.namespace).await?;
        gardenlet::create_cluster(&admin, &ns, options.shoot).await;
        let shoot = TestShoot::start(&seed, &ns, &[GVISOR_POOL_LABEL]).await?;
        let (repository, tag) = options
            .image
            .rsplit_once(':')
            .ok_or_else(|| Error::Tools(format!("{}: no tag", options.image)))?;
        let overwrite = shoot.provide_node_agent_image(repository, tag, options.binary)?;
        let (_rbac, kubeconfig) = chart::install_identity(&seed, &[]).await?;
        let kubeconfig_path = seed.root().join("kubeconfig-chart-serviceaccount");
        std::fs::write(
            &kubeconfig_path,
            serde_json::to_string(&kubeconfig).unwrap(),
        )
        .map_err(|e| Error::Tools(format!("{}: {e}", kubeconfig_path.display())))?;
        let controller = Command::new(options.binary)
            .args(&options.controller_args)
            .arg(format!("--kubeconfig={}", kubeconfig_path.display()))
            // The health check's node-reader token is for the test shoot's API server.
            .arg(format!(
                "--shoot-api-server={}",
                shoot.control_plane().server_url()
            ))
            .envs(options.controller_env.iter().copied())
            .env("IMAGEVECTOR_OVERWRITE", &overwrite)
            .stdout(Stdio::null())
            .stderr(if options.show_logs {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .map_err(|e| Error::Tools(format!("{}: {e}", options.binary.display())))?;
        let stack = Stack {
            controller,
            shoot,
            admin,
            ns,
            seed,
        };
        let health = options.health;
        eventually(60, "the controller's /readyz", async || {
            http_get(health, "/readyz").filter(|(c, _)| *c == 200)
        })
        .await;
        Ok(stack)
    }

    /// containerd restarts on the shoot's node so far.
    pub fn containerd_restarts(&self) -> usize {
        self.shoot
            .systemd()
            .calls()
            .iter()
            .filter(|(unit, _)| unit == "containerd.service")
            .count()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

//! containerd restarts for tests that run the node agent's code in-process: the test node's
//! own containerd, stopped and started, with the calls counted. One implementation of the
//! agent's `Restarter` for every such test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sandbox_node_agent::restart::{RestartError, Restarter};

use crate::node::TestNode;

/// When a restart leaves containerd down.
type Broken = Box<dyn Fn(&TestNode) -> bool + Send + Sync>;

/// Restarts the test node's containerd (stop, then start).
pub struct NodeRestarter {
    node: Arc<TestNode>,
    calls: AtomicUsize,
    stay_down: Mutex<Option<Broken>>,
}

impl NodeRestarter {
    pub fn new(node: Arc<TestNode>) -> Self {
        NodeRestarter {
            node,
            calls: AtomicUsize::new(0),
            stay_down: Mutex::new(None),
        }
    }

    /// Restarts asked for so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// From now on a restart leaves containerd stopped while `broken` holds for the node: it
    /// plays a containerd that fails to start with the new configuration, as a real unit would
    /// fail after systemd's `RestartUnit`.
    pub fn stay_down_while(&self, broken: impl Fn(&TestNode) -> bool + Send + Sync + 'static) {
        *self.stay_down.lock().unwrap() = Some(Box::new(broken));
    }
}

impl Restarter for NodeRestarter {
    fn restart(&self) -> BoxFuture<'_, Result<(), RestartError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let node = self.node.clone();
            let stay_down = self
                .stay_down
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|broken| broken(&node));
            tokio::task::spawn_blocking(move || {
                node.stop();
                if stay_down {
                    return Ok(());
                }
                node.start().map_err(|e| RestartError::Other(e.into()))
            })
            .await
            .map_err(|e| RestartError::Other(e.into()))?
        })
    }
}

/// A test node for running the node agent's code in-process: the node with containerd
/// started and the test images imported, its restarter, CRI clients and a work folder.
pub struct AgentNode {
    pub node: Arc<TestNode>,
    pub restarter: NodeRestarter,
    /// The agent's CRI client (what it verifies handlers and sandboxes with).
    pub cri: sandbox_node_agent::cri::Cri,
    /// The tests' CRI client for pods.
    pub pods: crate::pods::Pods,
    pub work: tempfile::TempDir,
}

impl AgentNode {
    /// A node of `flavor`; with `syslog`, containerd's shims get a syslog (Kata's needs one).
    pub fn start(flavor: crate::node::Flavor, syslog: bool) -> Self {
        let mut node = TestNode::new(flavor).unwrap();
        if syslog {
            node.enable_syslog().unwrap();
        }
        node.start().unwrap();
        node.import_images().unwrap();
        let node = Arc::new(node);
        AgentNode {
            restarter: NodeRestarter::new(node.clone()),
            cri: sandbox_node_agent::cri::Cri::new(node.socket()),
            pods: crate::pods::Pods::new(node.socket()),
            node,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// The agent's options for `plan` with the payload in `source`, on this node, giving
    /// containerd `restart_timeout` to answer after a restart.
    pub fn options(
        &self,
        source: &std::path::Path,
        plan: sandbox_runtime::node_plan::NodePlan,
        restart_timeout: std::time::Duration,
    ) -> sandbox_node_agent::agent::Options {
        let host = sandbox_node_agent::host::Host::new(self.node.root());
        let mut options = sandbox_node_agent::agent::Options::new(
            host,
            plan,
            crate::node::BINARY_PATH.to_string(),
        );
        options.source = source.to_path_buf();
        options.restart_timeout = restart_timeout;
        options
    }

    /// Restarts the agent asked for so far.
    pub fn restarts(&self) -> usize {
        self.restarter.calls()
    }

    /// A runc pod runs on the node.
    pub async fn runc_runs(&self) {
        let logs = self.node.path("/var/log/pods");
        let runc = crate::pods::run_pod(&self.pods, "", &["echo", "runc"], &logs)
            .await
            .unwrap();
        assert_eq!((runc.exit_code, runc.output.trim()), (0, "runc"));
    }
}

//! A real D-Bus system bus (`dbus-daemon`) on a socket of our choosing, and a stand-in for
//! systemd's manager on it that restarts a test's containerd.
//!
//! The bus, the wire protocol, name ownership, signal routing and match rules are the real
//! ones; only the peer that owns `org.freedesktop.systemd1` is ours. It answers
//! `RestartUnit`, `StartUnit` and `StopUnit` the way systemd does: at once with a job path,
//! and later, when the job has finished, with a `JobRemoved` signal carrying the result
//! (`done` or `failed`).
//!
//! For gardener-node-agent it also answers what that agent calls besides (go-systemd's
//! `Reload`, `EnableUnitFiles`, `DisableUnitFiles`, `ListUnits`, `ListUnitsByNames`): unit
//! files are only recorded (there is no systemd to load them), and the units it lists are
//! the ones it was told about, all active. What a unit *does* is simulated only for the
//! containerd unit: its restart restarts the test node's containerd.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

use crate::node::TestNode;
use crate::server::Server;
use crate::{Error, Result, io_err};

/// A `dbus-daemon` listening on one unix socket, stopped when dropped.
pub struct SystemBus {
    server: Server,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl SystemBus {
    /// Starts a bus on `socket` (its folder is created) that lets every local user own
    /// names and talk to every peer, like a permissive system bus.
    pub fn start(socket: &Path) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("temp dir"))?;
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let config = dir.path().join("bus.conf");
        let text = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        );
        std::fs::write(&config, text).map_err(io_err(&config))?;
        let server = Server::start(
            "dbus-daemon",
            Path::new("dbus-daemon"),
            &[
                "--nofork".into(),
                "--nopidfile".into(),
                format!("--config-file={}", config.display()),
            ],
            dir.path(),
            None,
        )?;
        // The socket file appears at bind(), before dbus-daemon listens on it: a client that
        // connects in between is refused. Ready is when a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if !server.is_running() || Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: "dbus-daemon",
                    seconds: 10,
                    log_tail: server.log_tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(SystemBus {
            server,
            socket: socket.to_path_buf(),
            _dir: dir,
        })
    }

    /// The bus socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bus address for clients.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// The daemon's last log lines.
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

/// What the stand-in does for a restart of its unit: `Ok` finishes the job with `done`,
/// `Err` with `failed`. Called on a blocking thread.
pub type RestartAction = Arc<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

struct Manager {
    unit: String,
    restart: RestartAction,
    calls: Arc<Mutex<Vec<(String, String)>>>,
    /// Every call, as `Method argument`, in order.
    log: Arc<Mutex<Vec<String>>>,
    /// Units besides `unit` that exist (their jobs succeed and do nothing).
    others: Vec<String>,
    next_job: AtomicU32,
}

/// A unit as `ListUnits` returns it: name, description, load, active and sub state,
/// followed unit, object path, job id, job type, job path.
type UnitStatus = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl Manager {
    fn record(&self, call: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    fn knows(&self, name: &str) -> bool {
        name == self.unit || self.others.iter().any(|o| o == name)
    }

    /// Queues a job for `name`: `act` runs it (for our unit), then `JobRemoved` is sent.
    fn job(
        &self,
        name: &str,
        connection: &zbus::Connection,
        act: Option<RestartAction>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        if !self.knows(name) {
            return Err(zbus::fdo::Error::Failed(format!("Unit {name} not found.")));
        }
        let id = self.next_job.fetch_add(1, Ordering::SeqCst);
        let job = OwnedObjectPath::try_from(format!("{MANAGER_PATH}/job/{id}"))
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let connection = connection.clone();
        let unit = name.to_string();
        let path = job.clone();
        // The job runs after the answer, as systemd's do.
        tokio::spawn(async move {
            let result = match act {
                None => "done",
                Some(act) => match tokio::task::spawn_blocking(move || act()).await {
                    Ok(Ok(())) => "done",
                    _ => "failed",
                },
            };
            if let Ok(emitter) = SignalEmitter::new(&connection, MANAGER_PATH) {
                let _ = Manager::job_removed(&emitter, id, path.as_ref(), &unit, result).await;
            }
        });
        Ok(job)
    }

    fn status(&self, name: &str) -> UnitStatus {
        let root = OwnedObjectPath::try_from("/").expect("a valid path");
        let unit = OwnedObjectPath::try_from(format!(
            "{MANAGER_PATH}/unit/{}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ))
        .unwrap_or_else(|_| root.clone());
        (
            name.to_string(),
            name.to_string(),
            "loaded".into(),
            "active".into(),
            "running".into(),
            String::new(),
            unit,
            0,
            String::new(),
            root,
        )
    }
}

const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn subscribe(&self) {}

    async fn restart_unit(
        &self,
        name: &str,
        mode: &str,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), mode.to_string()));
        self.record(format!("RestartUnit {name}"));
        let act = (name == self.unit).then(|| self.restart.clone());
        self.job(name, connection, act)
    }

    async fn start_unit(
        &self,
        name: &str,
        _mode: &str,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        // Our unit runs already (the test started it): starting it again is a no-op, as in
        // systemd.
        self.record(format!("StartUnit {name}"));
        self.job(name, connection, None)
    }

    async fn stop_unit(
        &self,
        name: &str,
        _mode: &str,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        self.record(format!("StopUnit {name}"));
        if name == self.unit {
            // Stopping containerd is not something the tests want simulated.
            return Err(zbus::fdo::Error::Failed(format!(
                "the test's stand-in does not stop {name}"
            )));
        }
        self.job(name, connection, None)
    }

    async fn reload(&self) {
        self.record("Reload".into());
    }

    async fn enable_unit_files(
        &self,
        files: Vec<String>,
        _runtime: bool,
        _force: bool,
    ) -> (bool, Vec<(String, String, String)>) {
        self.record(format!("EnableUnitFiles {}", files.join(",")));
        (true, Vec::new())
    }

    async fn disable_unit_files(
        &self,
        files: Vec<String>,
        _runtime: bool,
    ) -> Vec<(String, String, String)> {
        self.record(format!("DisableUnitFiles {}", files.join(",")));
        Vec::new()
    }

    async fn list_units(&self) -> Vec<UnitStatus> {
        self.record("ListUnits".into());
        std::iter::once(&self.unit)
            .chain(&self.others)
            .map(|u| self.status(u))
            .collect()
    }

    async fn list_units_by_names(&self, names: Vec<String>) -> Vec<UnitStatus> {
        self.record(format!("ListUnitsByNames {}", names.join(",")));
        names
            .iter()
            .filter(|n| self.knows(n))
            .map(|n| self.status(n))
            .collect()
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// Owns `org.freedesktop.systemd1` on a bus and serves its manager's `Subscribe`,
/// `RestartUnit` and `JobRemoved` for one unit. Must live on a Tokio runtime.
pub struct FakeSystemd {
    _connection: zbus::Connection,
    calls: Arc<Mutex<Vec<(String, String)>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeSystemd {
    /// Connects to `bus`, takes systemd's name and serves `unit`.
    pub async fn serve(bus: &SystemBus, unit: &str, restart: RestartAction) -> zbus::Result<Self> {
        Self::serve_with(bus, unit, restart, &[]).await
    }

    /// As [`FakeSystemd::serve`], with `others` as further units that exist: their jobs
    /// succeed without doing anything.
    pub async fn serve_with(
        bus: &SystemBus,
        unit: &str,
        restart: RestartAction,
        others: &[&str],
    ) -> zbus::Result<Self> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let manager = Manager {
            unit: unit.to_string(),
            restart,
            calls: calls.clone(),
            log: log.clone(),
            others: others.iter().map(|o| o.to_string()).collect(),
            next_job: AtomicU32::new(1),
        };
        let connection = zbus::connection::Builder::address(bus.address().as_str())?
            .name("org.freedesktop.systemd1")?
            .serve_at(MANAGER_PATH, manager)?
            .build()
            .await?;
        Ok(FakeSystemd {
            _connection: connection,
            calls,
            log,
        })
    }

    /// Serves `containerd.service`, whose restart job restarts `node`'s containerd.
    pub async fn for_node(bus: &SystemBus, node: Arc<TestNode>) -> zbus::Result<Self> {
        Self::serve(
            bus,
            "containerd.service",
            Arc::new(move || node.restart().map_err(|e| e.to_string())),
        )
        .await
    }

    /// Every `RestartUnit(name, mode)` received so far.
    pub fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every call received so far, as `Method argument` (e.g. `RestartUnit containerd.service`).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

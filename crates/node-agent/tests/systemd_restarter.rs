//! The systemd restarter against a real `dbus-daemon`, with a stand-in owning
//! `org.freedesktop.systemd1` that answers like systemd: a job path at once, the job's
//! result later as a `JobRemoved` signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sandbox_node_agent::restart::{Restarter, Systemd};
use sandbox_testenv::dbus::{FakeSystemd, SystemBus};

const UNIT: &str = "containerd.service";

fn start_bus() -> (tempfile::TempDir, SystemBus) {
    let dir = tempfile::tempdir().unwrap();
    let bus = SystemBus::start(&dir.path().join("run/dbus/system_bus_socket")).unwrap();
    (dir, bus)
}

#[tokio::test]
async fn restart_returns_only_after_systemds_job_is_done() {
    let (_dir, bus) = start_bus();
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let systemd = FakeSystemd::serve(
        &bus,
        UNIT,
        Arc::new(move || {
            std::thread::sleep(Duration::from_millis(700));
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }),
    )
    .await
    .unwrap();

    let restarter = Systemd::new(bus.socket(), UNIT);
    restarter.restart().await.unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "restart() returned before the job finished"
    );
    assert_eq!(systemd.calls(), [(UNIT.to_string(), "replace".to_string())]);

    // Twice in a row (new connection, new subscription, next job).
    restarter.restart().await.unwrap();
    assert_eq!(systemd.calls().len(), 2);
}

#[tokio::test]
async fn a_failed_job_a_missing_unit_and_a_hanging_job_are_errors() {
    let (_dir, bus) = start_bus();
    let _systemd = FakeSystemd::serve(
        &bus,
        UNIT,
        Arc::new(|| Err("containerd exited with status 1".into())),
    )
    .await
    .unwrap();
    let err = Systemd::new(bus.socket(), UNIT)
        .restart()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ended with result \"failed\""), "{err}");

    let err = Systemd::new(bus.socket(), "nope.service")
        .restart()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused to restart nope.service") && err.contains("not found"),
        "{err}"
    );

    let (_dir2, slow_bus) = start_bus();
    let _slow = FakeSystemd::serve(
        &slow_bus,
        UNIT,
        Arc::new(|| {
            std::thread::sleep(Duration::from_secs(3));
            Ok(())
        }),
    )
    .await
    .unwrap();
    let err = Systemd::new(slow_bus.socket(), UNIT)
        .with_job_timeout(Duration::from_secs(1))
        .restart()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not finish within 1s"), "{err}");
}

#[tokio::test]
async fn no_bus_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/dbus/system_bus_socket");
    let err = Systemd::new(&socket, UNIT)
        .restart()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect to the host's D-Bus")
            && err.contains(&*socket.to_string_lossy()),
        "{err}"
    );
}

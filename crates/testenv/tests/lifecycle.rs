//! No server outlives its tests: dropping a control plane stops it, and so does the death of
//! the process that started it, even by SIGKILL.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Waits up to `secs` until nothing listens on `port` and `root` is gone.
fn wait_stopped(port: u16, root: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let listening = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !listening && !root.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {secs}s: port {port} listening={listening}, {} exists={}",
            root.display(),
            root.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn dropping_the_control_plane_stops_the_servers_and_removes_their_folder() {
    let cp = sandbox_testenv::ControlPlane::start().await.unwrap();
    let port = port_of(cp.server_url());
    let root = cp.root().to_path_buf();
    let client = cp.client().await.unwrap();
    client.apiserver_version().await.unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    drop(cp);
    // Drop waits for the servers to exit, so this holds at once (the timeout is slack).
    wait_stopped(port, &root, 5);
}

#[test]
fn a_killed_process_leaves_no_server_behind() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-control-plane"))
        .arg("--hold")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut root) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("server: ") {
            url = Some(u.trim().to_string());
        }
        if let Some(r) = line.strip_prefix("data:   ") {
            root = Some(PathBuf::from(r.trim()));
        }
        if line.starts_with("Running.") {
            break;
        }
    }
    let port = port_of(&url.expect("demo printed the server URL"));
    let root = root.expect("demo printed its data folder");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "API server runs before the kill"
    );

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    // The watchdogs see their pipes close and stop the servers (TERM, KILL after 10 s).
    wait_stopped(port, &root, 30);
}

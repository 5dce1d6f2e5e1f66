//! A server process under a watchdog that stops it when the test process goes away.

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use std::sync::Mutex;

use crate::{Result, io_err};

/// The watchdog: runs the server with its output in a log file and stops it (TERM, KILL
/// after 10 s) as soon as the watchdog's standard input reaches end of file, which happens
/// when we drop our end of the pipe or when our process dies, however it dies. It exits
/// when the server exits, for whatever reason, after removing the folder it was told to
/// remove. Arguments reach the server as "$@", never through the shell's parser.
/// (Background jobs of a non-interactive shell read /dev/null, hence the copy on fd 3.)
const WATCHDOG: &str = r#"
log=$1; cleanup=$2; shift 2
exec 3<&0
"$@" >>"$log" 2>&1 </dev/null 3<&- &
pid=$!
echo "$pid" >"$log.pid"
{
  while read -r _ <&3; do :; done
  kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$pid" 2>/dev/null
} &
guard=$!
wait "$pid"
kill "$guard" 2>/dev/null
if [ -n "$cleanup" ]; then rm -rf -- "$cleanup"; fi
"#;

/// A running server; dropping it stops the server and waits until it has exited.
pub struct Server {
    name: &'static str,
    watchdog: Mutex<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Server {
    /// Starts `binary` with `args`, logging to `<dir>/<name>.log`. `cleanup` is removed
    /// once the server has exited.
    pub fn start(
        name: &'static str,
        binary: &Path,
        args: &[String],
        dir: &Path,
        cleanup: Option<&Path>,
    ) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&log, b"").map_err(io_err(&log))?;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(&log)
            .arg(cleanup.map(Path::as_os_str).unwrap_or_default())
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err(binary))?;
        let stdin = watchdog.stdin.take();
        Ok(Server {
            name,
            watchdog: Mutex::new(watchdog),
            stdin,
            log,
        })
    }

    /// The server's name, e.g. `etcd`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where the server logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server process's id (not the watchdog's), once the watchdog has started it.
    pub fn pid(&self) -> Option<u32> {
        let mut pid_file = self.log.clone().into_os_string();
        pid_file.push(".pid");
        for _ in 0..50 {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Some(pid);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` (a name `kill -s` knows, e.g. `STOP`, `CONT`) to the server process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.pid().ok_or_else(|| {
            io_err(&self.log)(std::io::Error::other("the server's pid file is missing"))
        })?;
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .map_err(io_err("kill"))?;
        if !status.success() {
            return Err(io_err("kill")(std::io::Error::other(format!(
                "kill -s {signal} {pid}: {status}"
            ))));
        }
        Ok(())
    }

    /// Stops the server and waits until it has exited (what dropping it does).
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = watchdog.wait();
    }

    /// Whether the server (its watchdog) still runs.
    pub fn is_running(&self) -> bool {
        let mut watchdog = self.watchdog.lock().unwrap_or_else(|e| e.into_inner());
        matches!(watchdog.try_wait(), Ok(None))
    }

    /// The last `lines` lines of the server's log (at most the last 64 KiB are read).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return String::from("(no log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port` (health and metrics endpoints in tests and
/// benchmarks): the status code and the body, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Whether a TLS handshake with 127.0.0.1:`port` for `server_name` (a DNS name or an IP)
/// succeeds for a client that trusts only `ca_pem`: what a webhook serves right now.
pub async fn tls_handshake(ca_pem: &str, port: u16, server_name: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(cert);
    }
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions() else {
        return false;
    };
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(name) = rustls::pki_types::ServerName::try_from(server_name.to_string()) else {
        return false;
    };
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    connector.connect(name, tcp).await.is_ok()
}

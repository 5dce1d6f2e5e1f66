//! A real OCI registry on this machine: the CNCF distribution registry (`registry serve`,
//! built from the Go module proxy by `hack/tools.sh ensure registry`), the reference
//! implementation of the OCI distribution spec that most registries (Harbor, GitLab's,
//! the Docker Hub) are built on or measured against. Plain HTTP on 127.0.0.1 with filesystem
//! storage in a temporary folder; nodes reach it through a `certs.d` mirror that
//! gardener-node-agent writes from the OSC's `criConfig.containerd.registries`, as for any
//! registry mirror on a Gardener node.
//!
//! Images are pushed from the archives the product builds (OCI layout in a tar) with the
//! distribution API itself (blob uploads, manifest puts), so nothing on the node has the
//! content before a pull fetches it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Error, Result, Server, Tool, free_port, io_err};

/// A running registry.
pub struct Registry {
    server: Server,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts the registry and waits until it answers `/v2/`.
    pub async fn start() -> Result<Self> {
        let binary = Tool::Registry.path()?.join("registry");
        let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
        let port = free_port()?;
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        std::fs::write(&config, text).map_err(io_err(&config))?;
        let server = Server::start(
            "registry",
            &binary,
            &["serve".into(), config.display().to_string()],
            dir.path(),
            None,
        )?;
        let registry = Registry {
            server,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _, _)) = registry.request("GET", "/v2/", &[], &[]).await {
                return Ok(registry);
            }
            if Instant::now() > deadline || !registry.server.is_running() {
                return Err(Error::NotReady {
                    server: "registry",
                    seconds: 30,
                    log_tail: registry.server.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log (its access log names every request).
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// How many blob downloads (`GET .../blobs/sha256:...`) of `repository` the registry
    /// served so far.
    pub fn blob_downloads(&self, repository: &str) -> usize {
        let needle = format!("\"GET /v2/{repository}/blobs/sha256:");
        self.server
            .log_tail(100_000)
            .lines()
            .filter(|l| l.contains(&needle) && l.contains("\" 200 "))
            .count()
    }

    /// Pushes the image archive `archive` (OCI layout in a tar, as our image builds write)
    /// as `repository:tag`; returns the digest of what the tag names (an index or a
    /// manifest).
    pub async fn push(&self, archive: &[u8], repository: &str, tag: &str) -> Result<String> {
        let files = tar_files(archive)?;
        let index: serde_json::Value = serde_json::from_slice(
            files
                .get("index.json")
                .ok_or_else(|| Error::Tools("the archive has no index.json".into()))?,
        )
        .map_err(|e| Error::Tools(format!("index.json: {e}")))?;
        let top = index["manifests"][0].clone();
        let blob = |digest: &str| {
            files
                .get(&format!(
                    "blobs/sha256/{}",
                    digest.trim_start_matches("sha256:")
                ))
                .ok_or_else(|| Error::Tools(format!("the archive lacks blob {digest}")))
        };
        // Manifests children first, each after its config and layers.
        let mut manifests = Vec::new();
        let mut pending = vec![top.clone()];
        while let Some(descriptor) = pending.pop() {
            let digest = descriptor["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let media_type = descriptor["mediaType"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let document: serde_json::Value = serde_json::from_slice(blob(&digest)?)
                .map_err(|e| Error::Tools(format!("{digest}: {e}")))?;
            if let Some(children) = document["manifests"].as_array() {
                pending.extend(children.iter().cloned());
            } else {
                let layers = document["layers"].as_array().cloned().unwrap_or_default();
                for d in std::iter::once(&document["config"]).chain(layers.iter()) {
                    let d = d["digest"].as_str().unwrap_or_default();
                    self.push_blob(repository, d, blob(d)?).await?;
                }
            }
            manifests.push((digest, media_type));
        }
        // Children before the index that names them; the top one under the tag.
        for (i, (digest, media_type)) in manifests.iter().enumerate().rev() {
            let reference = if i == 0 { tag } else { digest.as_str() };
            let path = format!("/v2/{repository}/manifests/{reference}");
            let (status, _, body) = self
                .request("PUT", &path, &[("Content-Type", media_type)], blob(digest)?)
                .await?;
            if status != 201 {
                return Err(Error::Tools(format!(
                    "PUT {path}: {status} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
        }
        Ok(top["digest"].as_str().unwrap_or_default().to_string())
    }

    async fn push_blob(&self, repository: &str, digest: &str, data: &[u8]) -> Result<()> {
        let head = format!("/v2/{repository}/blobs/{digest}");
        if self.request("HEAD", &head, &[], &[]).await?.0 == 200 {
            return Ok(());
        }
        // An upload session (POST), then the whole blob in one PUT with its digest.
        let start = format!("/v2/{repository}/blobs/uploads/");
        let (status, headers, body) = self.request("POST", &start, &[], &[]).await?;
        let location = match (status, headers.get("location")) {
            (202, Some(location)) => location.clone(),
            _ => {
                return Err(Error::Tools(format!(
                    "POST {start}: {status} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
        };
        // The location may be absolute; the request line needs the path and query.
        let location = match location.split_once("://") {
            Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let path = format!("{location}{separator}digest={digest}");
        let (status, _, body) = self
            .request(
                "PUT",
                &path,
                &[("Content-Type", "application/octet-stream")],
                data,
            )
            .await?;
        if status != 201 {
            return Err(Error::Tools(format!(
                "PUT {path}: {status} {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }

    /// One HTTP/1.1 request on a connection of its own: status, headers, body.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
        let host = self.host();
        let broken = |e: std::io::Error| Error::Tools(format!("{method} {path} on {host}: {e}"));
        let mut stream = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(broken)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.map_err(broken)?;
        stream.write_all(body).await.map_err(broken)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(broken)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| Error::Tools(format!("{method} {path}: no HTTP response")))?;
        let text = String::from_utf8_lossy(&response[..split]).into_owned();
        let mut lines = text.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Tools(format!("{method} {path}: bad status line")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers, response[split + 4..].to_vec()))
    }
}

/// The files of a tar archive by path.
fn tar_files(archive: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let bad = |e: std::io::Error| Error::Tools(format!("reading the image archive: {e}"));
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(archive).entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(bad)?;
        files.insert(path, data);
    }
    Ok(files)
}

/// The `certs.d` layout gardener-node-agent writes for a mirror, for messages.
pub fn hosts_file(root: &Path, upstream: &str) -> std::path::PathBuf {
    root.join(format!("etc/containerd/certs.d/{upstream}/hosts.toml"))
}

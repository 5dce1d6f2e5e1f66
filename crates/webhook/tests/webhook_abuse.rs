//! The garden's admission webhook under abuse, over real TLS on a local port
//! (docs/security.md, threat G2): a client that sends its headers byte by byte, one whose body
//! never completes, an oversized body, and more stalled connections than the server keeps
//! open. Each is cut off within the API server's 10 s webhook timeout, the metric tells when
//! the certificate expires, and an honest request is answered throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use sandbox_api::CloudProfile;
use sandbox_api::shoot::CloudProfileReference;
use sandbox_runtime::admission::Rules;
use sandbox_webhook::admission::{self, CloudProfiles, Context, Metrics, ServeOptions};
use sandbox_webhook::serve::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A garden without CloudProfiles: every request here is about transport, not content.
struct NoGarden;

impl CloudProfiles for NoGarden {
    async fn get(
        &self,
        _reference: &CloudProfileReference,
        _namespace: &str,
    ) -> Result<Option<CloudProfile>, String> {
        Ok(None)
    }
}

struct Webhook {
    port: u16,
    connector: TlsConnector,
    metrics: Metrics,
    not_after: i64,
    _dir: tempfile::TempDir,
}

async fn start() -> Webhook {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ca = sandbox_webhook::certificates::new_ca(now, None).unwrap();
    let server = sandbox_webhook::certificates::new_server(
        &ca,
        &["localhost".to_string()],
        &["127.0.0.1".parse().unwrap()],
        now,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &server.cert_pem).unwrap();
    std::fs::write(&key_file, &server.key_pem).unwrap();
    let port = sandbox_testenv::free_port().unwrap();
    let metrics = Metrics::default();
    let context = Arc::new(Context {
        profiles: NoGarden,
        rules: Rules::default(),
        metrics: metrics.clone(),
    });
    let readiness = sandbox_probes::Readiness::default();
    tokio::spawn(admission::serve(
        context,
        ServeOptions {
            bind: ([127, 0, 0, 1], port).into(),
            cert_file,
            key_file,
            reload_period: Duration::from_secs(60),
        },
        readiness.clone(),
        std::future::pending(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let webhook = Webhook {
        port,
        connector: TlsConnector::from(Arc::new(config)),
        metrics,
        not_after: server.not_after,
        _dir: dir,
    };
    sandbox_testenv::eventually(10, "the webhook serving", async || {
        webhook.connect().await.ok().map(|_| ())
    })
    .await;
    webhook
}

impl Webhook {
    async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        self.connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// An honest request: its status line, and how long the answer took.
    async fn honest(&self) -> (String, Duration) {
        let started = Instant::now();
        let mut tls = self.connect().await.unwrap();
        let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1"}}"#;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            admission::PATH,
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        (status_line(&mut tls).await, started.elapsed())
    }
}

/// The response's status line, or what happened to the connection instead.
async fn status_line(tls: &mut TlsStream<TcpStream>) -> String {
    let mut buf = vec![0u8; 4096];
    match tls.read(&mut buf).await {
        Ok(0) => "closed".into(),
        Ok(n) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_trickled_and_oversized_requests_are_cut_off_within_the_webhook_timeout() {
    let limits = Limits::default();
    let webhook = start().await;
    let (status, took) = webhook.honest().await;
    assert_eq!(status, "HTTP/1.1 200 OK", "an honest request");
    println!("honest request: {status} in {took:?}");

    // The certificate's expiry is a metric (for the alert in docs/security.md).
    let metrics = webhook.metrics.encode();
    let line = format!(
        "runtime_sandbox_admission_certificate_expiry_timestamp_seconds {}",
        webhook.not_after
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");

    // Slow-loris: a request line and headers that never end. The connection is closed once
    // the header deadline passes, well within the API server's 10 s.
    let started = Instant::now();
    let mut loris = webhook.connect().await.unwrap();
    loris
        .write_all(format!("POST {} HTTP/1.1\r\nHost: localhost\r\n", admission::PATH).as_bytes())
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if loris.write_all(b"X").await.is_err() {
                break;
            }
        }
        status_line(&mut loris).await
    })
    .await;
    let took = started.elapsed();
    println!("slow-loris headers: {ended:?} after {took:?}");
    assert!(
        took < limits.header_read + Duration::from_secs(3),
        "headers trickling in kept the connection for {took:?}"
    );

    // A body that never completes: 408 at the request deadline, not a task held forever.
    let started = Instant::now();
    let mut trickled = webhook.connect().await.unwrap();
    trickled
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"apiVersion\"",
                admission::PATH
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(12), status_line(&mut trickled))
        .await
        .expect("no answer to a trickled body within 12 s");
    let took = started.elapsed();
    println!("trickled body: {answer} after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // An oversized body: refused (413) before it is read into memory.
    let mut big = webhook.connect().await.unwrap();
    let size = 16 << 20;
    big.write_all(
        format!(
            "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n",
            admission::PATH
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..16 {
        if big.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), status_line(&mut big))
        .await
        .expect("no answer to an oversized body");
    println!("oversized body: {answer}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // More stalled connections than the server keeps open: an honest request made meanwhile
    // is still answered within the API server's timeout.
    let mut stalled = Vec::new();
    for _ in 0..limits.max_connections + 44 {
        if let Ok(tcp) = TcpStream::connect(("127.0.0.1", webhook.port)).await {
            stalled.push(tcp);
        }
    }
    let (status, took) = tokio::time::timeout(Duration::from_secs(10), webhook.honest())
        .await
        .expect("an honest request starved by stalled connections");
    println!(
        "honest request behind {} stalled connections: {status} in {took:?}",
        stalled.len()
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    drop(stalled);
}

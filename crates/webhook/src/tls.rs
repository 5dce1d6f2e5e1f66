//! TLS for the webhook server: a certificate that can be swapped while serving (renewals
//! take effect for the next handshake), and a listener that does handshakes concurrently
//! with a deadline and a bound on open connections, so a slow or silent client holds up
//! nobody else.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// How long a client has to complete its handshake (half the API server's webhook timeout).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the server certificate is not valid PEM: {0}")]
    Pem(String),
    #[error("the server key does not fit: {0}")]
    Key(#[from] rustls::Error),
}

/// The served certificate and key, with the PEM they came from (to tell changes apart) and
/// the leaf's notAfter (Unix seconds), when it parses.
type Loaded = Option<(String, Arc<CertifiedKey>, Option<i64>)>;

/// The certificate we serve; [`Certificate::set`] swaps it.
#[derive(Debug, Default, Clone)]
pub struct Certificate {
    current: Arc<RwLock<Loaded>>,
}

impl Certificate {
    /// Serves `cert_pem` (leaf first) with `key_pem` from the next handshake on; returns
    /// whether anything changed.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<bool, Error> {
        let fingerprint = format!("{cert_pem}{key_pem}");
        if self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(f, _, _)| *f == fingerprint)
        {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Pem(e.to_string()))?;
        if chain.is_empty() {
            return Err(Error::Pem("no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Pem(e.to_string()))?;
        let not_after = x509_parser::parse_x509_certificate(&chain[0])
            .ok()
            .map(|(_, leaf)| leaf.validity().not_after.timestamp());
        let provider = ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some((fingerprint, Arc::new(certified), not_after));
        Ok(true)
    }

    /// When the served certificate expires (Unix seconds), if one is loaded and parses.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|(_, _, not_after)| *not_after)
    }

    /// Whether a certificate is loaded (the webhook server is ready only then).
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A rustls server configuration that serves whatever is current at each handshake.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, key, _)| key.clone())
    }
}

/// A TLS connection handed to the server, with its place among the connections allowed.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub peer: SocketAddr,
    /// Held for as long as the connection is served.
    pub permit: OwnedSemaphorePermit,
}

/// A listener whose connections are TLS: accepted TCP connections are handshaken in their
/// own tasks (with a deadline) and handed over when done. At most `max_connections` are open
/// at once, handshakes included: beyond that, new connections wait in the kernel's backlog.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<Accepted>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(max_connections));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                // Answers are small and latency matters: no Nagle delay on them.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx
                                .send(Accepted {
                                    stream,
                                    peer,
                                    permit,
                                })
                                .await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }

    /// The next handshaken connection (waits forever once the accept loop ended).
    pub async fn accept(&mut self) -> Accepted {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

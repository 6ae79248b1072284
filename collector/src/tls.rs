//! TLS on both listeners (rustls, ring): the certificate and key are read
//! from PEM files at start and again on SIGHUP, so a renewed certificate
//! takes effect without a restart and without dropping the streams already
//! open (a reload that fails keeps the certificate in use and says why).
//! With TLS on, neither listener serves plain HTTP or h2c. Agents may also
//! be asked for a client certificate signed by `client_ca`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Where the collector's certificate, key and (optionally) the CA of agent
/// certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the collector's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, agents must present a certificate signed by this PEM CA.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its key.
fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("reading {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("reading {}: {e}", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("reading {}: {e}", path.display()))? {
        let cert = cert.map_err(|e| format!("reading {}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// Serves the certificate loaded last.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The listeners' TLS: one certificate, reloaded in place.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<Current>,
    /// For the HTTP listener (HTTP/2 or HTTP/1.1 by ALPN).
    pub http: TlsAcceptor,
    /// For the agents' gRPC listener (HTTP/2), asking for a client
    /// certificate when `client_ca` is set.
    pub grpc: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong.
    pub fn load(files: &TlsFiles) -> Result<Tls, String> {
        let current = Arc::new(Current(RwLock::new(Arc::new(load(files)?))));
        let config = |alpn: &[&[u8]], client_ca: Option<&Path>| -> Result<Arc<ServerConfig>, String> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let builder = match client_ca {
                Some(path) => builder.with_client_cert_verifier(
                    WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider())
                        .build()
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_cert_resolver(current.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Tls {
            http: TlsAcceptor::from(config(&[b"h2", b"http/1.1"], None)?),
            grpc: TlsAcceptor::from(config(&[b"h2"], files.client_ca.as_deref())?),
            files: files.clone(),
            current,
        })
    }

    /// Reads the certificate and key again; new connections get them,
    /// those already open keep theirs. On an error the certificate in use
    /// stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load(&self.files)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// Reloads on every SIGHUP until `shutdown` turns true.
    pub fn reload_on_sighup(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tls = self.clone();
        tokio::spawn(async move {
            let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: certificates are not reloaded");
                return;
            };
            loop {
                tokio::select! {
                    _ = hangups.recv() => match tls.reload() {
                        Ok(()) => tracing::info!(cert = %tls.files.cert.display(), "SIGHUP: certificate reloaded"),
                        Err(error) => tracing::error!(%error, "SIGHUP: certificate not reloaded, the one in use stays"),
                    },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
        });
    }
}

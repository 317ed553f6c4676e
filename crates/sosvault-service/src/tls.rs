//! TLS for both services (rustls with the ring provider, no system
//! OpenSSL, no system roots): the listener, its optional client
//! certificates, and the pinned client configuration.
//!
//! - [`ListenerFiles`] is the `[tls]` table of either service's
//!   configuration (`cert`, `key`, and the trustee's `client_ca`), one type
//!   for both, loaded by [`ListenerFiles::server_config`], which refuses a
//!   key file other users can read.
//! - [`server_config`] loads a certificate chain and key. With a *client
//!   CA* file, a client may present a certificate, which must then chain to
//!   one in that file (a CA, or the pinned client certificate itself);
//!   a client that presents none still connects (public reads need no
//!   certificate), and [`Peer::client`] says which it was.
//! - [`TlsListener`] accepts TLS connections for `axum::serve`, each
//!   handshake in its own task, bounded by a timeout, so a slow or silent
//!   client holds up nobody.
//! - [`Peer`] is the connection's `ConnectInfo`: its address and, over TLS,
//!   the SHA-256 of the verified client certificate. A plain TCP listener
//!   gives a [`Peer`] with no client.
//! - [`client_config`] trusts only the certificates of one PEM file (the
//!   peer's own certificate, or the CA that issued it: a pin, not the web's
//!   roots) and presents a client certificate if given one.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
//! std::fs::write(dir.path().join("cert.pem"), ck.cert.pem())?;
//! std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem())?;
//! let server = sosvault_service::tls::server_config(
//!     &dir.path().join("cert.pem"),
//!     &dir.path().join("key.pem"),
//!     None,
//! )?;
//! assert!(server.alpn_protocols.is_empty());
//! // A client that pins exactly this certificate:
//! let client = sosvault_service::tls::client_config(&dir.path().join("cert.pem"), None)?;
//! assert!(!client.client_auth_cert_resolver.has_certs());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// A listener's TLS files: the `[tls]` table of either service's
/// configuration. Both files or none: a table without `cert` or `key` is
/// refused when the configuration is read, and so is a setting it does not
/// know.
///
/// ```toml
/// [tls]
/// cert = "/etc/sosvault-trustee/tls/trustee.pem"
/// key = "/etc/sosvault-trustee/tls/trustee.key"
/// client_ca = "/etc/sosvault-trustee/tls/control-room.pem"
/// ```
///
/// Each file is also its own environment variable (`<PREFIX>TLS_CERT`,
/// `<PREFIX>TLS_KEY`, `<PREFIX>TLS_CLIENT_CA`; see
/// [`crate::config::apply_env`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600: a key other users can read is
    /// refused).
    pub key: PathBuf,
    /// The clients' certificates, or the CA that issues them (PEM): a client
    /// may present a certificate only if it chains to one in this file. The
    /// trustee needs it (its write endpoints answer only these); the
    /// dispatch service takes no client certificates and refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

impl ListenerFiles {
    /// A configuration's `paths` ([`crate::config::ConfigFile::paths_mut`])
    /// and the files of its `[tls]`, if it has one.
    pub fn and_paths<'a>(
        tls: &'a mut Option<Self>,
        (mut set, mut optional): crate::config::Paths<'a>,
    ) -> crate::config::Paths<'a> {
        if let Some(ListenerFiles {
            cert,
            key,
            client_ca,
        }) = tls
        {
            set.extend([cert, key]);
            optional.push(client_ca);
        }
        (set, optional)
    }

    /// The listener's configuration: the key file checked first (refused,
    /// saying what to run, if other users can read it), then both files
    /// loaded, with `client_ca` if set.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        crate::files::check_key_file(&self.key, "the TLS key")?;
        Ok(server_config(
            &self.cert,
            &self.key,
            self.client_ca.as_deref(),
        )?)
    }
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("TLS certificate file {0}: unreadable or holds no PEM certificate")]
    Certificate(String),
    /// The key file could not be read or holds no private key.
    #[error("TLS key file {0}: unreadable or not a PEM private key")]
    Key(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = || TlsError::Certificate(path.display().to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|_| bad())?
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|_| TlsError::Key(path.display().to_string()))
}

/// A root store holding exactly the certificates of `pem`.
fn roots(pem: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(pem)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("{}: {e}", pem.display())))?;
    }
    Ok(roots)
}

/// A server configuration from PEM files. With `client_ca`, a client may
/// present a certificate chaining to one in that file (checked in the
/// handshake: any other certificate fails it); presenting none is allowed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the certificates in `pinned`
/// (the peer's certificate or its CA), presenting `identity` (certificate
/// chain and key PEM files) when the server asks for one.
pub fn client_config(
    pinned: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(pinned)?);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string())),
    }
}

/// Who is on the other end of a connection (axum `ConnectInfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// SHA-256 of the client certificate the TLS handshake verified, if the
    /// client presented one.
    pub client: Option<[u8; 32]>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        Peer {
            addr: *stream.remote_addr(),
            client: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Sha256::digest(c.as_ref()).into()),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            client: None,
        }
    }
}

/// A listener that yields TLS streams (for `axum::serve`).
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(Self { rx, local })
    }
}

/// Accepts connections until the listener is dropped, each handshake in a
/// task of its own (a slow client holds up no other), and hands on those
/// that complete within [`HANDSHAKE_TIMEOUT`].
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        tokio::spawn(handshake(acceptor.clone(), stream, peer, tx.clone()));
    }
}

/// One client's TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`]; the
/// connection is handed on only if it completes.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let _ = tx.send((tls, peer)).await;
        }
        _ => tracing::debug!(%peer, "TLS handshake failed or timed out"),
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Whether `host` (a URL's host or a listen address's IP) is this machine's
/// loopback: the only place plain HTTP is allowed between the services.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_is_loopback() {
        for h in ["127.0.0.1", "localhost", "[::1]", "::1", "127.8.9.10"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1", "trustee.example", "0.0.0.0", "[::]", ""] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}

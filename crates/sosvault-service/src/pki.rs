//! A throwaway certificate authority for the demo and the tests: every
//! link of `sosvault demo` runs over TLS with certificates made at its
//! start, and the tests make theirs the same way.
//!
//! The CA's private key lives only in memory and dies with the [`Pki`]: a
//! demo's certificates can never be extended. A deployment uses its own
//! CAs (one per organisation) or self-signed certificates pinned one by one;
//! nothing here is meant for it.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let pki = sosvault_service::pki::Pki::new(dir.path(), "demo CA")?;
//! let server = pki.server("trustee-1", &["127.0.0.1", "localhost"])?;
//! let client = pki.client("control-room")?;
//! // The trustee pins the CA for its clients; the control room pins it for the trustee.
//! sosvault_service::tls::server_config(&server.cert, &server.key, Some(&pki.ca_file()))?;
//! sosvault_service::tls::client_config(&pki.ca_file(), Some((&client.cert, &client.key)))?;
//! # Ok(()) }
//! ```

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("making a certificate: {0}")]
    Make(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate and its key, as PEM files (the key mode 0600).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// A CA that writes the certificates it issues into one directory.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca", &"[redacted]")
            .finish()
    }
}

impl Pki {
    /// A fresh CA named `name`; its certificate is written to
    /// `dir/ca.pem` ([`Pki::ca_file`]), its key is kept in memory only.
    pub fn new(dir: &Path, name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let pki = Self {
            dir: dir.to_owned(),
            ca,
        };
        write(&pki.ca_file(), pki.ca.pem().as_bytes(), 0o644)?;
        Ok(pki)
    }

    /// The CA certificate (PEM): what a peer pins.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `hosts` (DNS names or IP addresses),
    /// written as `NAME.pem` and `NAME.key`.
    pub fn server(&self, name: &str, hosts: &[&str]) -> Result<Issued, PkiError> {
        self.issue(name, hosts, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate, written as `NAME.pem` and `NAME.key`.
    pub fn client(&self, name: &str) -> Result<Issued, PkiError> {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        name: &str,
        hosts: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, PkiError> {
        let sans: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        let issued = Issued {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        write(&issued.cert, cert.pem().as_bytes(), 0o644)?;
        write(&issued.key, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(issued)
    }
}

/// Writes a new file with `mode` (replacing an old one).
fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::Pki;

    #[test]
    fn keys_are_private_and_certificates_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "test CA").unwrap();
        let s = pki.server("trustee", &["127.0.0.1"]).unwrap();
        let c = pki.client("room").unwrap();
        for key in [&s.key, &c.key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert_eq!(crate::tls::load_certs(&s.cert).unwrap().len(), 1);
        assert!(crate::tls::load_key(&c.key).is_ok());
        assert!(format!("{pki:?}").contains("[redacted]"));
    }
}

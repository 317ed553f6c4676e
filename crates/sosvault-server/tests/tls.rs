//! The listener speaks TLS (rustls) when given a certificate and key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_answers_over_tls_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
    // A key others can read is refused at start.
    std::fs::set_permissions(
        dir.path().join("key.pem"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let mut cfg = sosvault_server::config::Config::new(dir.path().join("data"));
    sosvault_server::init_keys(&cfg).unwrap();
    cfg.listen = "127.0.0.1:0".into();
    cfg.tls_cert = Some(dir.path().join("cert.pem"));
    cfg.tls_key = Some(dir.path().join("key.pem"));
    for _ in 0..3 {
        cfg.trustees.push(sosvault_server::config::TrusteeConfig {
            url: "http://127.0.0.1:9".into(),
            public: sosvault::TrusteeKey::generate().public().to_hex(),
            name: String::new(),
            tls_ca: None,
        });
    }
    let config = dir.path().join("server.toml");
    std::fs::write(&config, cfg.to_toml().unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sosvault-server"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("listening line").unwrap();
        if let Some(a) = line.strip_prefix("listening on https://") {
            break a.trim().to_owned();
        }
    };

    // A client that trusts only this certificate.
    let mut roots = RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from(ck.cert.der().to_vec());
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    let _ = child.kill();
    let _ = child.wait();
}

//! TLS on the trustee's link (issue 12): a trustee serves TLS, and over TLS
//! its write endpoints answer only a pinned control room's client
//! certificate. A stranger (no certificate) gets `401` before its body is
//! read and leaves nothing in the log; a certificate from another CA does
//! not get through the handshake; plain HTTP is refused off loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::json;
use sosvault::ControlRoomKey;
use sosvault_service::pki::Pki;

fn client(pki: &Path, identity: Option<(&str, &str)>) -> reqwest::blocking::Client {
    // A client's certificate is in the directory of the CA that issued it.
    let (cert, key) = identity
        .map(|(ca, n)| {
            (
                pki.join(ca).join(format!("{n}.pem")),
                pki.join(ca).join(format!("{n}.key")),
            )
        })
        .unzip();
    let tls = sosvault_service::tls::client_config(
        &pki.join("trustee-ca").join("ca.pem"),
        cert.as_deref().zip(key.as_deref()),
    )
    .unwrap();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

#[test]
fn over_tls_only_a_pinned_control_room_may_write_and_a_stranger_leaves_nothing() {
    let t = TrusteeDir::init("tls");
    // Three authorities: the trustee's own, the control rooms', and a stranger's.
    let pki = t.dir().join("pki");
    let make = |name: &str| {
        std::fs::create_dir_all(pki.join(name)).unwrap();
        Pki::new(&pki.join(name), name).unwrap()
    };
    let (trustee_ca, rooms, strangers) =
        (make("trustee-ca"), make("control-rooms"), make("strangers"));
    let served = trustee_ca
        .server("trustee", &["127.0.0.1", "localhost"])
        .unwrap();
    rooms.client("kota-control-room").unwrap();
    strangers.client("stranger").unwrap();

    let cr = ControlRoomKey::generate();
    let mut running = t.start(
        &[&cr],
        &[
            (
                "SOSVAULT_TRUSTEE_TLS_CERT",
                served.cert.display().to_string(),
            ),
            ("SOSVAULT_TRUSTEE_TLS_KEY", served.key.display().to_string()),
            (
                "SOSVAULT_TRUSTEE_TLS_CLIENT_CA",
                rooms.ca_file().display().to_string(),
            ),
        ],
    );
    assert!(
        running.url.starts_with("https://127.0.0.1:"),
        "{}",
        running.url
    );

    // Anyone may read: no client certificate needed.
    running.http = client(&pki, None);
    assert_eq!(running.get("/v1/identity").0, 200);
    let size = running.log_size();

    // A stranger's writes: 401 before the body is read, nothing logged.
    for (path, field) in [
        ("/v1/shares", "delivery"),
        ("/v1/releases", "request"),
        ("/v1/shreds", "stop"),
        ("/v1/cancels", "cancel"),
        ("/v1/commits", "commit"),
        ("/v1/log/cosignatures", "note"),
    ] {
        let (status, body) = running.post(path, json!({ field: "AAAA" }));
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "client_certificate_required", "{path}");
    }
    // The witness's add-checkpoint is open to anyone (it checks the log's
    // own signature): a stranger's junk is judged, not turned away, and
    // leaves nothing either.
    let (status, body) = running.post_raw(
        "/v1/witness/add-checkpoint",
        "text/plain",
        b"old 0\n\nnot a note".to_vec(),
    );
    assert_eq!((status, code(&body)), (400, "malformed"), "{body}");
    assert_eq!(
        running.log_size(),
        size,
        "a stranger's junk left a log leaf"
    );

    // A certificate from another CA does not get through the handshake.
    let stranger = client(&pki, Some(("strangers", "stranger")));
    let err = stranger
        .post(format!("{}/v1/shreds", running.url))
        .json(&json!({ "stop": "AAAA" }))
        .send()
        .expect_err("a stranger's certificate was accepted");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // Nor does plain HTTP on the TLS port.
    let plain = running.url.replace("https://", "http://");
    assert!(
        reqwest::blocking::get(format!("{plain}/v1/identity")).is_err()
            || reqwest::blocking::get(format!("{plain}/v1/identity"))
                .is_ok_and(|r| !r.status().is_success())
    );

    // The pinned control room reaches the node: its junk is judged (and,
    // being a pinned caller's, logged as a refusal).
    running.http = client(&pki, Some(("control-rooms", "kota-control-room")));
    let (status, body) = running.shred(b"not a stop");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "malformed");
    assert_eq!(running.get("/v1/identity").0, 200);
}

#[test]
fn plain_http_off_loopback_is_refused_with_what_to_set() {
    let t = TrusteeDir::init("plain");
    let out = t
        .serve_command()
        .env("SOSVAULT_TRUSTEE_LISTEN", "0.0.0.0:0")
        .env_remove("SOSVAULT_TRUSTEE_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(stderr.contains("[tls]"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn a_tls_key_other_users_can_read_is_refused_before_anything_listens() {
    let t = TrusteeDir::init("loose");
    let dir = t.dir().join("pki");
    std::fs::create_dir(&dir).unwrap();
    let pki = Pki::new(&dir, "trustee-ca").unwrap();
    let served = pki.server("trustee", &["127.0.0.1", "localhost"]).unwrap();
    std::fs::set_permissions(
        &served.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    // The `[tls]` table of the config file, as an operator writes it.
    let mut config = std::fs::read_to_string(t.config()).unwrap();
    config.push_str(&format!(
        "\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        served.cert,
        served.key,
        pki.ca_file()
    ));
    std::fs::write(t.config(), config).unwrap();
    let out = t
        .serve_command()
        .env_remove("SOSVAULT_TRUSTEE_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = failed(&out);
    assert!(
        stderr.contains("the TLS key") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening on"),
        "refused before listening: {stderr}"
    );
}

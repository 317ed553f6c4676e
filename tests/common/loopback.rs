//! A fake service on loopback, for the tests that stand one up.
//!
//! Shared by the CLI's unit tests (`crates/sosvault-cli/src/main.rs`) and its
//! fake dispatch service (`crates/sosvault-cli/tests/manifest.rs`), which
//! include this file by path.

#![allow(dead_code, clippy::unwrap_used)]

/// Serves `app` in the background on a port of its own on 127.0.0.1: its
/// address.
pub async fn serve_on_loopback(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

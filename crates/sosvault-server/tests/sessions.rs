//! Operator sessions (issue 12): kept as the SHA-256 of their token in the
//! store, so a restart of the service does not log the control room out;
//! a live stream ends with its session, at logout and at the session's end,
//! instead of outliving it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_restart_and_logout_ends_it_and_its_live_stream() {
    let (mut c, op) = Cluster::with_operator(Options::default()).await;
    // The store holds the token's hash, never the token.
    let stored: Vec<Vec<u8>> = c
        .stored
        .rows("SELECT token_hash FROM operator_sessions", vec![])
        .iter()
        .map(|r| r[0].blob().unwrap())
        .collect();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], op.as_bytes());
    let files = c.store_bytes();
    assert!(
        !files.windows(op.len()).any(|w| w == op.as_bytes()),
        "the token is in the database"
    );

    // A crash and a restart: the control room stays logged in.
    c.server.kill();
    c.server.start();
    assert_eq!(
        c.session_status(&op).await,
        200,
        "the session survives the restart"
    );

    // Logout ends the session's live stream, at once.
    let mut events = c.operator_events(&op).await;
    assert_eq!(c.logout(&op).await, 204);
    ended(&mut events, 10).await;
    assert_eq!(c.session_status(&op).await, 401);
    // And stays ended after another restart.
    c.server.kill();
    c.server.start();
    assert_eq!(c.session_status(&op).await, 401);
    assert!(c.client.events("/v1/operator/events", &op).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_ends_when_its_session_does() {
    let (c, op, mut events) =
        Cluster::watched_with(Options::default(), |cfg| cfg.session_secs = 2).await;
    ended(&mut events, 15).await;
    assert_eq!(c.session_status(&op).await, 401);
}

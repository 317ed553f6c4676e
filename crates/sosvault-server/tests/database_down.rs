//! A dispatch node whose PostgreSQL goes away (issue 13): the real service
//! on a real cluster of the test's own, which the test stops under it and
//! starts again. While the database is gone a panic answers 503
//! `unavailable` with `Retry-After`, never a 202 the node could not keep,
//! and nothing of it is kept; the operators' reads answer the same. Once
//! the database is back the same process connects again by itself: the
//! phone's retry of the same signed panic is accepted and a team is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::unreachable::{Node, answers_unavailable, listed_incidents, panic_until_taken};
use common::*;
use sosvault_testkit::postgres::OwnCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_database_stops_answers_503_keeps_nothing_and_recovers_by_itself() {
    let pg = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap();
    let Node {
        c,
        op,
        mut team,
        panic,
    } = Node::start(pg.url().to_owned()).await;

    let pg = std::sync::Arc::new(pg);
    let stopping = pg.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();

    answers_unavailable(&c, &op, &panic).await;

    // The database comes back; the same process connects again by itself.
    let starting = pg.clone();
    tokio::task::spawn_blocking(move || starting.restart())
        .await
        .unwrap();
    let id = panic_until_taken(&c, &panic, 10).await;
    next_event(&mut team.events, 20, is("assigned", &id)).await;

    // Nothing of the refused try was kept: one incident, the accepted one.
    assert_eq!(listed_incidents(&c, &op).await, [id]);
    drop(c);
}

//! A dispatch node cut off from its PostgreSQL by the network (issue 13).
//! The database runs in a network namespace of the test's own, joined to
//! the service by a veth pair, and the test takes the link down under the
//! running service: no reset, no refusal, packets vanish, as across a cut
//! cable or a partition (a stopped database, `database_down.rs`, refuses at
//! once instead). The node notices within its TCP timeouts (an unanswered
//! write 10 s, a connection 5 s), answers 503 `unavailable`, never a 202 it
//! could not keep, and keeps nothing; once the link is back it connects
//! again by itself and the phone's retry is taken.
//!
//! Needs root and iproute2. Without them the test says why and passes,
//! unless `SOSVAULT_REQUIRE_NETNS` is set (`.ci/run` sets it): then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::unreachable::{
    Node, answers_unavailable, listed_incidents, panic_until_taken, send_panic,
};
use common::*;
use sosvault_testkit::netns::Link;
use sosvault_testkit::postgres::OwnCluster;

/// How long a node may take to answer a panic while its database is cut
/// off: its 10 s TCP user timeout, with room for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_database_answers_503_within_its_timeouts_and_recovers() {
    if let Some(why) = Link::unavailable() {
        assert!(
            std::env::var_os("SOSVAULT_REQUIRE_NETNS").is_none(),
            "SOSVAULT_REQUIRE_NETNS is set, but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    // Dropped in reverse: the cluster (stopped inside the namespace) before
    // the link.
    let link = std::sync::Arc::new(Link::new().unwrap());
    let inside = link.clone();
    let pg = tokio::task::spawn_blocking(move || OwnCluster::start_behind(&inside))
        .await
        .unwrap();
    let url = pg.url().to_owned();
    assert!(url.contains(&link.far().to_string()), "across the link");
    let Node {
        c,
        op,
        mut team,
        panic,
    } = Node::start(url).await;
    assert!(listed_incidents(&c, &op).await.is_empty());

    link.cut().unwrap();
    // The first panic after the cut waits on a socket nobody answers, until
    // the TCP user timeout ends it: then 503, never 202, and never a hang.
    let sent = Instant::now();
    let (status, retry_after, said) =
        tokio::time::timeout(2 * NOTICED_WITHIN, send_panic(&c, &panic))
            .await
            .expect("no answer: the node hangs on a database it cannot reach");
    assert_eq!((status, retry_after), (503, Some(1)), "{said}");
    assert_eq!(said["error"], "unavailable", "{said}");
    assert!(
        sent.elapsed() < NOTICED_WITHIN,
        "noticed after {:?}",
        sent.elapsed()
    );
    // While it stays cut, every try to connect again gives up within its
    // connect timeout: the panic and the operators' reads are 503 as well.
    tokio::time::timeout(2 * NOTICED_WITHIN, answers_unavailable(&c, &op, &panic))
        .await
        .expect("the node hangs while the link stays cut");

    link.heal().unwrap();
    let id = panic_until_taken(&c, &panic, 30).await;
    next_event(&mut team.events, 20, is("assigned", &id)).await;
    // Nothing of the refused tries was kept: one incident, the accepted one.
    assert_eq!(listed_incidents(&c, &op).await, [id]);
    drop(c);
    drop(pg);
}

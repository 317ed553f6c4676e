//! Two dispatch nodes on one PostgreSQL database (issue 13): an open
//! incident is run by the node holding its lease, and outlives that node.
//! Node A stores a panic it can send no team to (the only team's live
//! stream is on node B). A is killed with SIGKILL, as a crash: B takes the
//! incident over once A's lease runs out and sends the team. Or A is
//! frozen (SIGSTOP) past its lease: B takes over the same way, and A,
//! woken, lets the incident go. Real processes, a real database of the
//! test's own on the test server: on either run of the suite, so
//! `.ci/run` runs it once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::stored::{P, Stored};
use common::*;
use sosvault_server::client::Client;
use sosvault_testkit::postgres::TestDatabase;

/// A lease's length (`engine/lease.rs`), and the round that notices it ran
/// out, with room for a slow machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5 + 1 + 3);

/// Two nodes on a database of the test's own, the first named `node-a`
/// with a team registered there whose live stream is open on `node-b`
/// (so only B can send it), and a student's panic stored by A: the
/// cluster (A), B, the team's stream on B, A's operator, the incident and
/// the database.
struct TwoNodes {
    a: Cluster,
    b: ServerProc,
    on_b: Client,
    team: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    op: String,
    id: String,
    stored: Stored,
}

impl TwoNodes {
    async fn start() -> Self {
        let db = tokio::task::spawn_blocking(TestDatabase::create)
            .await
            .unwrap();
        let url = db.url().to_owned();
        let a = Cluster::start_with(Options::default(), move |cfg| {
            cfg.database_url = Some(sosvault_server::config::DatabaseUrl::new(&url));
            cfg.node_id = Some("node-a".into());
        })
        .await;
        let op = a.operator().await;
        let (_, token) = a
            .client
            .create_unit(&op, "PCR Talwandi", "police", 25.1440, 75.8370)
            .await
            .unwrap();
        let b = a.second_node("node-b");
        let on_b = Client::new(&b.url());
        let team = on_b.events("/v1/unit/events", &token).await.unwrap();
        let mut device = a.student("Nidhi Sharma").await;
        let id = a
            .panic_at_talwandi(&mut device, sosvault::Category::Police)
            .await;
        let mut nodes = Self {
            a,
            b,
            on_b,
            team,
            op,
            id,
            stored: Stored::Postgres(db),
        };
        assert_eq!(nodes.holder().as_deref(), Some("node-a"));
        // Nothing was sent: A cannot tell the team, B does not run it.
        assert!(nodes.team.try_recv().is_err());
        nodes
    }

    /// The node whose name the incident's lease holds.
    fn holder(&self) -> Option<String> {
        let rows = self.stored.rows(
            "SELECT node FROM incident_leases WHERE incident_id = ?1",
            vec![P::Blob(hex::decode(&self.id).unwrap())],
        );
        rows.first().and_then(|r| r[0].text())
    }

    /// Waits for B to send the team; how long it took from `since`.
    async fn b_sends_the_team(&mut self, since: Instant) -> Duration {
        next_event(&mut self.team, 20, is("assigned", &self.id)).await;
        let took = since.elapsed();
        assert!(
            took <= TAKEOVER_BOUND,
            "B sent the team {took:?} after A stopped (bound {TAKEOVER_BOUND:?})"
        );
        assert_eq!(self.holder().as_deref(), Some("node-b"));
        took
    }

    /// The team was sent once, whichever node sent it.
    fn sent_once(&self) {
        let rows = self.stored.rows(
            "SELECT status FROM assignments WHERE incident_id = ?1",
            vec![P::Blob(hex::decode(&self.id).unwrap())],
        );
        assert_eq!(rows.len(), 1, "{rows:?}");
    }

    /// The nodes stop before their database goes.
    fn stop(self) {
        let Self {
            a, b, team, stored, ..
        } = self;
        drop((team, b, a));
        drop(stored);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_outlives_the_node_that_took_its_panic() {
    let mut n = TwoNodes::start().await;

    // A dies; nothing tells B.
    n.a.server.kill();
    let took = n.b_sends_the_team(Instant::now()).await;
    n.sent_once();

    // B's timeline says why B runs it.
    let op_b = n.on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let incident = n
        .on_b
        .get(&format!("/v1/operator/incidents/{}", n.id), Some(&op_b))
        .await
        .unwrap();
    let timeline = incident["timeline"].to_string();
    assert!(
        timeline.contains("taken over from node node-a"),
        "{timeline}"
    );
    eprintln!("B took over and sent the team {took:?} after A died");
    n.stop();
}

/// A node frozen past its lease (SIGSTOP: a stalled machine, a paused
/// VM) comes back to find another node running its incident: it lets the
/// incident go at its next round, and the team is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_lets_the_incident_go_when_it_wakes() {
    let mut n = TwoNodes::start().await;

    n.a.server.signal("STOP");
    let took = n.b_sends_the_team(Instant::now()).await;
    n.a.server.signal("CONT");

    // A notices at its next round (a second), counts it, and runs it no
    // more: the lease stays B's, the team sent once.
    let lost = || async {
        let text =
            n.a.client
                .get_text_auth("/metrics", Some(&n.op))
                .await
                .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("sosvault_leases_lost_total "))
            .map(|v| v.trim().to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while lost().await.as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "A never let the incident go");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n.holder().as_deref(), Some("node-b"));
    n.sent_once();
    eprintln!("B took over {took:?} after A froze; A let the incident go on waking");
    n.stop();
}

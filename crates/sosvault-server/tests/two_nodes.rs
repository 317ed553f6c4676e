//! Two dispatch nodes on one PostgreSQL database (issue 13): an open
//! incident is run by the node holding its lease, and outlives that node;
//! so does a stop still on its way to a trustee.
//! Node A stores a panic it can send no team to (no team's live stream is
//! open yet). A is killed with SIGKILL, as a crash, and the team connects
//! to node B: B takes the incident over once A's lease runs out and sends
//! the team. Or A is
//! frozen (SIGSTOP) past its lease: B takes over the same way, and A,
//! woken, lets the incident go. And a stop node A took while a trustee did
//! not answer is carried to that trustee by B once A is dead. Real
//! processes, a real database of the
//! test's own on the test server: on either run of the suite, so
//! `.ci/run` runs it once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::stored::{P, Stored, V};
use common::*;
use sosvault_server::client::Client;
use sosvault_testkit::postgres::TestDatabase;

/// A lease's length (`engine/lease.rs`), and the round that notices it ran
/// out, with room for a slow machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(5 + 1 + 3);

/// Two nodes on a database of the test's own, the first named `node-a`
/// with a team registered there and a student's panic stored by A, which
/// A can send no team to: the team has no live stream open anywhere yet.
/// The cluster (A), B, A's operator, the team's token, the incident and the
/// database.
// The fields drop in the order they are declared: the clients, node B,
// node A (and its trustees), and the database last, so no node outlives it.
struct TwoNodes {
    on_b: Client,
    op: String,
    token: String,
    id: String,
    /// Node B, running until the test ends.
    _b: ServerProc,
    a: Cluster,
    stored: Stored,
}

/// Registers the police team of Talwandi through `node`: its id and token.
async fn talwandi_team(node: &Client, op: &str) -> (String, String) {
    node.create_unit(op, "PCR Talwandi", "police", 25.1440, 75.8370)
        .await
        .unwrap()
}

impl TwoNodes {
    async fn start() -> Self {
        let stored = database().await;
        let a = node_a(&stored).await;
        let op = a.operator().await;
        let (_, token) = talwandi_team(&a.client, &op).await;
        let (b, on_b) = node_b(&a);
        let mut device = a.student("Nidhi Sharma").await;
        let id = a
            .panic_at_talwandi(&mut device, sosvault::Category::Police)
            .await;
        let nodes = Self {
            a,
            _b: b,
            on_b,
            token,
            op,
            id,
            stored,
        };
        assert_eq!(nodes.holder().as_deref(), Some("node-a"));
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

    /// The team opens its live stream on B (A is dead or frozen by now, so
    /// only B can send it); waits for B to send it, and says how long that
    /// took from `since`.
    async fn b_sends_the_team(&mut self, since: Instant) -> Duration {
        let mut team = self
            .on_b
            .events("/v1/unit/events", &self.token)
            .await
            .unwrap();
        next_event(&mut team, 20, is("assigned", &self.id)).await;
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
    drop(n);
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
    drop(n);
}

/// Two nodes on a database of the test's own, trustee 3 behind a proxy
/// answering faults to shreds, and a student's stop node A took: pending
/// at trustee 3, carried by A. Forwards count as stuck after a second and
/// are asked again within a second.
// Dropped in the order declared, as `TwoNodes` is.
struct StopOnA {
    ops_b: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    on_b: Client,
    op_b: String,
    student: sosvault::StudentId,
    stop: sosvault::Signed<sosvault::Stop>,
    /// Node B, running until the test ends.
    _b: ServerProc,
    a: Cluster,
    proxy: common::faulty::FaultyProxy,
    stored: Stored,
}

impl StopOnA {
    async fn start() -> Self {
        let proxy = common::faulty::FaultyProxy::start().await;
        let p = proxy.clone();
        let stored = database().await;
        let a = node_a_with(&stored, move |cfg| {
            cfg.forward_stuck_after_secs = 1;
            cfg.max_backoff_ms = 1_000;
            p.set_upstream(&cfg.trustees[2].url);
            cfg.trustees[2].url = p.url.clone();
        })
        .await;
        let (b, on_b) = node_b(&a);
        let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
        let ops_b = on_b.events("/v1/operator/events", &op_b).await.unwrap();
        let mut device = a.student("Meera Joshi").await;
        let student = device.student_id();

        proxy.break_path("/v1/shreds");
        let stop = a.signed_stop(&mut device, false);
        let answer = a.client.stop(&stop).await.unwrap();
        assert_eq!(answer["pending"], 1, "{answer}");
        // A has asked trustee 3 (and met a fault), and carries the forward.
        proxy
            .wait_until("/v1/shreds", 30, |s| s.values().sum::<usize>() > 0)
            .await;
        let nodes = Self {
            a,
            _b: b,
            on_b,
            op_b,
            ops_b,
            proxy,
            student,
            stop,
            stored,
        };
        assert_eq!(nodes.carrier(), [Some("node-a".to_owned())]);
        nodes
    }

    /// The nodes named on the stop's pending forwards.
    fn carrier(&self) -> Vec<Option<String>> {
        let rows = self.stored.rows(
            "SELECT node FROM pending_shreds WHERE student_id = ?1",
            vec![P::Blob(self.student.as_bytes().to_vec())],
        );
        rows.into_iter().map(|r| r[0].text()).collect()
    }

    /// Waits (at most `bound`) until node B carries the stop, as the
    /// database says; how long it took.
    async fn b_carries_it(&self, bound: Duration) -> Duration {
        let since = Instant::now();
        while self.carrier() != [Some("node-b".to_owned())] {
            assert!(
                since.elapsed() <= bound,
                "B did not take the stop over within {bound:?}: {:?}",
                self.carrier()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        since.elapsed()
    }

    /// The proxy heals: B's forward ends with trustee 3's receipt, the
    /// trustee has shredded, the phone asking B hears the stop complete.
    async fn b_finishes_the_stop(&mut self) {
        self.proxy.heal();
        let ev = next_event(&mut self.ops_b, 30, |e| {
            e["kind"] == "shred_receipt" && e["detail"]["trustee"] == "trustee-3"
        })
        .await;
        assert_eq!(ev["detail"]["receipt"], true, "{ev}");
        assert!(self.a.trustees[2].shredded(&self.student).await);
        assert!(self.carrier().is_empty(), "{:?}", self.carrier());
        let again = self.on_b.stop(&self.stop).await.unwrap();
        assert_eq!(again["pending"], 0, "{again}");
        assert_eq!(again["receipts"].as_array().unwrap().len(), 3, "{again}");
        let taken = metric(&self.on_b, &self.op_b, "sosvault_forwards_taken_total").await;
        assert_eq!(taken.as_deref(), Some("1"));
    }
}

/// A stop node A took while trustee 3 answered only faults is still on its
/// way there when A dies: B takes the forward over once A's beat runs out
/// and carries it to trustee 3, which shreds. Before the forwards were
/// carried by beats, only a node's start read them: the stop waited for
/// the next restart, and the share stayed at the trustee.
///
/// Throughout, B's operators see one report for the deployment: the stop
/// stuck on its way to trustee 3, carried by A, then by B, then nothing.
/// Before, each node reported its own forwards, and each node's report
/// reached every node's streams in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_outlives_the_node_that_took_it() {
    let mut n = StopOnA::start().await;
    let stuck_on = |node: &'static str| {
        move |e: &serde_json::Value| {
            e["kind"] == "forwards"
                && carriers(&e["detail"]) == [node]
                && e["detail"]["groups"][0]["stuck"] == 1
        }
    };
    next_event(&mut n.ops_b, 10, stuck_on("node-a")).await;
    let report = n
        .on_b
        .get("/v1/operator/forwards", Some(&n.op_b))
        .await
        .unwrap();
    assert_eq!(carriers(&report), ["node-a"], "{report}");
    let group = &report["groups"][0];
    assert_eq!(
        (
            &group["kind"],
            &group["trustee"],
            &group["pending"],
            &group["stuck"]
        ),
        (&"stop".into(), &"trustee-3".into(), &1.into(), &1.into()),
        "{report}"
    );

    n.a.server.kill();
    let took = n.b_carries_it(TAKEOVER_BOUND).await;
    // A's word runs out; B reports the stop as its own.
    next_event(&mut n.ops_b, 15, stuck_on("node-b")).await;
    n.b_finishes_the_stop().await;
    next_event(&mut n.ops_b, 10, |e| {
        e["kind"] == "forwards" && carriers(&e["detail"]).is_empty()
    })
    .await;
    let report = n
        .on_b
        .get("/v1/operator/forwards", Some(&n.op_b))
        .await
        .unwrap();
    assert_eq!(carriers(&report), Vec::<String>::new(), "{report}");
    eprintln!("B carried A's stop {took:?} after A died");
    drop(n);
}

/// The nodes a forwards report names, over its groups.
fn carriers(report: &serde_json::Value) -> Vec<String> {
    report["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["nodes"].as_array())
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// A node frozen past its beat (SIGSTOP) comes back to find another node
/// carrying its stop: it lets the forward go at its next retry, and only
/// B finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_beat_lets_its_stop_go_when_it_wakes() {
    let mut n = StopOnA::start().await;
    let op_a = n.a.operator().await;
    let pending = "sosvault_forwards_pending{kind=\"stop\"}";

    n.a.server.signal("STOP");
    n.b_carries_it(TAKEOVER_BOUND).await;
    n.a.server.signal("CONT");

    // A asks again within its back-off (a second), finds B's name on the
    // row and lets the forward go; B still carries it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&n.a.client, &op_a, pending).await.as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "A never let the stop go");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_b = metric(&n.on_b, &n.op_b, pending).await;
    assert_eq!(on_b.as_deref(), Some("1"));
    assert_eq!(n.carrier(), [Some("node-b".to_owned())]);
    n.b_finishes_the_stop().await;
    drop(n);
}

/// The value of the metric `name` on the node `client` reaches, read as
/// the operator `op`.
async fn metric(client: &Client, op: &str, name: &str) -> Option<String> {
    let text = client.get_text_auth("/metrics", Some(op)).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

/// One node named `node-a` on a database of the test's own.
async fn node_a(stored: &Stored) -> Cluster {
    node_a_with(stored, |_| {}).await
}

/// [`node_a`], its configuration changed by `tweak` too.
async fn node_a_with(
    stored: &Stored,
    tweak: impl FnOnce(&mut sosvault_server::config::Config),
) -> Cluster {
    let url = stored.postgres_url().to_owned();
    Cluster::start_with(Options::default(), move |cfg| {
        cfg.database_url = Some(sosvault_server::config::DatabaseUrl::new(&url));
        cfg.node_id = Some("node-a".into());
        tweak(cfg);
    })
    .await
}

/// [`node_a`], and node B beside it with a client of its own.
async fn nodes_a_and_b(stored: &Stored) -> (Cluster, ServerProc, Client) {
    let a = node_a(stored).await;
    let (b, on_b) = node_b(&a);
    (a, b, on_b)
}

/// [`nodes_a_and_b`], an operator's session on A, and the police team of
/// Talwandi registered there (its id and token).
async fn nodes_a_and_b_with_a_team(
    stored: &Stored,
) -> (Cluster, ServerProc, Client, String, (String, String)) {
    let (a, b, on_b) = nodes_a_and_b(stored).await;
    let op = a.operator().await;
    let team = talwandi_team(&a.client, &op).await;
    (a, b, on_b, op, team)
}

/// Node B beside node A, with a client of its own.
fn node_b(a: &Cluster) -> (ServerProc, Client) {
    let b = a.second_node("node-b");
    let on_b = Client::new(&b.url());
    (b, on_b)
}

/// A database of its own for one test's nodes. Declared before them, it is
/// dropped after them (locals drop in the reverse order of their
/// declaration), so no node outlives its database.
async fn database() -> Stored {
    let db = tokio::task::spawn_blocking(TestDatabase::create)
        .await
        .unwrap();
    Stored::Postgres(db)
}

/// A second process under a running node's name (a copied data directory,
/// one `node_id` in two configs) would run the same incidents and
/// forwards: it waits out one beat, sees the name still renewed, and
/// refuses to start, saying what to do. The running node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_a_live_node_s_name_refuses_to_start() {
    let stored = database().await;
    let a = node_a(&stored).await;
    let mut twin = a.node_beside("node-a");
    let since = Instant::now();
    let why = twin.try_start_with_env(&[]).unwrap_err();
    assert!(
        why.contains("another live node is named node-a") && why.contains("node_id of its own"),
        "{why}"
    );
    // It waited out at most one beat before deciding.
    assert!(since.elapsed() < TAKEOVER_BOUND, "{:?}", since.elapsed());
    a.operator().await;
}

/// A node frozen past its beat while a second process under its name
/// started (the first looked dead) stops serving when it wakes, and exits
/// with an error, instead of running the incidents the other now runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_wakes_to_find_its_name_taken_stops() {
    let stored = database().await;
    let mut a = node_a(&stored).await;
    a.server.signal("STOP");
    let mut twin = a.node_beside("node-a");
    twin.try_start_with_env(&[]).unwrap();
    a.server.signal("CONT");
    assert!(!a.server.wait_exit(15), "A exited 0 after losing its name");
    let said = a.server.logs();
    assert!(
        said.contains("another live node took this node's name"),
        "{said}"
    );
    // The twin serves under the name.
    let on_twin = Client::new(&twin.url());
    on_twin.login(OPERATOR, PASSWORD).await.unwrap();
}

/// Events reach every node: an operator connected to node B sees at once
/// the panic node A stored, and its location. What crosses the database
/// (read here by a stranger listening on the channel, as anyone holding
/// the database may) is sealed: no incident id, category or coordinate.
/// A stranger with the database, listening on the nodes' channel: what
/// whoever holds the database sees of what the nodes say to each other.
struct Eavesdropper {
    enough: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Eavesdropper {
    /// Listening once this returns.
    fn listen(stored: &Stored) -> Self {
        let url = stored.postgres_url().to_owned();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = enough.clone();
        let thread = std::thread::spawn(move || {
            use postgres::fallible_iterator::FallibleIterator as _;
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.batch_execute("LISTEN sosvault_events").unwrap();
            ready_tx.send(()).unwrap();
            let mut heard = Vec::new();
            let mut next = || {
                let wait = Duration::from_millis(200);
                client.notifications().timeout_iter(wait).next()
            };
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(Some(note)) = next() {
                    heard.push(note.payload().to_owned());
                }
            }
            // What was announced before the test said enough.
            while let Ok(Some(note)) = next() {
                heard.push(note.payload().to_owned());
            }
            heard
        });
        ready.recv().unwrap();
        Self { enough, thread }
    }

    /// Every word announced since it started listening (a notification
    /// packs several, separated by commas).
    async fn heard(self) -> Vec<String> {
        self.enough.store(true, std::sync::atomic::Ordering::SeqCst);
        let notes = tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
        notes
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::to_owned)
            .collect()
    }
}

/// Sends `payloads` again on the nodes' channel, one notification each,
/// as whoever holds the database can.
async fn replay(stored: &Stored, payloads: Vec<String>) {
    let url = stored.postgres_url().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        for p in &payloads {
            client
                .execute("SELECT pg_notify('sosvault_events', $1)", &[p])
                .unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_one_node_sees_at_once_the_panic_another_took() {
    let stored = database().await;
    let (a, _b, on_b) = nodes_a_and_b(&stored).await;
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let mut ops_b = on_b.events("/v1/operator/events", &op_b).await.unwrap();

    let stranger = Eavesdropper::listen(&stored);

    let mut device = a.student("Nidhi Sharma").await;
    let panic = a.talwandi_panic(&mut device, sosvault::Category::Police);
    let since = Instant::now();
    let id = a.client.panic(&panic).await.unwrap();
    let created = next_event(&mut ops_b, 10, is("incident_created", &id)).await;
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "B saw the panic {took:?} after it was sent"
    );
    assert_eq!(created["detail"]["category"], "police", "{created}");
    // The student moves; A opens the location, B's operator sees it.
    let moved = sosvault::Location::new(25.1450, 75.8390, 5, sosvault::Timestamp::now()).unwrap();
    let update = a.signed_location(&mut device, panic.hash(), &moved);
    a.client.location(&update).await.unwrap();
    let located = next_event(&mut ops_b, 10, is("location", &id)).await;
    assert!((located["detail"]["lat"].as_f64().unwrap() - 25.1450).abs() < 1e-6);

    let heard = stranger.heard().await;
    assert!(heard.len() >= 2, "{heard:?}");
    for payload in &heard {
        use base64::Engine as _;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .unwrap();
        assert!(sealed.starts_with(b"SVE1"), "{payload}");
        for clear in [
            id.as_str(),
            "police",
            "25.14",
            "75.83",
            "location",
            "incident_created",
        ] {
            assert!(!payload.contains(clear), "{payload} shows {clear}");
            assert!(
                !String::from_utf8_lossy(&sealed).contains(clear),
                "{payload} shows {clear}"
            );
        }
    }
    eprintln!("B's operator saw A's panic {took:?} after it was sent ({created})");
}

/// A stop taken by node B reaches the node running the student's
/// incident: node A, which had opened the profile, forgets the incident's
/// keys at once (the team still goes), where before it kept them until the
/// access window ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_taken_on_one_node_forgets_the_keys_on_the_node_running_the_incident() {
    let stored = database().await;
    let a = node_a(&stored).await;
    let (op_a, mut ops_a) = {
        let op = a.operator().await;
        let ops = a.operator_events(&op).await;
        (op, ops)
    };
    let (_b, on_b) = node_b(&a);
    let mut device = a.student("Nidhi Sharma").await;
    let id = a
        .panic_at_talwandi(&mut device, sosvault::Category::Police)
        .await;
    a.claim(&op_a, &id).await;
    next_event(&mut ops_a, 30, is("profile_available", &id)).await;
    assert_eq!(
        a.incident(&op_a, &id).await["profile"]["name"],
        "Nidhi Sharma"
    );

    let stop = a.signed_stop(&mut device, false);
    let since = Instant::now();
    on_b.stop(&stop).await.unwrap();
    let forgotten = next_event(&mut ops_a, 10, is("profile_forgotten", &id)).await;
    let took = since.elapsed();
    assert_eq!(forgotten["detail"]["reason"], "stop", "{forgotten}");
    let detail = a.incident(&op_a, &id).await;
    assert!(detail["profile"].is_null(), "{detail}");
    assert_ne!(detail["release"]["profile"], "released", "{detail}");
    eprintln!("A forgot the keys {took:?} after B took the stop");
}

/// A burst of panics across two nodes, and node A killed with SIGKILL in
/// the middle of it; the phones whose request to A failed send the same
/// signed panic to B, as a phone retries. Every team streams to B (A,
/// which has none, sends none). Then a checker reads the run's history (the
/// phones' answers, what each team was sent, the database) and fails on a
/// panic lost or stored twice, an incident without exactly one
/// acknowledged team, or a team on two incidents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_across_two_nodes_survives_killing_one_and_loses_nothing() {
    const PANICS: usize = 16;
    let stored = database().await;
    let mut a = node_a(&stored).await;
    let op = a.operator().await;
    let mut tokens = Vec::new();
    for i in 0..PANICS {
        let (lat, lon) = (25.1440 + i as f64 * 0.001, 75.8370);
        let (id, token) = a
            .client
            .create_unit(&op, &format!("PCR {i}"), "police", lat, lon)
            .await
            .unwrap();
        tokens.push((id, token));
    }
    let (_b, on_b) = node_b(&a);

    // The teams, on B: each acknowledges what it is sent, and the run
    // keeps what each was sent.
    let sent: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    for (unit, token) in tokens {
        let mut events = on_b.events("/v1/unit/events", &token).await.unwrap();
        let (on_b, sent) = (on_b.clone(), sent.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if ev["kind"] != "assigned" {
                    continue;
                }
                let id = ev["incident"].as_str().unwrap_or_default().to_owned();
                sent.lock().unwrap().push((unit.clone(), id.clone()));
                let ack = format!("/v1/unit/incidents/{id}/ack");
                let _ = on_b
                    .post(&ack, Some(&token), &serde_json::Value::Null)
                    .await;
            }
        });
    }

    let mut panics = Vec::new();
    for i in 0..PANICS {
        let mut device = a.student(&format!("Student {i}")).await;
        panics.push(a.talwandi_panic(&mut device, sosvault::Category::Police));
    }
    // The burst: even panics to A, odd to B, all at once; A dies once it
    // has answered a quarter of them (the rest of A's are in flight).
    let (enough_tx, enough) = tokio::sync::mpsc::unbounded_channel::<()>();
    let on_a = a.client.clone();
    let mut phones = Vec::new();
    for (i, panic) in panics.iter().cloned().enumerate() {
        let (on_a, on_b, enough_tx) = (on_a.clone(), on_b.clone(), enough_tx.clone());
        phones.push(tokio::spawn(async move {
            if i % 2 == 0
                && let Ok(id) = on_a.panic(&panic).await
            {
                let _ = enough_tx.send(());
                return (i, id, "A");
            }
            // A phone retries the same signed bytes elsewhere.
            let id = on_b.panic(&panic).await.unwrap();
            (i, id, "B")
        }));
    }
    let mut enough = enough;
    for _ in 0..PANICS / 4 {
        enough.recv().await.unwrap();
    }
    a.server.kill();
    let killed = Instant::now();
    let mut answered = Vec::new();
    for phone in phones {
        answered.push(phone.await.unwrap());
    }
    let by_a = answered.iter().filter(|(_, _, n)| *n == "A").count();

    // Every accepted panic gets its team, acknowledged, within the bound.
    let ids: Vec<P> = answered
        .iter()
        .map(|(_, id, _)| P::Blob(hex::decode(id).unwrap()))
        .collect();
    let acknowledged = || {
        let rows = stored.rows(
            "SELECT DISTINCT incident_id FROM assignments WHERE status = 'acknowledged'",
            vec![],
        );
        rows.len()
    };
    let deadline = killed + TAKEOVER_BOUND + Duration::from_secs(10);
    while acknowledged() < PANICS {
        assert!(
            Instant::now() < deadline,
            "{} of {PANICS} incidents have an acknowledged team {:?} after the kill",
            acknowledged(),
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();

    // The checker. No panic lost, none stored twice: one incident each.
    let mut distinct: Vec<&String> = answered.iter().map(|(_, id, _)| id).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), PANICS, "{answered:?}");
    let incidents = stored.rows("SELECT id FROM incidents", vec![]);
    assert_eq!(incidents.len(), PANICS, "{incidents:?}");
    for id in &ids {
        let P::Blob(bytes) = id else { unreachable!() };
        let row = stored.rows(
            "SELECT status FROM assignments WHERE incident_id = ?1",
            vec![P::Blob(bytes.clone())],
        );
        let acked: Vec<_> = row
            .iter()
            .filter(|r| r[0].text().as_deref() == Some("acknowledged"))
            .collect();
        assert_eq!(acked.len(), 1, "{} has {row:?}", hex::encode(bytes));
        assert!(
            row.iter()
                .all(|r| r[0].text().as_deref() != Some("pending")),
            "{row:?}"
        );
    }
    // No team on two incidents, in the database or in what the teams were sent.
    let held = stored.rows(
        "SELECT unit_id FROM assignments WHERE status IN ('pending', 'acknowledged')",
        vec![],
    );
    let mut units: Vec<_> = held.iter().map(|r| r[0].text()).collect();
    let open = units.len();
    units.sort();
    units.dedup();
    assert_eq!(units.len(), open, "a team holds two incidents: {held:?}");
    let sent = sent.lock().unwrap().clone();
    let mut per_team: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for (unit, id) in &sent {
        per_team.entry(unit).or_default().insert(id);
    }
    assert!(
        per_team.values().all(|ids| ids.len() == 1),
        "a team was sent to two incidents: {per_team:?}"
    );
    eprintln!(
        "{PANICS} panics, {by_a} taken by A before it died; all assigned and acknowledged once, {took:?} after the kill"
    );
}

/// A node with nothing to do spends next to no CPU: its lease round once a
/// second, its listener waiting on the database. (The first listener kept
/// a `TimeoutIter` across quiet seconds, which then answers at once: a
/// busy loop that took half a core and a third of the enrollment rate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_spends_next_to_no_cpu() {
    let stored = database().await;
    let a = node_a(&stored).await;
    let b = a.second_node("node-b");
    let before = (a.server.cpu_ticks(), b.cpu_ticks());
    let since = Instant::now();
    // A measurement over a span of time, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = (a.server.cpu_ticks() - before.0, b.cpu_ticks() - before.1);
    let wall = since.elapsed();
    // 30 ticks of 10 ms: a tenth of a core over the three seconds.
    assert!(
        ticks.0 < 30 && ticks.1 < 30,
        "idle nodes used {ticks:?} ticks of 10 ms in {wall:?}"
    );
}

/// A team keeps its live stream on node B while node A runs the incident:
/// A learns from B that the team can be told and where it is (a team A
/// registered after B started, its position reported to B), sends it
/// through B, and takes its acknowledgement through B. A token rotated on
/// A opens nothing on B from then on, though B had looked it up; a team
/// revoked on B leaves A's incident, which sends another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_on_one_node_is_sent_by_another_and_acknowledges_through_it() {
    let stored = database().await;
    let (a, _b, on_b) = nodes_a_and_b(&stored).await;
    let op = a.operator().await;
    let mut ops_a = a.client.events("/v1/operator/events", &op).await.unwrap();
    let (unit, token) = talwandi_team(&a.client, &op).await;

    // The team reaches B, and reports a position there.
    let mut team = on_b.events("/v1/unit/events", &token).await.unwrap();
    let moved = serde_json::json!({ "lat": 25.1450, "lon": 75.8380 });
    on_b.post("/v1/unit/position", Some(&token), &moved)
        .await
        .unwrap();
    // A's list of units says so, once B's word crossed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let units = a.client.get("/v1/operator/units", Some(&op)).await.unwrap();
        let ours = units
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == unit.as_str())
            .cloned()
            .unwrap();
        if ours["connected"] == true && ours["position"]["lat"] == 25.1450 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never learnt of the team on B: {ours}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A runs the panic, and sends the team through B.
    let mut device = a.student("Nidhi Sharma").await;
    let id = a
        .panic_at_talwandi(&mut device, sosvault::Category::Police)
        .await;
    let assigned = next_event(&mut team, 10, is("assigned", &id)).await;
    assert_eq!(assigned["detail"]["acknowledged"], false, "{assigned}");
    let lease = stored.rows(
        "SELECT node FROM incident_leases WHERE incident_id = ?1",
        vec![P::Blob(hex::decode(&id).unwrap())],
    );
    assert_eq!(lease[0][0].text().as_deref(), Some("node-a"));

    // The team acknowledges through B: A takes it, says so, and stores it.
    let ack = format!("/v1/unit/incidents/{id}/ack");
    let since = Instant::now();
    let (status, v) = on_b.post(&ack, Some(&token), &NULL).await.unwrap();
    assert_eq!((status, v["status"].as_str()), (200, Some("acknowledged")));
    eprintln!("acknowledged through B in {:?}", since.elapsed());
    next_event(&mut ops_a, 5, is("acknowledged", &id)).await;
    next_event(&mut team, 5, is("acknowledged", &id)).await;
    let status_of = |stored: &Stored| {
        stored.rows(
            "SELECT status FROM assignments WHERE incident_id = ?1",
            vec![P::Blob(hex::decode(&id).unwrap())],
        )
    };
    assert_eq!(
        status_of(&stored)[0][0].text().as_deref(),
        Some("acknowledged")
    );
    // Again: the same answer, nothing new. Another incident: not the team's.
    let (status, _) = on_b.post(&ack, Some(&token), &NULL).await.unwrap();
    assert_eq!(status, 200);
    let other = format!("/v1/unit/incidents/{}/ack", "ab".repeat(16));
    let refused = on_b.post(&other, Some(&token), &NULL).await.unwrap_err();
    assert_eq!((refused.status, refused.code.as_str()), (404, "not_found"));

    // A rotates the token: B, which had looked the old one up, refuses it
    // at once, and ends the stream opened with it.
    let rotate = format!("/v1/operator/units/{unit}/token");
    let (_, v) = a.client.post(&rotate, Some(&op), &NULL).await.unwrap();
    let fresh = v["token"].as_str().unwrap().to_owned();
    ended(&mut team, 5).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while on_b
        .post("/v1/unit/position", Some(&token), &moved)
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "B still takes the rotated token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut team = on_b.events("/v1/unit/events", &fresh).await.unwrap();
    // A looks the new token up too.
    a.client
        .post("/v1/unit/position", Some(&fresh), &moved)
        .await
        .unwrap();

    // B revokes the team: A's incident loses it and says so, and A, which
    // had looked the token up, refuses it.
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let url = format!("{}/v1/operator/units/{unit}", on_b.base());
    let revoked = reqwest::Client::new().delete(url).bearer_auth(&op_b).send();
    assert_eq!(revoked.await.unwrap().status().as_u16(), 204);
    ended(&mut team, 5).await;
    next_event(&mut ops_a, 5, is("assignment_withdrawn", &id)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&stored)[0][0].text().as_deref() != Some("released") {
        assert!(Instant::now() < deadline, "{:?}", status_of(&stored));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = a
        .client
        .post("/v1/unit/position", Some(&fresh), &moved)
        .await
        .unwrap_err();
    assert_eq!(refused.status, 401);
}

/// An operator on B acts on an incident A runs, as if it ran on B: B
/// checks the operator and asks A, whose board decides and whose refusals
/// come back as they are (`awaiting_ack`, `already_assigned`); a reassign
/// and a team sent by hand through B are done by A, once each, even when
/// whoever holds the database sends B's asks again. A close through B
/// reaches the team connected to A (before, the team was never told: B did
/// not run the incident, and its `closed` event named no team), and A lets
/// the incident go and sends the team to the next panic. Before, a
/// reassign or a team sent by hand through B was refused (409, naming A).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_either_node_acts_on_an_incident_the_other_runs() {
    let stored = database().await;
    let (a, _b, on_b, op, (unit, token)) = nodes_a_and_b_with_a_team(&stored).await;
    let mut team = a.client.events("/v1/unit/events", &token).await.unwrap();
    let mut device = a.student("Nidhi Sharma").await;
    let id = a
        .panic_at_talwandi(&mut device, sosvault::Category::Police)
        .await;
    next_event(&mut team, 10, is("assigned", &id)).await;
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let act = |action: &str, body: serde_json::Value| {
        let url = format!("{}/v1/operator/incidents/{id}/{action}", on_b.base());
        let sent = reqwest::Client::new()
            .post(url)
            .bearer_auth(&op_b)
            .json(&body)
            .send();
        async move {
            let answer = sent.await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<serde_json::Value>().await.unwrap())
        }
    };
    let by_hand = |unit: &str| serde_json::json!({ "unit": unit });

    // A's board refuses, and B says so: the team has not acknowledged.
    let (status, v) = act("reassign", NULL).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("awaiting_ack")),
        "{v}"
    );
    let ack = format!("/v1/unit/incidents/{id}/ack");
    a.client.post(&ack, Some(&token), &NULL).await.unwrap();
    let (status, v) = act("assign", by_hand(&unit)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("already_assigned")),
        "{v}"
    );

    // A second team, registered through B (A may not have heard of it
    // yet), with no live stream: only a team sent by hand goes to it.
    let (other, _) = on_b
        .create_unit(&op_b, "PCR Dadabari", "police", 25.1460, 75.8390)
        .await
        .unwrap();
    let stranger = Eavesdropper::listen(&stored);
    let (status, v) = act("reassign", NULL).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("reassigning")),
        "{v}"
    );
    next_event(&mut team, 5, is("assignment_withdrawn", &id)).await;
    let (status, v) = act("assign", by_hand(&other)).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("assigned")),
        "{v}"
    );
    let holding = || {
        stored.rows(
            "SELECT unit_id FROM assignments WHERE incident_id = ?1 AND status IN ('pending', 'acknowledged')",
            vec![P::Blob(hex::decode(&id).unwrap())],
        )
    };
    assert_eq!(holding(), [[V::Text(other.clone())]]);
    let released = || {
        stored.count(
            "SELECT COUNT(*) FROM timeline WHERE incident_id = ?1 AND detail LIKE '%released by supervisor operator%'",
            vec![P::Blob(hex::decode(&id).unwrap())],
        )
    };
    assert_eq!(released(), 1);

    // Whoever holds the database sends everything B and A said again:
    // each word is refused by the node it was said to (so neither ask is
    // taken a second time), and nothing changes.
    let refused = || async {
        let mut sum = 0;
        for (node, session) in [(&a.client, &op), (&on_b, &op_b)] {
            let n = metric(node, session, "sosvault_bus_refused_total").await;
            sum += n.unwrap().parse::<usize>().unwrap();
        }
        sum
    };
    let before = refused().await;
    let heard = stranger.heard().await;
    let words = heard.len();
    assert!(words >= 4, "{words} words overheard");
    replay(&stored, heard).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused().await < before + words {
        assert!(Instant::now() < deadline, "a replayed word was taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused().await, before + words);
    assert_eq!(holding(), [[V::Text(other.clone())]]);
    assert_eq!(released(), 1);

    let close = format!("/v1/operator/incidents/{id}/close");
    on_b.post(&close, Some(&op_b), &NULL).await.unwrap();
    // Closed once: B says so again, A too.
    for (node, session) in [(&on_b, &op_b), (&a.client, &op)] {
        let again = node.post(&close, Some(session), &NULL).await.unwrap_err();
        assert_eq!(
            (again.status, again.code.as_str()),
            (409, "incident_closed")
        );
    }
    let (status, v) = act("reassign", NULL).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("incident_closed")),
        "{v}"
    );

    // The first team, free again, goes to the next panic; B closes that
    // one too, and the team, connected to A, hears it.
    let mut second = a.student("Meera Joshi").await;
    let next = a
        .panic_at_talwandi(&mut second, sosvault::Category::Police)
        .await;
    next_event(&mut team, 10, is("assigned", &next)).await;
    let close = format!("/v1/operator/incidents/{next}/close");
    on_b.post(&close, Some(&op_b), &NULL).await.unwrap();
    next_event(&mut team, 5, is("closed", &next)).await;
    // A let that incident go: the team goes to the one after.
    let mut third = a.student("Kavya Meena").await;
    let last = a
        .panic_at_talwandi(&mut third, sosvault::Category::Police)
        .await;
    next_event(&mut team, 10, is("assigned", &last)).await;
}

/// A node alone on its database says nothing on the bus (nobody would hear
/// it); once a second node starts, the first says everything from then on,
/// and an operator on the second sees at once the panic the first took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_says_nothing_and_speaks_once_another_comes() {
    let stored = database().await;
    let a = node_a(&stored).await;
    let op = a.operator().await;
    let mut device = a.student("Nidhi Sharma").await;
    a.panic_at_talwandi(&mut device, sosvault::Category::Police)
        .await;
    let announced = || metric(&a.client, &op, "sosvault_bus_announced_total");
    assert_eq!(announced().await.as_deref(), Some("0"));

    let (_b, on_b) = node_b(&a);
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let mut ops_b = on_b.events("/v1/operator/events", &op_b).await.unwrap();
    let mut other = a.student("Meera Joshi").await;
    let id = a
        .panic_at_talwandi(&mut other, sosvault::Category::Police)
        .await;
    next_event(&mut ops_b, 5, is("incident_created", &id)).await;
    // A counts a word once its NOTIFY returns, which may be after B has
    // heard it and passed it on: read until the count shows it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while announced().await.as_deref() == Some("0") {
        assert!(Instant::now() < deadline, "A said nothing once B came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let said: u64 = announced().await.unwrap().parse().unwrap();
    assert!(said > 0, "A said nothing once B came");
}

/// An incident node A runs reads the same through node B: B shows its
/// trail, its team and where its release stands (asked of A), lists it
/// as A does, and shows its profile to the operator handling it and to
/// its team, A handing the
/// vault key over sealed to a key B made for that one view. Every view,
/// through either node and of either node's incident, is an entry of one
/// log: A's and B's heads agree, and the student's query to B proves the
/// entries A wrote. Before, B showed and listed A's incident without
/// trail, location, team or profile, and a view B logged took an index A
/// had taken: refused at the log's primary key, the view answered 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_reads_the_same_through_either_node_and_every_view_is_in_one_log() {
    let stored = database().await;
    let (a, _b, on_b) = nodes_a_and_b(&stored).await;
    let op = a.operator().await;
    let mut ops_a = a.operator_events(&op).await;
    let (unit, token) = talwandi_team(&a.client, &op).await;
    // The team streams on B; A sends it there.
    let mut team = on_b.events("/v1/unit/events", &token).await.unwrap();
    let seed = [7u8; 32];
    let (mut device, _) = a
        .student_with_key("Nidhi Sharma", sosvault::DeviceKey::from_seed(&seed))
        .await;
    // A walk with the sealed trail on, through B: opened through either node.
    for minutes_ago in [12, 6] {
        let at = sosvault::Timestamp(sosvault::Timestamp::now().0 - minutes_ago * 60);
        let fix = sosvault::Location::new(25.14, 75.83 + minutes_ago as f64 * 1e-4, 9, at).unwrap();
        let point = device.trail_point(&fix, at).unwrap();
        assert_eq!(on_b.trail(&point).await.unwrap()["status"], "stored");
    }
    let id = a
        .panic_at_talwandi(&mut device, sosvault::Category::Police)
        .await;
    next_event(&mut team, 10, is("assigned", &id)).await;
    a.claim(&op, &id).await;
    next_event(&mut ops_a, 30, is("profile_available", &id)).await;
    let since = Instant::now();
    let on_a = a.incident(&op, &id).await;
    let took_a = since.elapsed();
    assert_eq!(on_a["profile"]["name"], "Nidhi Sharma", "{on_a}");

    // The same operator through B, and the team through B, while one who
    // holds the database records every word the nodes say.
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let stranger = Eavesdropper::listen(&stored);
    let path = format!("/v1/operator/incidents/{id}");
    let since = Instant::now();
    let through_b = on_b.get(&path, Some(&op_b)).await.unwrap();
    eprintln!(
        "the detail with its profile: {took_a:?} on A, {:?} through B",
        since.elapsed()
    );
    assert_eq!(through_b["profile"]["name"], "Nidhi Sharma", "{through_b}");
    assert_eq!(through_b["profile_access"], "shown");
    assert!(!through_b["trail"].as_array().unwrap().is_empty());
    for field in [
        "trail",
        "sealed_trail",
        "location",
        "unit",
        "release",
        "flags",
        "status",
    ] {
        assert_eq!(through_b[field], on_a[field], "{field}");
    }
    let walk = on_a["sealed_trail"]["points"].as_array().unwrap();
    assert_eq!(walk.len(), 2, "{on_a}");
    assert_eq!(through_b["unit"]["id"], unit.as_str());
    assert_eq!(through_b["release"]["profile"], "released");
    // B's list sums A's incident up from the database as A's list shows it
    // (before, without location or team, and its profile `forgotten`).
    let listed = |list: serde_json::Value| {
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id.as_str());
        found.cloned().unwrap()
    };
    let in_a = listed(
        a.client
            .get("/v1/operator/incidents", Some(&op))
            .await
            .unwrap(),
    );
    let in_b = listed(
        on_b.get("/v1/operator/incidents", Some(&op_b))
            .await
            .unwrap(),
    );
    for field in ["location", "unit", "flags", "status", "category"] {
        assert_eq!(in_b[field], in_a[field], "{field}");
    }
    assert_eq!(in_b["release"]["profile"], "released", "{in_b}");
    assert_eq!(in_b["release"]["have"], in_b["release"]["need"], "{in_b}");
    let seen = on_b
        .get(&format!("/v1/unit/incidents/{id}"), Some(&token))
        .await
        .unwrap();
    assert_eq!(seen["profile"]["name"], "Nidhi Sharma", "{seen}");
    assert_eq!(seen["trail"], on_a["trail"]);
    // The stranger holds `master.key` too, and opens every word: A's two
    // answers carry a key, and nothing in any word opens the profile.
    let sealed_profile = stored.rows(
        "SELECT sealed_profile FROM enrollments WHERE student_id = ?1",
        vec![P::Blob(device.student_id().as_bytes().to_vec())],
    )[0][0]
        .blob()
        .unwrap();
    let master = std::fs::read(a.server.dir.join("master.key")).unwrap();
    let master = sosvault_server::sealing::KeySealer::from_key_file(&master).unwrap();
    let mut handed = 0;
    for payload in stranger.heard().await {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let sealed = b64.decode(&payload).unwrap();
        let word = master
            .open_event(b"sosvault/dispatch-event/v2", &sealed)
            .expect("a word of this deployment opens with its master key");
        let word: serde_json::Value = serde_json::from_slice(&word).unwrap();
        if word["said"]["answered"]["answer"]["standing"]["key"].is_string() {
            handed += 1;
        }
        for text in strings_in(&word) {
            for bytes in [b64.decode(&text).ok(), hex::decode(&text).ok()]
                .into_iter()
                .flatten()
            {
                let opened = sosvault::VaultKey::from_secret_bytes(&bytes)
                    .ok()
                    .and_then(|k| k.open(&sealed_profile, 1 << 20).ok());
                assert!(opened.is_none(), "{word} opens the profile");
            }
        }
    }
    assert_eq!(handed, 2, "the vault key went to B once for each view");
    // Not the team's: the same answer as an incident that does not exist.
    let mut other = a.student("Meera Joshi").await;
    let panic = a.talwandi_panic(&mut other, sosvault::Category::Police);
    let id2 = on_b.panic(&panic).await.unwrap();
    let refused = on_b
        .get(&format!("/v1/unit/incidents/{id2}"), Some(&token))
        .await
        .unwrap_err();
    assert_eq!((refused.status, refused.code.as_str()), (404, "not_found"));

    // B runs the second panic; its profile is viewed on B, then through A.
    let claim = format!("/v1/operator/incidents/{id2}/claim");
    let (status, _) = on_b.post(&claim, Some(&op_b), &NULL).await.unwrap();
    assert_eq!(status, 200);
    next_event(&mut ops_a, 30, is("profile_available", &id2)).await;
    let path2 = format!("/v1/operator/incidents/{id2}");
    let on_b2 = on_b.get(&path2, Some(&op_b)).await.unwrap();
    assert_eq!(on_b2["profile"]["name"], "Meera Joshi", "{on_b2}");
    let through_a = a.incident(&op, &id2).await;
    assert_eq!(through_a["profile"]["name"], "Meera Joshi", "{through_a}");

    // Five views, one log: A's own, B's and the team's of A's incident
    // (logged by A), B's own, and A's of B's incident (logged by B).
    // A node reads what the others appended at most every 100 ms before
    // it signs a head: read until both heads cover all five.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (head_a, head_b) = loop {
        let head_a = a.client.get("/v1/log/head", None).await.unwrap();
        let head_b = on_b.get("/v1/log/head", None).await.unwrap();
        if head_a["size"] == 5 && head_b["size"] == 5 {
            break (head_a, head_b);
        }
        assert!(Instant::now() < deadline, "{head_a} {head_b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(head_a["root"], head_b["root"]);
    // Nidhi asks B who read her profile: the three entries A wrote, each
    // proven against B's head.
    let holder = a.log_holder().await;
    let query = log_query(&sosvault::DeviceKey::from_seed(&seed), holder);
    let (_, mine) = on_b.post("/v1/log/mine", None, &query).await.unwrap();
    let log_key = a.control_room_key().log_key().public();
    let mut viewers: Vec<String> = proven_entries(&mine, &log_key)
        .into_iter()
        .map(|(_, entry, _)| match entry {
            sosvault::log::LogEntry::ProfileViewed { viewer, .. } => {
                String::from_utf8(viewer.as_bytes().to_vec()).unwrap()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    viewers.sort();
    let mut want = vec![
        "operator:operator".to_owned(),
        "operator:operator".to_owned(),
        format!("unit:{unit}"),
    ];
    want.sort();
    assert_eq!(viewers, want);
}

/// Every string in `v`, however deep.
fn strings_in(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a.iter().flat_map(strings_in).collect(),
        serde_json::Value::Object(o) => o.values().flat_map(strings_in).collect(),
        _ => Vec::new(),
    }
}

/// The phone follows its incident through either node (issue 14): node A
/// runs it, the team is connected to B and acknowledges and says it has
/// arrived through B, an operator on B closes it with how it ended; every
/// report, asked of either node and verified under the control room key
/// the phone pins, says the same, stage by stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_follows_its_incident_through_either_node() {
    use sosvault::status::{ClosedBy, Closure, Outcome, Stage, TeamKind};
    let stored = database().await;
    let (a, _b, on_b, _, (_, token)) = nodes_a_and_b_with_a_team(&stored).await;
    let mut team = on_b.events("/v1/unit/events", &token).await.unwrap();
    let mut device = a.student("Nidhi Sharma").await;
    let panic = a.talwandi_panic(&mut device, sosvault::Category::Police);
    let id = a.client.panic(&panic).await.unwrap();
    let nodes = [&a.client, &on_b];
    let both = || stages_told(nodes, &device, panic.hash(), &a.info.control_room);
    next_event(&mut team, 10, is("assigned", &id)).await;
    for (stage, coming) in both().await {
        assert!(
            matches!(stage, Stage::TeamSent(t) if t.kind == TeamKind::Police),
            "{stage:?}"
        );
        assert!(!coming);
    }
    let ack = format!("/v1/unit/incidents/{id}/ack");
    on_b.post(&ack, Some(&token), &NULL).await.unwrap();
    next_event(&mut team, 5, is("acknowledged", &id)).await;
    for (stage, coming) in both().await {
        assert!(matches!(stage, Stage::TeamOnTheWay(_)), "{stage:?}");
        assert!(
            coming,
            "help is coming once the team acknowledged, on either node"
        );
    }
    let arrived = format!("/v1/unit/incidents/{id}/arrived");
    on_b.post(&arrived, Some(&token), &NULL).await.unwrap();
    for (stage, _) in both().await {
        assert!(matches!(stage, Stage::TeamArrived(_)), "{stage:?}");
    }
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let close = format!("/v1/operator/incidents/{id}/close");
    let how = serde_json::json!({ "outcome": "helped_on_spot" });
    on_b.post(&close, Some(&op_b), &how).await.unwrap();
    let closed = Stage::Closed(Closure {
        by: ClosedBy::ControlRoom,
        outcome: Some(Outcome::HelpedOnSpot),
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stages = both().await;
        if stages.iter().all(|(s, _)| *s == closed) {
            break;
        }
        assert!(Instant::now() < deadline, "{stages:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the incident of `panic` stands as each of `nodes` reports it to
/// `device` (a fresh signed query each time: a query is answered once),
/// each report verified under `control_room`: the stage, and whether it
/// lets the phone say help is coming.
async fn stages_told(
    nodes: [&Client; 2],
    device: &sosvault::Device,
    panic: sosvault::MessageHash,
    control_room: &sosvault::ControlRoomPublic,
) -> Vec<(sosvault::status::Stage, bool)> {
    let mut stages = Vec::new();
    for node in nodes {
        let q = device.status_query(panic, control_room, sosvault::Timestamp::now());
        let report = node.incident_status(&q, control_room).await.unwrap();
        stages.push((report.stage, report.stage.help_is_coming()));
    }
    stages
}

/// One press sent both ways at once, its HTTP panic to node A and its SMS
/// to node B (the phone's data flickering as it pressed): one incident,
/// both answered with it, and the operators see one alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_on_two_nodes_at_once_are_one_incident() {
    let stored = database().await;
    let token = SMS_TOKEN;
    let a = node_a_with(&stored, |cfg| cfg.sms_panic = Some(sms_panic_config())).await;
    let (_b, on_b) = node_b(&a);
    let on_b_ready = on_b.login(OPERATOR, PASSWORD).await;
    assert!(on_b_ready.is_ok());
    let op = a.operator().await;
    let channel = a.client.sms_channel(&a.info.control_room).await.unwrap();
    for name in ["Nidhi Sharma", "Meera Joshi", "Kavya Meena"] {
        let mut device = a.student(name).await;
        let (http, text) = device
            .panic_with_sms(
                sosvault::Category::Police,
                &talwandi(),
                &a.info.control_room,
                &channel,
                sosvault::Timestamp::now(),
            )
            .unwrap();
        let text = sosvault::sms::to_text(&text);
        let (by_http, by_sms) = tokio::join!(a.client.panic(&http), on_b.sms_inbound(token, &text));
        // A writer that met the other's lock may answer "ask again": the
        // phone and the gateway both do.
        let by_http = match by_http {
            Ok(id) => id,
            Err(e) if e.status == 503 => a.client.panic(&http).await.unwrap(),
            Err(e) => panic!("{e:?}"),
        };
        let by_sms = match by_sms {
            Ok(v) => v["incident_id"].as_str().unwrap().to_owned(),
            Err(e) if e.status == 503 => {
                on_b.sms_inbound(token, &text).await.unwrap()["incident_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(by_http, by_sms, "{name}: one press, one incident");
    }
    let list = a
        .client
        .get("/v1/operator/incidents", Some(&op))
        .await
        .unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
}

/// Silent chat across two nodes: the phone opens the chat through B of an
/// incident A runs; an operator on B writes, and the team connected to B
/// hears of it (B, which does not run the incident, finds its team in the
/// database); the student answers through A, the team on B hears of that
/// too, and the operator on B reads both texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_runs_through_either_node() {
    let stored = database().await;
    let (a, _b, on_b, _op, (_unit, token)) = nodes_a_and_b_with_a_team(&stored).await;
    let mut team = on_b.events("/v1/unit/events", &token).await.unwrap();
    let mut device = a.student("Nidhi Sharma").await;
    let panic = a.talwandi_panic(&mut device, sosvault::Category::Police);
    let id = a.client.panic(&panic).await.unwrap();
    next_event(&mut team, 10, is("assigned", &id)).await;
    let room = &a.info.control_room;
    let read = |device: &sosvault::Device| {
        device.chat_query(panic.hash(), room, 0, sosvault::Timestamp::now())
    };

    // The phone opens it through B.
    let log = on_b.chat_log(&read(&device), room).await.unwrap();
    let to = log.recipient.clone().expect("an open chat");
    // An operator on B writes; the team on B hears of it.
    let op_b = on_b.login(OPERATOR, PASSWORD).await.unwrap();
    let ask = "Can you talk? The team is two minutes away.";
    let (status, v) = on_b
        .post(
            &format!("/v1/operator/incidents/{id}/chat"),
            Some(&op_b),
            &serde_json::json!({ "text": ask }),
        )
        .await
        .unwrap();
    assert_eq!((status, &v["index"]), (200, &serde_json::json!(0)), "{v}");
    let ev = next_event(&mut team, 5, is("chat", &id)).await;
    assert_eq!(ev["detail"]["from"], "control_room", "{ev}");
    // The phone reads it through A, and answers through A.
    let log = a.client.chat_log(&read(&device), room).await.unwrap();
    let lines = device.open_chat(panic.hash(), &log);
    assert_eq!(lines[0].as_ref().unwrap().text.as_str(), ask);
    let answer = device
        .chat_message(
            panic.hash(),
            &to,
            "No. By the gate.",
            sosvault::Timestamp::now(),
        )
        .unwrap();
    assert_eq!(a.client.chat_send(&answer).await.unwrap()["index"], 1);
    let ev = next_event(&mut team, 5, is("chat", &id)).await;
    assert_eq!(ev["detail"]["from"], "student", "{ev}");
    let view = on_b
        .get(&format!("/v1/operator/incidents/{id}/chat"), Some(&op_b))
        .await
        .unwrap();
    let texts: Vec<&str> = view["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [ask, "No. By the gate."]);
}

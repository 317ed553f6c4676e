//! `sosvault-server log verify` as an auditor runs it against the real
//! service: it follows the control room's log of profile views as it grows
//! across runs (its state file remembering the last verified head), and
//! catches a tampered entry, a rewritten history, a forked head and a
//! shrunken log. The dishonest operator is simulated the way a real one
//! would do it: with the data directory, editing or rolling back the SQLite
//! `transparency_log` table of the stopped service and starting it again
//! (the service rebuilds its tree from the stored leaf hashes and signs
//! heads over whatever it finds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::store_files::{restore, rewrite_entry, snapshot};
use common::*;
use sosvault::log::{MerkleLog, TreeHead, leaf_hash, verify_consistency, verify_inclusion};
use sosvault::{Category, LogPublic, Timestamp};

/// Runs `log verify` against the cluster's service.
fn log_verify(c: &Cluster, state: Option<&Path>, token: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(server_bin());
    cmd.args(["log", "verify", "--url", &c.server.url()])
        .args(extra);
    if let Some(s) = state {
        cmd.arg("--state").arg(s);
    }
    match token {
        Some(t) => cmd.env("SOSVAULT_OPERATOR_TOKEN", t),
        None => cmd.env_remove("SOSVAULT_OPERATOR_TOKEN"),
    };
    cmd.output().unwrap()
}

/// `log verify`'s output when it passed.
#[track_caller]
fn ok(out: &Output) -> String {
    stdout_of(out, "log verify failed")
}

fn fails(out: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "log verify passed, expected {words:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(words), "expected {words:?} in: {stderr}");
}

/// A new student panics; returns the incident once its profile is
/// released and the operator has read it: exactly one logged view.
async fn released(c: &Cluster, op: &str, name: &str) -> String {
    let mut device = c.student(name).await;
    let mut ops = c.operator_events(op).await;
    let id = c.panic_at_talwandi(&mut device, Category::Police).await;
    // The operator takes the incident, to read the profile once released.
    c.claim(op, &id).await;
    c.incident_once(op, &mut ops, 20, &id, |d| d["profile"]["name"] == name)
        .await;
    id
}

/// The operator reads the released profile `n` more times: `n` log entries.
async fn view(c: &Cluster, op: &str, id: &str, n: usize) {
    for _ in 0..n {
        let d = c.incident(op, id).await;
        assert!(d["profile"].is_object(), "the profile is released: {d}");
    }
}

async fn log_size(c: &Cluster) -> u64 {
    c.client.get("/v1/log/head", None).await.unwrap()["size"]
        .as_u64()
        .unwrap()
}

fn db(c: &Cluster) -> PathBuf {
    c.server.dir.join("sosvault.db")
}

/// The hex `proof` the service serves at `path` (an inclusion or consistency proof).
async fn served_proof(c: &Cluster, path: &str) -> Vec<Vec<u8>> {
    let p = c.client.get(path, None).await.unwrap();
    p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_control_room_log_verifies_as_it_grows_across_runs() {
    let c = Cluster::start(Options::default()).await;
    let state = c.tmp.path().join("audit.json");
    let info = c.client.get("/v1/info", None).await.unwrap();
    let log_public = info["log_public_key"].as_str().unwrap().to_owned();

    // The empty log verifies, and the auditor remembers it and its key.
    let out = ok(&log_verify(&c, Some(&state), None, &[]));
    assert!(
        out.contains("log of 0 entries") && out.contains("no earlier head"),
        "{out}"
    );
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["log_public_key"], log_public.as_str());

    // Three views; an auditor with an operator's token checks the entries too.
    let op = c.operator().await;
    let id = released(&c, &op, "Asha Verma").await;
    view(&c, &op, &id, 2).await;
    let out = ok(&log_verify(&c, Some(&state), Some(&op), &[]));
    assert!(
        out.contains("log of 3 entries")
            && out.contains("every entry matches its leaf hash")
            && out.contains("consistent with the head of 0 entries"),
        "{out}"
    );
    // Two more, from another incident; leaf hashes only this time.
    let other = released(&c, &op, "Meera Iyer").await;
    view(&c, &op, &other, 1).await;
    let out = ok(&log_verify(&c, Some(&state), None, &[]));
    assert!(
        out.contains("log of 5 entries")
            && out.contains("consistent with the head of 3 entries")
            && !out.contains("every entry matches"),
        "{out}"
    );
    // The same size again: the same root, still fine.
    let out = ok(&log_verify(&c, Some(&state), None, &[]));
    assert!(
        out.contains("consistent with the head of 5 entries"),
        "{out}"
    );

    // The served proofs check out for every pair of sizes, against the
    // roots of the leaves the service serves.
    let head = c.client.get("/v1/log/head", None).await.unwrap();
    let key = LogPublic::from_hex(&log_public).unwrap();
    let head =
        TreeHead::verify(&B64.decode(head["head"].as_str().unwrap()).unwrap(), &key).unwrap();
    let size = head.body().size;
    assert_eq!(size, 5);
    let leaves = c
        .client
        .get(&format!("/v1/log/entries?start=0&end={size}"), None)
        .await
        .unwrap();
    let leaves: Vec<[u8; 32]> = leaves["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            B64.decode(l["leaf_hash"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let tree = MerkleLog::from_leaf_hashes(leaves.iter().copied());
    assert_eq!(tree.root(), head.body().root);
    for new in 1..=size {
        let root = tree.root_at(new).unwrap();
        for old in 1..=new {
            let proof = served_proof(&c, &format!("/v1/log/consistency?old={old}&new={new}")).await;
            verify_consistency(old, new, &tree.root_at(old).unwrap(), &root, &proof).unwrap();
        }
        let i = new - 1;
        let proof = served_proof(&c, &format!("/v1/log/proof?index={i}&size={new}")).await;
        verify_inclusion(&leaves[i as usize], i, new, &proof, &root).unwrap();
    }

    // The pinned key: the right one verifies, another is refused.
    ok(&log_verify(&c, None, None, &["--log-public", &log_public]));
    let stranger = sosvault::ControlRoomKey::generate()
        .log_key()
        .public()
        .to_hex();
    fails(
        &log_verify(&c, None, None, &["--log-public", &stranger]),
        "another key than the one pinned with --log-public",
    );
    // A state file remembering another key: the key was replaced.
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    saved["log_public_key"] = stranger.clone().into();
    let replaced = c.tmp.path().join("replaced.json");
    std::fs::write(&replaced, serde_json::to_vec(&saved).unwrap()).unwrap();
    fails(
        &log_verify(&c, Some(&replaced), None, &[]),
        "log key changed since the last check",
    );
    // A token that is not a live session's is refused, not ignored.
    fails(&log_verify(&c, None, Some("not-a-session"), &[]), "401");
    // A pin for a plain http URL is a mistake, said as such.
    fails(
        &log_verify(&c, None, None, &["--ca", "/nonexistent/ca.pem"]),
        "not an https:// URL",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_rewritten_control_room_log_is_detected() {
    let mut c = Cluster::start(Options::default()).await;
    let state = c.tmp.path().join("audit.json");
    let op = c.operator().await;
    let id = released(&c, &op, "Asha Verma").await;
    view(&c, &op, &id, 2).await;
    ok(&log_verify(&c, Some(&state), Some(&op), &[]));

    // The operator edits entry 1 (who viewed, and when) but not its leaf hash.
    c.server.kill();
    rewrite_entry(&db(&c), "transparency_log", 1, false);
    c.server.start();
    let op = c.operator().await;
    // The leaf hashes, and so the heads, are unchanged: an auditor without
    // the entries cannot tell; one reading them can.
    ok(&log_verify(&c, Some(&state), None, &[]));
    fails(
        &log_verify(&c, Some(&state), Some(&op), &[]),
        "entry 1 does not match its leaf hash",
    );

    // The operator rewrites entry 0 and its leaf hash: a self-consistent log
    // with a different past, which the service signs after a restart.
    c.server.kill();
    rewrite_entry(&db(&c), "transparency_log", 1, false); // entry 1 back as it was
    rewrite_entry(&db(&c), "transparency_log", 0, true);
    c.server.start();
    let op = c.operator().await;
    // A fresh auditor with no memory cannot tell...
    ok(&log_verify(&c, None, Some(&op), &[]));
    // ...one that remembers the head it verified can: a second head of the
    // same size...
    fails(
        &log_verify(&c, Some(&state), Some(&op), &[]),
        "fork: the dispatch service signed two different heads of size 3",
    );
    // ...and, once the log grows, a log that does not extend it.
    released(&c, &op, "Meera Iyer").await;
    assert_eq!(log_size(&c).await, 4);
    fails(
        &log_verify(&c, Some(&state), Some(&op), &[]),
        "history was rewritten",
    );
    // A failed check keeps the evidence: the state still holds the head of 3.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let key = LogPublic::from_hex(saved["log_public_key"].as_str().unwrap()).unwrap();
    let kept =
        TreeHead::verify(&B64.decode(saved["head"].as_str().unwrap()).unwrap(), &key).unwrap();
    assert_eq!(kept.body().size, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_or_shrunken_control_room_log_is_detected() {
    let mut c = Cluster::start(Options::default()).await;
    let state = c.tmp.path().join("audit.json");
    let snap = c.tmp.path().join("snapshot");
    let op = c.operator().await;
    let id = released(&c, &op, "Asha Verma").await;
    view(&c, &op, &id, 1).await;
    c.server.kill();
    snapshot(&db(&c), &snap);

    // Branch one: two more views; the auditor sees and remembers it.
    c.server.start();
    let op = c.operator().await;
    released(&c, &op, "Meera Iyer").await;
    released(&c, &op, "Kavya Rao").await;
    let seen = log_size(&c).await;
    assert_eq!(seen, 4);
    ok(&log_verify(&c, Some(&state), None, &[]));
    c.server.kill();

    // The operator rolls the database back: the log shrank.
    restore(&db(&c), &snap);
    c.server.start();
    assert_eq!(log_size(&c).await, 2);
    fails(&log_verify(&c, Some(&state), None, &[]), "the log shrank");

    // Branch two from the same point, to the same size: a fork.
    let op = c.operator().await;
    released(&c, &op, "Ira Sen").await;
    released(&c, &op, "Noor Khan").await;
    assert_eq!(log_size(&c).await, seen);
    fails(&log_verify(&c, Some(&state), None, &[]), "fork");

    // And once it grows past the seen head, it still does not extend it.
    released(&c, &op, "Tara Das").await;
    fails(
        &log_verify(&c, Some(&state), None, &[]),
        "does not extend the head of 4 entries",
    );
}

#[test]
fn over_https_log_verify_trusts_only_the_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TlsService::start(dir.path());
    let run = |ca: Option<&Path>| {
        let mut cmd = Command::new(server_bin());
        cmd.args(["log", "verify", "--url", &svc.url()])
            .arg("--state")
            .arg(dir.path().join("audit.json"))
            .env_remove("SOSVAULT_OPERATOR_TOKEN");
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.output().unwrap()
    };
    // The service's own certificate, pinned: verified.
    let out = ok(&run(Some(&dir.path().join("cert.pem"))));
    assert!(out.contains("log of 0 entries"), "{out}");
    // Nothing pinned: no system root vouches for it, and the error says what to do.
    fails(&run(None), "--ca FILE");
    // Another certificate pinned (an impostor at that address would hold none
    // other): refused.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_pem = dir.path().join("other.pem");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    fails(&run(Some(&other_pem)), "cannot reach the dispatch service");
}

/// The policy for trustee `i`'s log `log`: cosigned by both other trustees
/// (of `witnesses`, every trustee's witness key in order).
fn cosigned_by_the_others(
    witnesses: &[sosvault::checkpoint::WitnessVerifier],
    i: usize,
    log: sosvault::checkpoint::LogVerifier,
) -> sosvault::checkpoint::WitnessPolicy {
    let others = witnesses.iter().enumerate().filter(|(j, _)| *j != i);
    let others = others.map(|(_, w)| w.clone()).collect();
    sosvault::checkpoint::WitnessPolicy::new(log, others, 2).unwrap()
}

/// Polls (bounded) until the served checkpoint carries `n` cosignature
/// lines for a tree of `size` entries; returns the note's text.
async fn witnessed(c: &Cluster, size: u64, n: usize) -> String {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = reqwest::get(format!("{}/v1/log/checkpoint", c.server.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let note = sosvault::checkpoint::Note::parse(text.as_bytes()).unwrap();
        let cp = sosvault::checkpoint::Checkpoint::parse_body(note.text()).unwrap();
        if cp.size == size && note.signatures().len() == 1 + n {
            return text;
        }
        assert!(
            std::time::Instant::now() < end,
            "not witnessed in 20 s: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_trustee_witnesses_the_control_room_log_and_a_fork_is_never_cosigned() {
    use sosvault::checkpoint::{
        AddCheckpoint, Checkpoint, LogVerifier, Note, WitnessPolicy, WitnessVerifier,
    };
    let c = Cluster::start_with(Options::default(), |cfg| cfg.witness_interval_ms = 200).await;
    let op = c.operator().await;
    let id = released(&c, &op, "Asha Verma").await;
    view(&c, &op, &id, 2).await;
    let size = log_size(&c).await;
    assert_eq!(size, 3);

    // The relay took the checkpoint to every trustee: three cosignatures.
    let text = witnessed(&c, size, 3).await;
    let witnesses: Vec<WitnessVerifier> = c
        .trustees
        .iter()
        .map(|t| t.witness_vkey.parse().unwrap())
        .collect();
    let info = c.client.get("/v1/info", None).await.unwrap();
    let log: LogVerifier = info["log_vkey"].as_str().unwrap().parse().unwrap();
    let all = WitnessPolicy::new(log.clone(), witnesses.clone(), 3).unwrap();
    let w = all.verify(&Note::parse(text.as_bytes()).unwrap()).unwrap();
    assert_eq!(w.checkpoint().size, size);

    // An auditor requires them: all three, then a quorum; a stranger's key
    // does not count.
    let vkeys: Vec<String> = c.trustees.iter().map(|t| t.witness_vkey.clone()).collect();
    let mut args = Vec::new();
    for v in &vkeys {
        args.extend(["--witness", v.as_str()]);
    }
    let out = ok(&log_verify(&c, None, None, &args));
    assert!(out.contains("cosigned by 3 of 3"), "{out}");
    let stranger = sosvault::checkpoint::Witness::new(
        sosvault::checkpoint::KeyName::new("stranger.example").unwrap(),
        sosvault::LogKey::generate(),
    )
    .verifier()
    .to_string();
    fails(
        &log_verify(
            &c,
            None,
            None,
            &[
                "--witness",
                &stranger,
                "--witness",
                &vkeys[0],
                "--quorum",
                "2",
            ],
        ),
        "1 valid cosignatures",
    );

    // Each trustee's own log is witnessed by the two others.
    for (i, t) in c.trustees.iter().enumerate() {
        let policy = cosigned_by_the_others(&witnesses, i, t.log_vkey.parse().unwrap());
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let body = reqwest::get(format!("{}/v1/log/checkpoint", t.url()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            if policy.verify(&Note::parse(&body).unwrap()).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < end, "trustee {i} not witnessed");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // The student's answer carries the witnessed checkpoint, and the head
    // it proves entries against extends it.
    let cr = c.control_room_key();
    let key = sosvault::DeviceKey::from_seed(&[33; 32]);
    c.student_with_key("Ravi Meena", sosvault::DeviceKey::from_seed(&[33; 32]))
        .await;
    let body = log_query(&key, c.log_holder().await);
    let (_, mine) = c.client.post("/v1/log/mine", None, &body).await.unwrap();
    let head = TreeHead::verify(
        &B64.decode(mine["head"].as_str().unwrap()).unwrap(),
        &cr.log_key().public(),
    )
    .unwrap();
    let note = Note::parse(mine["checkpoint"].as_str().unwrap().as_bytes()).unwrap();
    let proof = |v: &serde_json::Value| -> Vec<Vec<u8>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| B64.decode(h.as_str().unwrap()).unwrap())
            .collect()
    };
    all.verify_head(&note, head.body(), &proof(&mine["checkpoint_proof"]))
        .expect("the head the entries are proven against extends the witnessed checkpoint");

    // Each trustee's answer to the same student carries its own log's
    // checkpoint, cosigned by the two other trustees, on its head's history.
    for (i, t) in c.trustees.iter().enumerate() {
        let public = sosvault::TrusteePublic::from_hex(&t.public).unwrap();
        let trustee = sosvault_server::client::Client::new(&t.url());
        let query = log_query(&key, public.id());
        let (_, answer) = trustee.post("/v1/log/mine", None, &query).await.unwrap();
        let log_key: LogVerifier = t.log_vkey.parse().unwrap();
        let head = TreeHead::verify(
            &B64.decode(answer["head"].as_str().unwrap()).unwrap(),
            log_key.public(),
        )
        .unwrap();
        let policy = cosigned_by_the_others(&witnesses, i, log_key);
        let note = Note::parse(answer["checkpoint"].as_str().unwrap().as_bytes()).unwrap();
        policy
            .verify_head(&note, head.body(), &proof(&answer["checkpoint_proof"]))
            .unwrap_or_else(|e| panic!("trustee {i}: {e}"));
    }

    // The attacker who holds the dispatch data directory signs another
    // history of the same size with the log's own key: no witness cosigns it.
    let mut forged = MerkleLog::new();
    for i in 0..size {
        forged.append_leaf_hash(leaf_hash(&[i as u8, 0xff]));
    }
    let head = forged.head(cr.log_key().public().log_id(), Timestamp::now());
    let note = Checkpoint::of_head(log.name().clone(), &head).sign(&cr.log_key());
    let req = AddCheckpoint {
        old_size: size,
        proof: Vec::new(),
        note,
    };
    for t in &c.trustees {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/witness/add-checkpoint", t.url()))
            .header("content-type", "text/plain")
            .body(req.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 422, "a fork cosigned");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "fork");
    }
    // And the auditor still sees the one witnessed history.
    ok(&log_verify(&c, None, None, &args));
}

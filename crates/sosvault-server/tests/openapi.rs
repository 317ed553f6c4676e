//! The dispatch service's OpenAPI document (`GET /openapi.json`), served by
//! the real binary: it keeps the promises every served document keeps
//! (`sosvault_service::openapi::check_document`), and the service answers
//! as it says: the extractors' 400/413/415 are documented where they are
//! given, a documented limit is enforced, and logout needs a live session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::openapi_doc::documented;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use sosvault_service::openapi::{Promises, base64_len, check_document};

async fn document(c: &Cluster) -> Value {
    reqwest::get(format!("{}/openapi.json", c.server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `method path` with `token`, no content type, no body: the status and the JSON answer.
async fn send_empty(c: &Cluster, method: Method, path: &str, token: Option<&str>) -> (u16, Value) {
    send(c, method, path, token, None, Vec::new()).await
}

/// `method path` with `token`, `content_type` and `body`: the status and the JSON answer.
async fn send(
    c: &Cluster,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", c.server.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_keeps_its_promises_and_the_service_answers_as_documented() {
    let c = Cluster::start_with(Options::default(), |cfg| {
        cfg.sms_panic = Some(sms_panic_config());
    })
    .await;
    let op = c.operator().await;
    let unit = c.pcr_talwandi(&op).await;
    let doc = document(&c).await;

    // The promises every served document keeps: JSON bodies document 400,
    // 413 and 415; credentials 401; query strings 400; byte fields say
    // `format: byte`, `contentEncoding: base64` and their maxLength; a
    // stated maximum is the schema's.
    let problems = check_document(&doc, Promises::default());
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Each byte field's limit is the largest message of its kind.
    let panic = &doc["components"]["schemas"]["PanicBody"]["properties"]["panic"];
    assert_eq!(panic["format"], "byte");
    assert_eq!(
        panic["maxLength"],
        base64_len(sosvault::Signed::<sosvault::PanicEvent>::MAX_LEN)
    );

    // Every operation that takes a JSON body, called as the document says
    // (with the credentials it names) but with another content type, a
    // body over the limit, or a body that is not the documented JSON: each
    // answer is one the operation documents.
    let paths = doc["paths"].as_object().unwrap().clone();
    let mut tried = 0;
    for (path, item) in &paths {
        let Some(post) = item.get("post") else {
            continue;
        };
        if post.get("requestBody").is_none() {
            continue;
        }
        let token = match post["security"][0]
            .as_object()
            .and_then(|o| o.keys().next())
        {
            Some(s) if s == "unit" => Some(unit.token.as_str()),
            Some(s) if s == "sms_gateway" => Some(SMS_TOKEN),
            Some(_) => Some(op.as_str()),
            None => None,
        };
        // A real incident id would do too; an unknown one is refused after
        // the body is read, and the body is what is checked here.
        let path = path.replace("{id}", &"0".repeat(32));
        let statuses = documented(&doc, "post", item_path(&paths, &path));
        for (content_type, body, status, code) in [
            ("text/plain", b"{}".to_vec(), 415, "unsupported_media_type"),
            (
                "application/json",
                vec![b' '; 2 * 1024 * 1024 + 1],
                413,
                "too_large",
            ),
            (
                "application/json",
                br#"{"not": "a field"}"#.to_vec(),
                400,
                "bad_json",
            ),
        ] {
            let (s, v) = send(&c, Method::POST, &path, token, Some(content_type), body).await;
            assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{path}");
            assert!(statuses.contains(&s), "{path}: {s} undocumented");
        }
        tried += 1;
    }
    assert!(tried >= 10, "only {tried} JSON operations");

    // A byte field one character over its documented maxLength: refused
    // before it is decoded, saying so.
    let max = panic["maxLength"].as_u64().unwrap() as usize;
    let (s, v) = send(
        &c,
        Method::POST,
        "/v1/panic",
        None,
        Some("application/json"),
        json!({ "panic": "A".repeat(max + 4) })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("too_long")), "{v}");
}

/// The key of `paths` a concrete path was made from.
fn item_path<'a>(paths: &'a serde_json::Map<String, Value>, concrete: &str) -> &'a str {
    paths
        .keys()
        .find(|k| k.replace("{id}", &"0".repeat(32)) == concrete)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_over_the_documented_maximum_is_refused_and_changes_nothing() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let doc = document(&c).await;
    let param = doc["paths"]["/v1/operator/incidents"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(param["in"], "query");
    assert_eq!(param["schema"]["minimum"], 1);
    assert_eq!(param["schema"]["maximum"], 1000);

    let list = |q: &'static str| {
        let c = &c;
        let op = op.clone();
        async move {
            send_empty(
                c,
                Method::GET,
                &format!("/v1/operator/incidents{q}"),
                Some(&op),
            )
            .await
        }
    };
    for q in [
        "?limit=1001",
        "?limit=0",
        "?limit=4294967295",
        "?limit=-1",
        "?limit=x",
    ] {
        let (s, v) = list(q).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            matches!(v["error"].as_str(), Some("bad_limit" | "bad_query")),
            "{q}: {v}"
        );
    }
    let (s, v) = list("?limit=1001").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_limit")));
    assert!(v["message"].as_str().unwrap().contains("1000"), "{v}");
    // A log index the document's int64 cannot hold: refused as it says.
    let (s, v) = send_empty(
        &c,
        Method::GET,
        "/v1/log/proof?index=9223372036854775808&size=9223372036854775808",
        None,
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_query")), "{v}");
    for q in ["", "?limit=1", "?limit=1000"] {
        let (s, v) = list(q).await;
        assert_eq!(s, 200, "{q}: {v}");
        assert!(v.is_array());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_a_live_session_is_refused_and_ends_nothing() {
    let (c, op) = Cluster::with_operator(Options::default()).await;
    let other = c.operator().await;
    let unit = c.unit(&op, "PCR Kunhadi", "police", 25.19, 75.83).await;
    let doc = document(&c).await;
    assert!(documented(&doc, "post", "/v1/operator/logout").contains(&401));
    let logout = |token: Option<String>| {
        let c = &c;
        async move { send_empty(c, Method::POST, "/v1/operator/logout", token.as_deref()).await }
    };
    let incidents = |token: String| {
        let c = &c;
        async move {
            send_empty(c, Method::GET, "/v1/operator/incidents", Some(&token))
                .await
                .0
        }
    };
    // No token, a made-up one, a unit's: 401, and the session still works.
    for token in [None, Some("0".repeat(64)), Some(unit.token.clone())] {
        let (s, v) = logout(token.clone()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("unauthorized")),
            "{token:?}"
        );
        assert_eq!(incidents(op.clone()).await, 200);
    }
    // The session's own token: 204, and the session is gone.
    let (s, _) = logout(Some(op.clone())).await;
    assert_eq!(s, 204);
    assert_eq!(incidents(op.clone()).await, 401);
    // Again: there is no session left to end.
    let (s, _) = logout(Some(op.clone())).await;
    assert_eq!(s, 401);
    // The other session is untouched by all of it.
    assert_eq!(incidents(other).await, 200);
}

//! The trustee's OpenAPI document (`GET /openapi.json`), served by the real
//! binary: it describes every route, keeps the promises every served document
//! keeps (`sosvault_service::openapi::check_document`), and the service
//! answers as it says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::openapi_doc::documented;
use common::*;
use serde_json::{Value, json};
use sosvault_service::openapi::{Promises, check_document};
// The write endpoints: the control room's, over TLS only with its client
// certificate (the gate's own list).
use sosvault_trustee::gate::WRITE_PATHS as WRITES;

fn document(r: &Running) -> Value {
    let (status, doc) = r.get("/openapi.json");
    assert_eq!(status, 200);
    doc
}

#[test]
fn the_document_describes_every_route_and_keeps_its_promises() {
    let (_, _t, r) = TrusteeDir::serving("openapi-office");
    let doc = document(&r);

    let mut ops: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    ops.sort();
    let mut expected = vec![
        "GET /healthz",
        "GET /v1/health",
        "GET /v1/identity",
        "POST /v1/shares",
        "POST /v1/releases",
        "POST /v1/shreds",
        "POST /v1/cancels",
        "POST /v1/commits",
        "GET /v1/log/head",
        "GET /v1/log/entries",
        "GET /v1/log/proof/inclusion",
        "GET /v1/log/proof/consistency",
        "POST /v1/log/mine",
        "GET /v1/log/checkpoint",
        "POST /v1/log/cosignatures",
        "POST /v1/witness/add-checkpoint",
    ];
    expected.sort();
    assert_eq!(ops, expected);

    // Every operation sits behind the request timeout: 408 is documented
    // everywhere, with the JSON error body the layer's answer carries.
    let problems = check_document(
        &doc,
        Promises {
            every_operation: &["408"],
        },
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The byte fields say what they carry and how long they may be.
    let delivery = &doc["components"]["schemas"]["SharesRequest"]["properties"]["delivery"];
    assert_eq!(delivery["format"], "byte");
    assert_eq!(delivery["contentEncoding"], "base64");
    assert_eq!(
        delivery["maxLength"],
        sosvault_service::openapi::base64_len(sosvault::ShareDelivery::MAX_LEN)
    );
    // The write endpoints name the control room's client certificate their
    // gate asks for over TLS (and document its 401).
    assert_eq!(
        doc["components"]["securitySchemes"]["control_room"]["type"],
        "mutualTLS"
    );
    for path in WRITES {
        assert_eq!(
            doc["paths"][path]["post"]["security"],
            json!([{"control_room": []}]),
            "{path}"
        );
    }
    // The witness's add-checkpoint takes C2SP's text, within its limit, and
    // says how each answer comes: the cosignature line as text, the 409 as
    // tlog-witness's `text/x.tlog.size`; it asks for no credentials.
    let add = &doc["paths"]["/v1/witness/add-checkpoint"]["post"];
    let body = &add["requestBody"]["content"]["text/plain"];
    assert_eq!(
        body["schema"]["maxLength"],
        sosvault::checkpoint::MAX_REQUEST_BYTES
    );
    assert!(body["example"].as_str().unwrap().starts_with("old 0\n\n"));
    assert!(add["responses"]["200"]["content"]["text/plain"].is_object());
    assert!(add["responses"]["409"]["content"]["text/x.tlog.size"].is_object());
    assert!(add.get("security").is_none());
    assert!(
        doc["paths"]["/v1/log/checkpoint"]["get"]["responses"]["200"]["content"]["text/plain"]
            .is_object()
    );
    // The auditor's token is optional on the entries (leaf hashes for
    // anyone); the scheme has the name the dispatch service gives its
    // reader's credential too (the routes are shared: `logapi`).
    assert_eq!(
        doc["paths"]["/v1/log/entries"]["get"]["security"],
        json!([{}, {"log_reader": []}])
    );
}

#[test]
fn the_layers_answers_are_the_documented_ones() {
    let (_, _t, r) = TrusteeDir::serving("openapi-layers");
    let doc = document(&r);
    let size = r.log_size();

    // Every write, and the student's log query (a read, by POST).
    for path in WRITES.into_iter().chain(["/v1/log/mine"]) {
        let statuses = documented(&doc, "post", path);
        // Another content type: 415, before the body is read.
        let (s, v) = r.post_raw(path, "text/plain", b"{}".to_vec());
        assert_eq!(
            (s, v["error"].as_str()),
            (415, Some("unsupported_media_type"))
        );
        assert!(statuses.contains(&s), "{path}: {s} is not documented");
        // Over the body limit (64 KiB by default): 413.
        let (s, v) = r.post_raw(path, "application/json", vec![b' '; 70_000]);
        assert_eq!((s, v["error"].as_str()), (413, Some("too_large")));
        assert!(statuses.contains(&s), "{path}: {s} is not documented");
        // Not the documented JSON: 400.
        let (s, v) = r.post(path, json!({"other": "AAAA"}));
        assert_eq!((s, v["error"].as_str()), (400, Some("bad_json")));
        assert!(statuses.contains(&s), "{path}: {s} is not documented");
        // A byte field one character over its documented maxLength: refused
        // before it is decoded, saying so.
        let schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let props = doc["components"]["schemas"][&schema]["properties"]
            .as_object()
            .unwrap();
        let (field, spec) = props.iter().next().unwrap();
        let max = spec["maxLength"].as_u64().unwrap() as usize;
        let too_long = "A".repeat(max + 4);
        let (s, v) = r.post(path, json!({ field: too_long }));
        assert_eq!((s, v["error"].as_str()), (400, Some("too_long")), "{path}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("longer than its limit"),
            "{path}: {v}"
        );
    }
    // The witness's text body: junk is the documented 400, a body over its
    // limit the documented 413, whatever the content type; the example the
    // document gives is a valid request for a log this trustee does not
    // witness (404). None of it is a leaf.
    let add_statuses = documented(&doc, "post", "/v1/witness/add-checkpoint");
    let example =
        doc["paths"]["/v1/witness/add-checkpoint"]["post"]["requestBody"]["content"]["text/plain"]
            ["example"]
            .as_str()
            .unwrap()
            .to_owned();
    for (ct, body, want) in [
        ("text/plain", b"old 0\n\njunk".to_vec(), 400),
        ("application/json", b"{}".to_vec(), 400),
        (
            "text/plain",
            vec![b'x'; sosvault::checkpoint::MAX_REQUEST_BYTES + 1],
            413,
        ),
        ("text/plain", example.into_bytes(), 404),
    ] {
        let (s, v) = r.post_raw("/v1/witness/add-checkpoint", ct, body);
        assert_eq!(s, want, "{v}");
        assert!(add_statuses.contains(&s), "{s} is not documented");
    }
    // An unknown field whose name is long and not ASCII: the message quoting
    // it is cut at a character boundary (it once panicked the handler, and
    // the client saw the connection close without an answer).
    let key = format!("a{}", "é".repeat(400));
    let (s, v) = r.post("/v1/shares", json!({ key: 1 }));
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_json")), "{v}");
    // None of it reached the log.
    assert_eq!(r.log_size(), size);

    // A method a route does not take: 405, JSON, and the Allow header says
    // which it does take.
    let resp = r.http.get(format!("{}/v1/shares", r.url)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST"), "{allow}");
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"], "method_not_allowed");

    // A query string that does not parse: the documented 400.
    let (s, v) = r.get("/v1/log/entries?start=x&end=1");
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_query")));
    assert!(documented(&doc, "get", "/v1/log/entries").contains(&s));
    // An index the document's int64 cannot hold: refused as it says.
    for q in [
        "/v1/log/entries?start=9223372036854775808&end=9223372036854775808",
        "/v1/log/proof/inclusion?index=0&size=9223372036854775808",
        "/v1/log/proof/consistency?old=1&new=18446744073709551615",
    ] {
        let (s, v) = r.get(q);
        assert_eq!((s, v["error"].as_str()), (400, Some("bad_query")), "{q}");
        assert!(v["message"].as_str().unwrap().contains("int64"), "{q}: {v}");
    }
    // A token that is not an auditor's: the documented 401.
    let resp = r
        .http
        .get(format!("{}/v1/log/entries?start=0&end=1", r.url))
        .bearer_auth("not-a-token")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(documented(&doc, "get", "/v1/log/entries").contains(&401));
}

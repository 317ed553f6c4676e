//! The OpenAPI documents of both services: what they share.
//!
//! Each service generates its document from its handlers' annotations
//! (utoipa) and serves it at `GET /openapi.json`. Three things are the same
//! for both and live here:
//!
//! - [`base64_field`]: the schema of a field that carries bytes. It says its
//!   encoding (`format: byte`, `contentEncoding: base64`) and its size limit
//!   (`maxLength`, the base64 length of the largest message the field may
//!   hold), so a client or a fuzzer knows both without reading prose.
//! - [`document_layer_answers`]: the answers that do not come from a handler
//!   but from an extractor or a layer in front of it (a body that is not
//!   JSON, too large or of another type; a query string that does not parse;
//!   missing credentials; a timeout), added to every operation that such a
//!   layer guards. A handler's own annotation may describe any of them more
//!   precisely; this only fills in what it left out.
//! - [`check_document`]: the promises every served document keeps, for each
//!   service's tests to walk its own document with, so a handler that
//!   forgets one cannot land.

use serde_json::Value;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Array, Object, OpenApi, Ref, RefOr, ResponseBuilder};

/// The document as served at `GET /openapi.json`: its JSON, with the link
/// objects' keys spelled as OpenAPI spells them. utoipa 5.5 serializes a
/// [`utoipa::openapi::link::Link`] with its Rust field names
/// (`operation_id`, `operation_ref`, `request_body`), which no OpenAPI tool
/// reads; they are renamed here (`operationId`, `operationRef`,
/// `requestBody`). [`check_document`] refuses a link without them.
pub fn served(doc: &OpenApi) -> Vec<u8> {
    let mut v = match serde_json::to_value(doc) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    fix_links(&mut v);
    serde_json::to_vec(&v).unwrap_or_default()
}

fn fix_links(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(links)) = o.get_mut("links") {
                links
                    .values_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(camel_case_link);
            }
            o.values_mut().for_each(fix_links);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// One link's fields under OpenAPI's names (utoipa writes them in snake case).
fn camel_case_link(link: &mut serde_json::Map<String, Value>) {
    for (from, to) in [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ] {
        if let Some(x) = link.remove(from) {
            link.insert(to.to_owned(), x);
        }
    }
}

/// What a service's OpenAPI document says of itself, as a utoipa modifier
/// (`#[openapi(modifiers(&HEADING))]`): its title and description, its
/// tags (name, what they group) and its bearer-token schemes (name, what
/// the token is).
#[derive(Debug)]
pub struct Heading {
    /// The document's title.
    pub title: &'static str,
    /// What the service does.
    pub description: &'static str,
    /// The operations' tags, in order.
    pub tags: &'static [(&'static str, &'static str)],
    /// The bearer-token security schemes ([`add_bearer`]).
    pub bearers: &'static [(&'static str, &'static str)],
}

impl utoipa::Modify for Heading {
    fn modify(&self, doc: &mut OpenApi) {
        use utoipa::openapi::tag::TagBuilder;
        doc.info.title = self.title.to_owned();
        doc.info.description = Some(self.description.to_owned());
        let tags = self.tags.iter().map(|(name, what)| {
            TagBuilder::new()
                .name(*name)
                .description(Some(*what))
                .build()
        });
        doc.tags = Some(tags.collect());
        for (name, what) in self.bearers {
            add_bearer(doc, name, what);
        }
    }
}

/// Documents a bearer-token security scheme `name` (what the token is, in
/// `description`) in `doc`'s components.
pub fn add_bearer(doc: &mut OpenApi, name: &str, description: &str) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(description))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(name, SecurityScheme::Http(scheme));
}

/// Deserializes a `u64` field (a query parameter: a log index or size) as
/// the document states it: utoipa documents a `u64` as `format: int64`,
/// `minimum: 0`, so a value above `i64::MAX` is refused like any other value
/// outside its schema (`#[serde(deserialize_with = "...::int64")]`).
pub fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = <u64 as serde::Deserialize>::deserialize(d)?;
    if i64::try_from(v).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{v} is above the largest int64 ({})",
            i64::MAX
        )));
    }
    Ok(v)
}

/// The length of the standard padded base64 encoding of `bytes` bytes.
pub const fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// The schema of a string field carrying at most `max_bytes` bytes in
/// standard padded base64: `format: byte`, `contentEncoding: base64`,
/// `maxLength` = [`base64_len`]`(max_bytes)`.
pub fn base64_field(max_bytes: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Byte)))
        .content_encoding("base64")
        .max_length(Some(base64_len(max_bytes)))
        .description(Some(description))
        .build()
}

/// Declares one schema function per byte field (utoipa's `schema_with`
/// takes a function): `[vis] name: max_bytes, "description";` becomes
/// `fn name() -> Object { base64_field(max_bytes, "description") }`.
#[macro_export]
macro_rules! base64_fields {
    ($($vis:vis $name:ident: $max:expr, $description:expr;)*) => {
        $(
            #[doc = $description]
            $vis fn $name() -> ::utoipa::openapi::Object {
                $crate::openapi::base64_field($max, $description)
            }
        )*
    };
}

/// Declares an endpoint's refusals as one type for its OpenAPI document
/// (`responses((status = 200, ...), Name)`), the way [`crate::logquery::MineRefusals`]
/// reads: a variant per status, each answered with the JSON error body
/// ([`crate::http::ErrorBody`]) and described by the words after it (the
/// codes of that status, and when each is answered).
///
/// ```
/// use utoipa::IntoResponses as _;
///
/// sosvault_service::refusals! {
///     /// What `POST /v1/example` refuses.
///     pub ExampleRefusals {
///         400 Malformed: "`malformed`: the body does not decode",
///         409 Replayed: "`replayed`: answered before",
///     }
/// }
/// let answers = ExampleRefusals::responses();
/// assert_eq!(answers.keys().collect::<Vec<_>>(), ["400", "409"]);
/// ```
#[macro_export]
macro_rules! refusals {
    ($(#[$doc:meta])* $vis:vis $name:ident { $($status:literal $variant:ident: $description:literal,)+ }) => {
        $(#[$doc])*
        #[derive(::utoipa::IntoResponses)]
        $vis enum $name {
            $(
                #[doc = $description]
                #[response(status = $status)]
                $variant($crate::http::ErrorBody),
            )+
        }
    };
}

/// The schema of a list of at most `max_items` such fields, each of at most
/// `max_bytes` bytes: `items` is a [`base64_field`].
pub fn base64_list(max_bytes: usize, max_items: usize, description: &str) -> Array {
    ArrayBuilder::new()
        .items(base64_field(max_bytes, "One item, standard padded base64."))
        .max_items(Some(max_items))
        .description(Some(description))
        .build()
}

/// Which layers stand in front of a service's handlers, beyond the extractors
/// every operation's shape already tells about.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layers {
    /// A timeout layer answers 408 on every operation.
    pub timeout: bool,
}

/// Adds to every operation the answers its extractors and the service's
/// layers can give, where its annotation did not document them already:
///
/// - a request body: 400 (not the documented JSON or text), 413 (over the
///   body limit), and for a JSON body 415 (not `application/json`);
/// - query parameters: 400 (missing or not valid);
/// - a security requirement: 401 (missing or invalid credentials; for an
///   optional one, credentials that were given and are not valid);
/// - [`Layers::timeout`]: 408 on every operation.
///
/// Each answer's body is `error_schema` (a component name).
pub fn document_layer_answers(doc: &mut OpenApi, error_schema: &str, layers: Layers) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            for (status, description) in layer_answers(op, layers) {
                if !op.responses.responses.contains_key(status) {
                    let response = ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(RefOr::Ref(Ref::from_schema_name(error_schema))))
                                .build(),
                        )
                        .build();
                    op.responses
                        .responses
                        .insert(status.to_owned(), RefOr::T(response));
                }
            }
        }
    }
}

fn layer_answers(op: &Operation, layers: Layers) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if let Some(body) = &op.request_body {
        out.push((
            "400",
            "`bad_json` / `malformed`: the body is not the documented JSON, or a field is not valid",
        ));
        out.push((
            "413",
            "the body is larger than the service's body limit (answered before it is read)",
        ));
        // A text body (a C2SP protocol's) is read whatever its type says.
        if body.content.contains_key("application/json") {
            out.push(("415", "the body is not `application/json`"));
        }
    }
    let has_query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query));
    if has_query {
        out.push(("400", "a query parameter is missing or not valid"));
    }
    let secured = op.security.as_ref().is_some_and(|reqs| {
        reqs.iter().any(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_object().map(|o| !o.is_empty()))
                .unwrap_or(false)
        })
    });
    if secured {
        out.push(("401", "missing or invalid credentials"));
    }
    if layers.timeout {
        out.push(("408", "the request took longer than the service's timeout"));
    }
    out
}

/// What an operation must document whatever it does (for example 408 behind
/// a timeout layer): passed to [`check_document`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Promises<'a> {
    /// Statuses every operation documents.
    pub every_operation: &'a [&'a str],
}

/// Walks a served OpenAPI document and lists every promise it breaks (empty
/// when it keeps them all):
///
/// - every operation documents at least one answer, and every answer is a
///   three-digit status;
/// - an operation with a request body takes `application/json` (and documents
///   400, 413 and 415) or `text/plain` (a C2SP protocol's text, read whatever
///   its content type: 400 and 413);
/// - an operation with query parameters documents 400, and every path
///   parameter is in its path;
/// - an operation with a security requirement documents 401, and the
///   requirement names a scheme in `components.securitySchemes`;
/// - every string field of `format: byte` has `contentEncoding: base64` and
///   a `maxLength`, and every field whose description says it is base64 has
///   `format: byte` (or is an array whose items do);
/// - an integer query parameter whose description states a maximum ("at
///   most N") documents `maximum: N`;
/// - every response link names an operation of the document by its
///   `operationId` (or an `operationRef`);
/// - every operation documents each of `promises.every_operation`.
pub fn check_document(doc: &Value, promises: Promises<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return vec!["the document has no paths".into()];
    };
    let operation_ids: Vec<&str> = paths
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter_map(|op| op.get("operationId").and_then(Value::as_str))
        .collect();
    check_links("", doc, &operation_ids, &mut problems);
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object);
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            problems.push(format!("{path}: not an object"));
            continue;
        };
        for (method, op) in item {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            check_operation(&at, op, schemes, promises, &mut problems);
        }
    }
    walk_schema("", doc, &mut problems);
    problems
}

/// Every `links` map under `v`: each link names an operation.
fn check_links(at: &str, v: &Value, operation_ids: &[&str], problems: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(links) = o.get("links").and_then(Value::as_object) {
                for (name, link) in links {
                    check_link(&format!("{at}/links/{name}"), link, operation_ids, problems);
                }
            }
            for (k, child) in o {
                check_links(&format!("{at}/{k}"), child, operation_ids, problems);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                check_links(&format!("{at}/{i}"), child, operation_ids, problems);
            }
        }
        _ => {}
    }
}

/// The link at `at` names an operation: an `operationId` the document has,
/// or an `operationRef`.
fn check_link(at: &str, link: &Value, operation_ids: &[&str], problems: &mut Vec<String>) {
    let id = link.get("operationId").and_then(Value::as_str);
    let by_ref = link.get("operationRef").and_then(Value::as_str).is_some();
    match id {
        Some(id) if !operation_ids.contains(&id) => {
            problems.push(format!("{at}: operationId {id:?} names no operation"));
        }
        None if !by_ref => problems.push(format!("{at}: neither operationId nor operationRef")),
        _ => {}
    }
}

fn check_operation(
    at: &str,
    op: &Value,
    schemes: Option<&serde_json::Map<String, Value>>,
    promises: Promises<'_>,
    problems: &mut Vec<String>,
) {
    let statuses: Vec<&str> = op
        .get("responses")
        .and_then(Value::as_object)
        .map(|r| r.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if statuses.is_empty() {
        problems.push(format!("{at}: documents no answer"));
    }
    for s in &statuses {
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            problems.push(format!("{at}: answer {s:?} is not a status"));
        }
    }
    let mut must: Vec<(&str, &str)> = promises
        .every_operation
        .iter()
        .map(|s| (*s, "every operation"))
        .collect();
    if let Some(body) = op.get("requestBody") {
        let json = body.pointer("/content/application~1json").is_some();
        if !json && body.pointer("/content/text~1plain").is_none() {
            problems.push(format!(
                "{at}: its body is neither application/json nor text/plain"
            ));
        }
        must.extend([
            ("400", "it takes a body that may not parse"),
            ("413", "it takes a body (the body limit)"),
        ]);
        if json {
            must.push(("415", "it takes a JSON body (the content type)"));
        }
    }
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if params.iter().any(|p| p["in"] == "query") {
        must.push(("400", "it takes query parameters"));
    }
    for p in params {
        check_parameter(at, p, problems);
    }
    let path = at.split_once(' ').map_or(at, |(_, p)| p);
    for p in params.iter().filter(|p| p["in"] == "path") {
        let name = p["name"].as_str().unwrap_or("?");
        if !path.contains(&format!("{{{name}}}")) {
            problems.push(format!(
                "{at}: path parameter {name:?} is not in the path (a query parameter documented as a path one?)"
            ));
        }
    }
    let security = op
        .get("security")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut secured = false;
    for req in security {
        for name in req.as_object().into_iter().flat_map(|o| o.keys()) {
            secured = true;
            if !schemes.is_some_and(|s| s.contains_key(name)) {
                problems.push(format!("{at}: security scheme {name:?} is not defined"));
            }
        }
    }
    if secured {
        must.push(("401", "it takes credentials"));
    }
    for (status, why) in must {
        if !statuses.contains(&status) {
            problems.push(format!("{at}: does not document {status} ({why})"));
        }
    }
}

fn check_parameter(at: &str, p: &Value, problems: &mut Vec<String>) {
    let name = p["name"].as_str().unwrap_or("?");
    let schema = &p["schema"];
    let integer = schema["type"] == "integer"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "integer"));
    let Some(description) = p["description"].as_str() else {
        return;
    };
    if let Some(n) = stated_maximum(description)
        && integer
        && schema["maximum"].as_f64() != Some(n as f64)
    {
        problems.push(format!(
            "{at}: parameter {name:?} says at most {n} but its schema's maximum is {}",
            schema["maximum"]
        ));
    }
}

/// The N of "at most N" in a description, if any.
fn stated_maximum(description: &str) -> Option<u64> {
    let rest = &description[description.find("at most ")? + "at most ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Checks every schema object under `v` (components and inline alike).
fn walk_schema(at: &str, v: &Value, problems: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            check_schema(at, o, problems);
            for (k, child) in o {
                walk_schema(&format!("{at}/{k}"), child, problems);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk_schema(&format!("{at}/{i}"), child, problems);
            }
        }
        _ => {}
    }
}

fn check_schema(at: &str, o: &serde_json::Map<String, Value>, problems: &mut Vec<String>) {
    let is_byte = o.get("format").and_then(Value::as_str) == Some("byte");
    if is_byte {
        if o.get("contentEncoding").and_then(Value::as_str) != Some("base64") {
            problems.push(format!("{at}: format byte without contentEncoding base64"));
        }
        if o.get("maxLength").and_then(Value::as_u64).is_none() {
            problems.push(format!("{at}: a byte field without maxLength"));
        }
    }
    // Only schemas describe fields: an operation's description is prose.
    let is_schema = o.contains_key("type") || o.contains_key("$ref") || o.contains_key("oneOf");
    let says_base64 = o
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.to_ascii_lowercase().contains("base64"));
    if is_schema && says_base64 && !is_byte {
        let items_byte = o
            .get("items")
            .and_then(|i| i.get("format"))
            .and_then(Value::as_str)
            == Some("byte");
        if !items_byte {
            problems.push(format!(
                "{at}: described as base64 but not `format: byte` (nor an array of such)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::{
        Layers, Promises, ResponseBuilder, Value, base64_field, base64_len, check_document,
        document_layer_answers, int64, served,
    };

    #[test]
    fn int64_fields_refuse_what_int64_cannot_hold() {
        #[derive(serde::Deserialize)]
        struct Q {
            #[serde(deserialize_with = "int64")]
            n: u64,
        }
        let q = |s: &str| serde_json::from_str::<Q>(s).map(|q| q.n);
        assert_eq!(q(r#"{"n": 0}"#).unwrap(), 0);
        assert_eq!(
            q(r#"{"n": 9223372036854775807}"#).unwrap(),
            9_223_372_036_854_775_807
        );
        assert!(q(r#"{"n": 9223372036854775808}"#).is_err());
        assert!(q(r#"{"n": -1}"#).is_err());
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len(0), 0);
        assert_eq!(base64_len(1), 4);
        assert_eq!(base64_len(3), 4);
        assert_eq!(base64_len(4), 8);
        assert_eq!(base64_len(32), 44);
    }

    #[test]
    fn a_document_that_keeps_its_promises_passes() {
        let byte = serde_json::to_value(base64_field(32, "Base64 of a hash.")).unwrap();
        let doc = json!({
            "paths": {
                "/v1/things": {
                    "post": {
                        "requestBody": {"content": {"application/json": {"schema": {
                            "type": "object", "properties": {"thing": byte}}}}},
                        "security": [{"token": []}],
                        "operationId": "add",
                        "responses": {"200": {"links": {"again": {"operationId": "add"}}},
                            "400": {}, "401": {}, "408": {}, "413": {}, "415": {}}
                    },
                    "get": {
                        "parameters": [{"name": "limit", "in": "query",
                            "description": "at most 1000",
                            "schema": {"type": "integer", "maximum": 1000}}],
                        "security": [{}, {"token": []}],
                        "responses": {"200": {}, "400": {}, "401": {}, "408": {}}
                    },
                    "put": {
                        "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        "responses": {"200": {}, "400": {}, "408": {}, "413": {}}
                    }
                }
            },
            "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}}
        });
        let promises = Promises {
            every_operation: &["408"],
        };
        assert_eq!(check_document(&doc, promises), Vec::<String>::new());
    }

    #[test]
    fn every_broken_promise_is_named() {
        let doc = json!({
            "paths": {
                "/v1/things": {
                    "put": {
                        "requestBody": {"content": {"application/xml": {}}},
                        "responses": {"200": {}, "400": {}, "408": {}, "413": {}}
                    },
                    "post": {
                        "requestBody": {"content": {"application/json": {"schema": {
                            "type": "object", "properties": {
                                "thing": {"type": "string", "description": "Base64 of it."},
                                "other": {"type": "string", "format": "byte"}}}}}},
                        "security": [{"nobody": []}],
                        "responses": {"200": {"links": {
                            "gone": {"operationId": "nowhere"},
                            "snake": {"operation_id": "x"}}}, "default": {}}
                    },
                    "get": {
                        "parameters": [{"name": "limit", "in": "query",
                            "description": "at most 1000", "schema": {"type": "integer"}},
                            {"name": "size", "in": "path", "schema": {"type": "integer"}}],
                        "responses": {}
                    }
                }
            }
        });
        let problems = check_document(
            &doc,
            Promises {
                every_operation: &["408"],
            },
        );
        let text = problems.join("\n");
        for needle in [
            "POST /v1/things: answer \"default\" is not a status",
            "PUT /v1/things: its body is neither application/json nor text/plain",
            "POST /v1/things: does not document 400",
            "POST /v1/things: does not document 413",
            "POST /v1/things: does not document 415",
            "POST /v1/things: does not document 401",
            "POST /v1/things: does not document 408",
            "security scheme \"nobody\" is not defined",
            "GET /v1/things: documents no answer",
            "GET /v1/things: does not document 400",
            "parameter \"limit\" says at most 1000",
            "GET /v1/things: path parameter \"size\" is not in the path",
            "thing: described as base64 but not `format: byte`",
            "other: format byte without contentEncoding base64",
            "other: a byte field without maxLength",
            "links/gone: operationId \"nowhere\" names no operation",
            "links/snake: neither operationId nor operationRef",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    #[test]
    fn links_are_served_as_openapi_spells_them() {
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
        use utoipa::openapi::{OpenApiBuilder, PathsBuilder};

        let op = OperationBuilder::new()
            .operation_id(Some("list"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("the list")
                    .link("first", LinkBuilder::new().operation_id("list").build()),
            )
            .build();
        let doc = OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/v1/x", PathItem::new(HttpMethod::Get, op))
                    .build(),
            )
            .build();
        let v: Value = serde_json::from_slice(&served(&doc)).unwrap();
        let link = &v["paths"]["/v1/x"]["get"]["responses"]["200"]["links"]["first"];
        assert_eq!(link, &serde_json::json!({"operationId": "list"}));
        assert!(check_document(&v, Promises::default()).is_empty());
    }

    #[test]
    fn layer_answers_are_added_only_where_missing() {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::{OpenApiBuilder, PathsBuilder};

        let body = |ct: &str| {
            RequestBodyBuilder::new()
                .content(ct, utoipa::openapi::ContentBuilder::new().build())
                .build()
        };
        let op = OperationBuilder::new()
            .request_body(Some(body("application/json")))
            .response("400", ResponseBuilder::new().description("ours"))
            .build();
        // A text body (a C2SP protocol's) is read whatever its type: no 415.
        let text = OperationBuilder::new()
            .request_body(Some(body("text/plain")))
            .build();
        let mut doc = OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/v1/x", PathItem::new(HttpMethod::Post, op))
                    .path("/v1/text", PathItem::new(HttpMethod::Post, text))
                    .build(),
            )
            .build();
        document_layer_answers(&mut doc, "ErrorBody", Layers { timeout: true });
        let v = serde_json::to_value(&doc).unwrap();
        let r = &v["paths"]["/v1/x"]["post"]["responses"];
        assert_eq!(r["400"]["description"], "ours");
        for s in ["408", "413", "415"] {
            assert_eq!(
                r[s]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody"
            );
        }
        assert!(r.get("401").is_none());
        let t = &v["paths"]["/v1/text"]["post"]["responses"];
        assert!(t.get("400").is_some() && t.get("413").is_some());
        assert!(t.get("415").is_none());
    }
}

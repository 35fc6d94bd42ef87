//! The committed OpenAPI document (`shared/openapi.json`, served at `/openapi.json`): it is
//! OpenAPI 3.1, every example in it validates against its schema, and what `shared::http::service`
//! answers against the local stack validates against the schema documented for its path and
//! status. The live test needs `bash scripts/stack up --detach --no-demo`.

use std::collections::BTreeSet;

use lambda_http::Request;
use serde_json::{json, Value};
use shared::domain::ingest::ObjectChange;
use shared::http::{OPENAPI_JSON, PARAMETERS};
use tests::{apigw_request, call, fixture_image, ingestor, put, searcher, with_query, Reply, Sandbox, REQUEST_ID};

const DIM: usize = 64;
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Follows local `$ref`s (`#/components/...`) to the object they name.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else { return value };
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs: {reference}"));
        value = doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    panic!("a $ref cycle at {value}")
}

/// A draft 2020-12 validator (formats checked) for a schema of the document: the schema is the
/// root, with the document's `components` alongside so its `$ref`s resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.as_object().unwrap_or_else(|| panic!("a schema object: {schema}")).clone();
    root.insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&Value::Object(root))
        .unwrap_or_else(|e| panic!("the schema {schema} compiles: {e}"))
}

/// Every validation error of `instance`, with where it is.
fn violations(doc: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    validator(doc, schema).iter_errors(instance).map(|e| format!("{e} (at {:?})", e.instance_path.as_str())).collect()
}

/// An example value and the schema it illustrates.
struct Example {
    at: String,
    schema: Value,
    value: Value,
}

/// Examples of a media type, parameter or header object (`schema` with `example`/`examples`).
fn media_examples(doc: &Value, at: &str, media: &Value, out: &mut Vec<Example>) {
    if let Some(content) = media.get("content").and_then(Value::as_object) {
        for (media_type, inner) in content {
            media_examples(doc, &format!("{at}/content/{media_type}"), resolve(doc, inner), out);
        }
    }
    let Some(schema) = media.get("schema") else { return };
    let schema = schema.clone();
    if let Some(value) = media.get("example") {
        out.push(Example { at: format!("{at}/example"), schema: schema.clone(), value: value.clone() });
    }
    for (name, example) in media.get("examples").and_then(Value::as_object).into_iter().flatten() {
        let example = resolve(doc, example);
        let value = example.get("value").unwrap_or_else(|| panic!("{at}/examples/{name} has a value"));
        out.push(Example { at: format!("{at}/examples/{name}"), schema: schema.clone(), value: value.clone() });
    }
    schema_examples(&format!("{at}/schema"), &schema, out);
}

/// JSON Schema's own `examples` (and OpenAPI's `example`) on a schema and its subschemas.
fn schema_examples(at: &str, schema: &Value, out: &mut Vec<Example>) {
    let Some(object) = schema.as_object() else { return };
    for (i, value) in object.get("examples").and_then(Value::as_array).into_iter().flatten().enumerate() {
        out.push(Example { at: format!("{at}/examples/{i}"), schema: schema.clone(), value: value.clone() });
    }
    if let Some(value) = object.get("example") {
        out.push(Example { at: format!("{at}/example"), schema: schema.clone(), value: value.clone() });
    }
    for keyword in ["properties", "patternProperties", "$defs"] {
        for (name, sub) in object.get(keyword).and_then(Value::as_object).into_iter().flatten() {
            schema_examples(&format!("{at}/{keyword}/{name}"), sub, out);
        }
    }
    for keyword in ["items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"] {
        if let Some(sub) = object.get(keyword) {
            schema_examples(&format!("{at}/{keyword}"), sub, out);
        }
    }
    for keyword in ["oneOf", "anyOf", "allOf", "prefixItems"] {
        for (i, sub) in object.get(keyword).and_then(Value::as_array).into_iter().flatten().enumerate() {
            schema_examples(&format!("{at}/{keyword}/{i}"), sub, out);
        }
    }
}

/// A response's headers and content.
fn response_examples(doc: &Value, at: &str, response: &Value, out: &mut Vec<Example>) {
    for (name, header) in response.get("headers").and_then(Value::as_object).into_iter().flatten() {
        media_examples(doc, &format!("{at}/headers/{name}"), resolve(doc, header), out);
    }
    media_examples(doc, at, response, out);
}

/// Every example in the document: operations (parameters, request bodies, responses) and components.
fn all_examples(doc: &Value) -> Vec<Example> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let item = resolve(doc, item);
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let at = format!("paths/{path}/{method}");
            let shared = item.get("parameters").and_then(Value::as_array).into_iter().flatten();
            let own = operation.get("parameters").and_then(Value::as_array).into_iter().flatten();
            for (i, parameter) in shared.chain(own).enumerate() {
                media_examples(doc, &format!("{at}/parameters/{i}"), resolve(doc, parameter), &mut out);
            }
            if let Some(body) = operation.get("requestBody") {
                media_examples(doc, &format!("{at}/requestBody"), resolve(doc, body), &mut out);
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                response_examples(doc, &format!("{at}/responses/{status}"), resolve(doc, response), &mut out);
            }
        }
    }
    let components = &doc["components"];
    for kind in ["parameters", "headers", "requestBodies"] {
        for (name, object) in components.get(kind).and_then(Value::as_object).into_iter().flatten() {
            media_examples(doc, &format!("components/{kind}/{name}"), resolve(doc, object), &mut out);
        }
    }
    for (name, response) in components.get("responses").and_then(Value::as_object).into_iter().flatten() {
        response_examples(doc, &format!("components/responses/{name}"), resolve(doc, response), &mut out);
    }
    for (name, schema) in components.get("schemas").and_then(Value::as_object).into_iter().flatten() {
        schema_examples(&format!("components/schemas/{name}"), schema, &mut out);
    }
    out
}

/// Every `$ref` string anywhere in the document.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_and_matches_the_api() {
    let committed =
        std::fs::read_to_string(tests::repo_root().join("shared/openapi.json")).expect("shared/openapi.json");
    assert_eq!(committed, OPENAPI_JSON, "the served document is the committed file");
    let doc = document();
    let version = doc["openapi"].as_str().expect("an `openapi` version string");
    let minor = version.strip_prefix("3.1.").unwrap_or_else(|| panic!("OpenAPI 3.1.x, got {version:?}"));
    assert!(!minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()), "OpenAPI 3.1.x, got {version:?}");
    assert!(doc.get("swagger").is_none(), "not Swagger 2");
    if let Some(dialect) = doc.get("jsonSchemaDialect") {
        assert_eq!(dialect, "https://json-schema.org/draft/2020-12/schema", "the default dialect");
    }
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "info: {}", doc["info"]);

    // The paths and methods the API serves.
    let paths: BTreeSet<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(paths, BTreeSet::from(["/", "/openapi.json", "/health", "/search"]));
    for (path, methods) in
        [("/", &["get"][..]), ("/openapi.json", &["get"]), ("/health", &["get"]), ("/search", &["get", "post"])]
    {
        let documented: Vec<&str> = METHODS.into_iter().filter(|m| doc["paths"][path].get(*m).is_some()).collect();
        assert_eq!(documented, methods, "{path}");
    }
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.into_iter().filter(|m| item.get(*m).is_some()) {
            let id = item[method]["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: operationId"));
            assert!(ids.insert(id), "operationId {id} is unique");
            let responses = item[method]["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{method} {path} documents its 200");
            for status in responses.keys() {
                assert!(status.len() == 3 && status.parse::<u16>().is_ok(), "{method} {path}: status {status}");
            }
        }
    }

    // Every $ref resolves inside the document.
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(all_refs.len() > 20, "the document uses $refs: {all_refs:?}");
    for reference in &all_refs {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("a local $ref: {reference}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {reference}");
    }

    // The /search parameters are exactly the ones the API accepts, as query parameters and as JSON body properties.
    let query: Vec<String> = doc["paths"]["/search"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = resolve(&doc, p);
            assert_eq!(p["in"], "query", "{p}");
            p["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(query, PARAMETERS);
    let body = resolve(&doc, &doc["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]);
    let properties: BTreeSet<&str> = body["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(properties, PARAMETERS.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = document();
    let examples = all_examples(&doc);
    assert!(examples.len() >= 60, "the walk finds the document's examples: {}", examples.len());
    for at in [
        "paths//search/get/responses/200/content/application/json/examples/deduplicated",
        "paths//search/post/requestBody/content/application/json/examples/filtered",
        "paths//search/get/parameters/4/example",
        "components/responses/BadRequest/content/application/json/examples/invalid_cursor",
        "paths//health/get/responses/405/headers/Allow/example",
        "paths//openapi.json/get/responses/200/content/application/json/examples/document",
    ] {
        assert!(examples.iter().any(|e| e.at == at), "the walk reaches {at}");
    }
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|e| {
            let errors = violations(&doc, &e.schema, &e.value);
            (!errors.is_empty()).then(|| format!("{}: {}", e.at, errors.join("; ")))
        })
        .collect();
    assert!(failures.is_empty(), "examples that do not match their schema:\n{}", failures.join("\n"));
}

#[test]
fn the_validators_do_resolve_refs_and_check_formats() {
    // So that the tests above and below cannot pass by validating nothing.
    let doc = document();
    let response = json!({"$ref": "#/components/schemas/SearchResponse"});
    let valid = json!({"query": "x", "results": [], "next_cursor": null});
    assert!(violations(&doc, &response, &valid).is_empty());
    let result = json!({
        "key": "a.jpg", "score": 0.5, "url": "https://b.s3.amazonaws.com/a.jpg?X-Amz-Signature=1",
        "expires_at": "2026-11-26T17:15:00Z", "size": 1, "content_type": "image/jpeg",
        "last_modified": null, "width": 1, "height": 1
    });
    assert!(violations(&doc, &response, &json!({"query": "x", "results": [result], "next_cursor": "c"})).is_empty());
    for (what, bad) in [
        ("no next_cursor", json!({"query": "x", "results": []})),
        ("an unknown field", json!({"query": "x", "results": [], "next_cursor": null, "total": 3})),
        ("a result without key", json!({"results": [{"score": 0.5}], "next_cursor": null})),
        ("an invalid date-time", {
            let mut r = result.clone();
            r["expires_at"] = json!("yesterday");
            json!({"results": [r], "next_cursor": null})
        }),
        ("empty duplicates", {
            let mut r = result.clone();
            r["duplicates"] = json!([]);
            json!({"results": [r], "next_cursor": null})
        }),
    ] {
        assert!(!violations(&doc, &response, &bad).is_empty(), "{what} is refused: {bad}");
    }
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(!violations(&doc, &error, &json!({"error": {"code": "oops", "message": "m"}})).is_empty());
    assert!(violations(&doc, &error, &json!({"error": {"code": "invalid_k", "message": "m"}})).is_empty());
    let request = json!({"$ref": "#/components/schemas/SearchRequest"});
    assert!(!violations(&doc, &request, &json!({"q": "x", "similar_to": "a.jpg"})).is_empty(), "not both");
    assert!(!violations(&doc, &request, &json!({"k": 3})).is_empty(), "one of them");
}

/// The schema documented for `method path` answering `status` with `media`.
fn response_schema(doc: &Value, path: &str, method: &str, status: u16, media: &str) -> Value {
    let operation = doc["paths"][path].get(method).unwrap_or_else(|| panic!("{method} {path} is documented"));
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path} documents status {status}"));
    let schema = &resolve(doc, response)["content"][media]["schema"];
    assert!(schema.is_object(), "{method} {path} {status} has a {media} schema");
    schema.clone()
}

fn get(params: &[(&str, &str)]) -> Request {
    apigw_request("v2-get-search.json", |j| with_query(j, params))
}

fn post(body: &str) -> Request {
    apigw_request("v2-post-search.json", |j| j["body"] = json!(body))
}

/// An API Gateway v2 request for `method path` without a query string.
fn request(method: &str, path: &str) -> Request {
    apigw_request("v2-get-health.json", |j| {
        j["rawPath"] = json!(path);
        j["requestContext"]["http"]["path"] = json!(path);
        j["requestContext"]["http"]["method"] = json!(method);
    })
}

/// Asserts that `reply` has `status` and a body valid against the schema of `method path`.
fn check(doc: &Value, reply: &Reply, (method, path): (&str, &str), status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
    let body = reply.json();
    let errors = violations(doc, &response_schema(doc, path, method, status, "application/json"), &body);
    assert!(errors.is_empty(), "{what}: {body}\ndoes not match the {method} {path} {status} schema: {errors:?}");
    body
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn live_responses_validate_against_the_documented_schemas() {
    let doc = document();
    let Sandbox { stack, s3, bucket, index } = Sandbox::new("openapi", DIM).await;
    // Two copies of one picture and three different ones (pairwise below the dedup threshold).
    let objects = [
        ("holiday/beach.jpg", "exif-8.jpg", "image/jpeg"),
        ("holiday/beach (1).jpg", "exif-8.jpg", "image/jpeg"),
        ("holiday/logo.png", "logo-rgba.png", "image/png"),
        ("uploads/rgba.png", "rgba.png", "image/png"),
        ("uploads/tall.jpg", "tall-300x2000.jpg", "image/jpeg"),
    ];
    for (key, file, content_type) in objects {
        put(&s3, &bucket, key, fixture_image(file), content_type).await;
    }
    let changes = objects
        .iter()
        .map(|(key, ..)| ObjectChange::Created {
            bucket: bucket.clone(),
            key: key.to_string(),
            etag: None,
            sequencer: None,
        })
        .collect();
    let report = ingestor(&s3, index.clone()).apply(changes).await.expect("ingest");
    assert_eq!(report.indexed.len(), objects.len(), "{report:?}");
    let searcher = searcher(&s3, index.clone());
    let search = ("get", "/search");

    // 200: paging (next_cursor a string, then null), a v1 request, POST, dedup, similar_to, filters.
    let page1 = check(&doc, &call(&searcher, get(&[("q", "a photo"), ("k", "2")])).await, search, 200, "page 1");
    let cursor = page1["next_cursor"].as_str().expect("a next page").to_string();
    let page2 = check(
        &doc,
        &call(&searcher, get(&[("q", "a photo"), ("k", "2"), ("cursor", &cursor)])).await,
        search,
        200,
        "2",
    );
    let cursor = page2["next_cursor"].as_str().expect("a third page").to_string();
    let page3 = check(
        &doc,
        &call(&searcher, get(&[("q", "a photo"), ("k", "2"), ("cursor", &cursor)])).await,
        search,
        200,
        "3",
    );
    assert!(page3["next_cursor"].is_null() && page3["results"].as_array().unwrap().len() == 1, "{page3}");
    check(&doc, &call(&searcher, apigw_request("v1-get-search.json", |_| {})).await, search, 200, "v1 GET");
    let posted = call(&searcher, post(r#"{"q": "a photo", "k": 100, "min_score": -1, "dedup": false}"#)).await;
    check(&doc, &posted, ("post", "/search"), 200, "POST");
    let deduplicated =
        check(&doc, &call(&searcher, get(&[("q", "a photo"), ("dedup", "true")])).await, search, 200, "dedup");
    let with_duplicates: Vec<&Value> =
        deduplicated["results"].as_array().unwrap().iter().filter(|r| r.get("duplicates").is_some()).collect();
    assert_eq!(with_duplicates.len(), 1, "the copies collapse: {deduplicated}");
    let similar =
        check(&doc, &call(&searcher, get(&[("similar_to", "holiday/beach.jpg")])).await, search, 200, "similar_to");
    assert!(similar.get("query").is_none() && similar["similar_to"] == "holiday/beach.jpg", "{similar}");
    let filtered = get(&[
        ("q", "a photo"),
        ("prefix", "holiday/"),
        ("content_type", "image/jpeg"),
        ("uploaded_after", "2000-01-01T00:00:00Z"),
        ("uploaded_before", "2999-01-01T00:00:00+02:00"),
        ("min_score", "-1"),
        ("dedup", "1"),
        ("k", "1"),
    ]);
    let filtered = check(&doc, &call(&searcher, filtered).await, search, 200, "filters");
    assert_eq!(filtered["results"][0]["duplicates"].as_array().map(Vec::len), Some(1), "{filtered}");
    let empty = check(&doc, &call(&searcher, get(&[("q", "a photo"), ("prefix", "none/")])).await, search, 200, "none");
    assert_eq!(empty["results"], json!([]));

    // 400s, each with an example in the documented BadRequest response.
    let bad_request_examples = &doc["components"]["responses"]["BadRequest"]["content"]["application/json"]["examples"];
    let long = "a".repeat(1001);
    let long_key = "k".repeat(1025);
    let gets: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing_query", vec![("k", "3")]),
        ("empty_query", vec![("q", "  ")]),
        ("query_too_long", vec![("q", &long)]),
        ("conflicting_parameters", vec![("q", "cat"), ("similar_to", "holiday/beach.jpg")]),
        ("invalid_similar_to", vec![("similar_to", &long_key)]),
        ("invalid_k", vec![("q", "cat"), ("k", "0")]),
        ("invalid_min_score", vec![("q", "cat"), ("min_score", "1.5")]),
        ("invalid_prefix", vec![("q", "cat"), ("prefix", &long_key)]),
        ("invalid_content_type", vec![("q", "cat"), ("content_type", "jpeg")]),
        ("invalid_time", vec![("q", "cat"), ("uploaded_after", "yesterday")]),
        (
            "invalid_time_range",
            vec![("q", "cat"), ("uploaded_after", "2024-05-01T00:00:00Z"), ("uploaded_before", "2024-04-01T00:00:00Z")],
        ),
        ("invalid_cursor", vec![("q", "cat"), ("cursor", "garbage")]),
        ("invalid_dedup", vec![("q", "cat"), ("dedup", "yes")]),
        ("unknown_parameter", vec![("q", "cat"), ("limit", "5")]),
    ];
    for (code, params) in gets {
        let body = check(&doc, &call(&searcher, get(&params)).await, search, 400, code);
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(bad_request_examples.get(code).is_some(), "BadRequest has an example for {code}");
    }
    for (code, text) in [("malformed_json", "{\"q\": "), ("malformed_json", "[1]"), ("invalid_query", "{\"q\": 5}")] {
        let body = check(&doc, &call(&searcher, post(text)).await, ("post", "/search"), 400, code);
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(bad_request_examples.get(code).is_some(), "BadRequest has an example for {code}");
    }

    // 404: a similar_to key that is not indexed, and a path the API does not have.
    let body = check(&doc, &call(&searcher, get(&[("similar_to", "holiday/none.jpg")])).await, search, 404, "404");
    assert_eq!(body["error"]["code"], "not_indexed");
    let reply = call(&searcher, request("GET", "/serch")).await;
    assert_eq!(reply.status, 404, "{}", reply.text);
    let not_found = &doc["components"]["responses"]["NotFound"];
    let body = reply.json();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(violations(&doc, &not_found["content"]["application/json"]["schema"], &body), Vec::<String>::new());

    // 401 and 403 with per-user isolation: no verified identity, or claims without the template's claim.
    let template = shared::domain::scope::OwnerTemplate::parse("users/{sub}/").unwrap();
    let access = shared::domain::scope::Access { owners: Some(template), ..Default::default() };
    let isolated = tests::searcher_with_access(&s3, index.clone(), access);
    let body = check(&doc, &call(&isolated, get(&[("q", "cat")])).await, search, 401, "no identity");
    assert_eq!(body["error"]["code"], "unauthenticated");
    let no_sub = apigw_request("v2-get-search.json", |j| {
        with_query(j, &[("q", "cat")]);
        j["requestContext"]["authorizer"] = json!({"jwt": {"claims": {"email": "a@example.com"}, "scopes": null}});
    });
    let body = check(&doc, &call(&isolated, no_sub).await, search, 403, "claims without sub");
    assert_eq!(body["error"]["code"], "forbidden");

    // 405 on every path, with Allow.
    for (method, path, allow) in [
        ("PUT", "/search", "GET, POST"),
        ("DELETE", "/search", "GET, POST"),
        ("POST", "/health", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/openapi.json", "GET, HEAD"),
    ] {
        let reply = call(&searcher, request(method, path)).await;
        let body = check(&doc, &reply, ("get", path), 405, &format!("{method} {path}"));
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(reply.headers["allow"], allow, "{method} {path}");
    }

    // Health.
    let health = check(&doc, &call(&searcher, request("GET", "/health")).await, ("get", "/health"), 200, "health");
    assert_eq!(
        (health["model"].as_str(), health["milvus"]["images"].as_u64()),
        (Some("tiny-clip"), Some(5)),
        "{health}"
    );

    // The page and the document, which are not JSON errors.
    let reply = call(&searcher, request("GET", "/openapi.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.text, OPENAPI_JSON, "GET /openapi.json serves the committed document byte for byte");
    let served: Value = serde_json::from_str(&reply.text).unwrap();
    let schema = response_schema(&doc, "/openapi.json", "get", 200, "application/json");
    assert_eq!(violations(&doc, &schema, &served), Vec::<String>::new());
    let reply = call(&searcher, request("GET", "/")).await;
    assert_eq!(reply.status, 200);
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(reply.text.contains("<form id=\"search-form\""), "the page has the search form");
    let schema = response_schema(&doc, "/", "get", 200, "text/html");
    assert_eq!(violations(&doc, &schema, &Value::String(reply.text.clone())), Vec::<String>::new());

    // 503 when Milvus does not answer.
    let down = tests::searcher(&s3, stack.unreachable_milvus(DIM).await);
    let body = check(&doc, &call(&down, get(&[("q", "cat")])).await, search, 503, "search, Milvus down");
    assert_eq!(
        (body["error"]["code"].as_str(), body["error"]["request_id"].as_str()),
        (Some("index_unavailable"), Some(REQUEST_ID))
    );
    check(&doc, &call(&down, post(r#"{"q": "cat"}"#)).await, ("post", "/search"), 503, "POST, Milvus down");
    let body =
        check(&doc, &call(&down, request("GET", "/health")).await, ("get", "/health"), 503, "health, Milvus down");
    assert_eq!(body["status"], "degraded");
}

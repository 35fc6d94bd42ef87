//! Per-user isolation at the handler: the search API as the Lambda serves it, fed API Gateway v2
//! requests whose request context carries the claims a JWT authorizer verified, over a real
//! collection (owners stored by ingest under `users/{sub}/`) and real SeaweedFS. Every
//! cross-tenant attempt must return, presign and reveal nothing of another owner. Needs the stack.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::domain::scope::{Access, KeyScope, OwnerTemplate};
use shared::domain::search::Searcher;
use tests::{
    apigw_request, call_json, fixture_image, ingest, ingestor, put, s3_put_event, searcher_with_access, with_query,
};
use tests::{unique, Stack, TestCollection};

const DIM: usize = 64;
const TEMPLATE: &str = "users/{sub}/";

/// Alice's and Bob's photos (one identical pair across them), plus keys outside every owner's space.
const OBJECTS: [(&str, &str); 7] = [
    ("users/alice/cat.jpg", "baseline.jpg"),
    ("users/alice/shared-copy.jpg", "progressive.jpg"),
    ("users/bob/dog.jpg", "landscape-1024.jpg"),
    ("users/bob/shared-copy.jpg", "progressive.jpg"),
    ("users/bob/tall.jpg", "tall-300x2000.jpg"),
    ("users/mallory.jpg", "grayscale.jpg"),
    ("public/banner.jpg", "wide-2000x300.jpg"),
];

struct Tenants {
    searcher: Arc<Searcher>,
    _collection: TestCollection,
}

fn access(bucket: &str) -> Access {
    Access {
        owners: Some(OwnerTemplate::parse(TEMPLATE).unwrap()),
        keys: KeyScope { prefix: "users/".into(), suffix: String::new() },
        bucket: Some(bucket.to_string()),
    }
}

/// Ingests [`OBJECTS`] as the ingest function would under `OWNER_KEY_TEMPLATE=users/{sub}/` and
/// `KEY_PREFIX=users/`, and returns a searcher configured as the JWT deployment's.
async fn tenants() -> Tenants {
    let stack = Stack::load();
    let s3 = stack.s3().await;
    let bucket = stack.bucket(&s3, "tenants").await;
    let collection = stack.milvus_with_owners(&unique("t_tenants"), DIM, TEMPLATE).await;
    for (key, file) in OBJECTS {
        put(&s3, &bucket, key, fixture_image(file), "image/jpeg").await;
    }
    let mut ingestor = ingestor(&s3, (*collection).clone());
    ingestor.access = access(&bucket);
    let keys: Vec<String> = OBJECTS.iter().map(|(k, _)| k.to_string()).collect();
    let report = ingest(&ingestor, &s3_put_event(&bucket, &keys)).await.unwrap();
    assert_eq!(report.outside_scope, ["public/banner.jpg"], "{report:?}");
    assert_eq!(report.indexed.len(), 6, "{report:?}");
    let searcher = searcher_with_access(&s3, (*collection).clone(), access(&bucket));
    Tenants { searcher, _collection: collection }
}

/// A v2 request with `params`, and the claims of a verified JWT (none: an open API's request).
fn request(params: &[(&str, &str)], claims: Option<Value>) -> lambda_http::Request {
    apigw_request("v2-get-search.json", |j| {
        with_query(j, params);
        if let Some(claims) = claims {
            j["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
        }
    })
}

fn claims_of(sub: &str) -> Option<Value> {
    Some(json!({"sub": sub, "iss": "https://issuer.example", "aud": "app", "token_use": "access"}))
}

fn keys(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        body["results"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    keys
}

/// Every string in a response that names a key or a URL of another owner.
fn leaks(body: &Value, owner: &str) -> Vec<String> {
    let mine = format!("users/{owner}/");
    let mut found = Vec::new();
    for r in body["results"].as_array().into_iter().flatten() {
        let named = [r["key"].as_str(), r["url"].as_str()].into_iter().flatten().map(str::to_string);
        let duplicates =
            r["duplicates"].as_array().into_iter().flatten().filter_map(|d| d.as_str().map(str::to_string));
        for text in named.chain(duplicates) {
            let key_part = text.split('?').next().unwrap_or_default().to_string();
            if !key_part.contains(&mine) {
                found.push(text);
            }
        }
    }
    found
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn each_user_finds_only_their_own_images_and_urls() {
    let t = tenants().await;
    for (owner, expected) in [
        ("alice", vec!["users/alice/cat.jpg", "users/alice/shared-copy.jpg"]),
        ("bob", vec!["users/bob/dog.jpg", "users/bob/shared-copy.jpg", "users/bob/tall.jpg"]),
    ] {
        let (status, body, headers) =
            call_json(&t.searcher, request(&[("q", "a photo"), ("k", "100")], claims_of(owner))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(keys(&body), expected, "{owner}");
        assert!(leaks(&body, owner).is_empty(), "{owner} sees {:?}", leaks(&body, owner));
        assert_eq!(headers["cache-control"], "no-store");
        // The dedup window is read inside the owner's partition: the identical copy in the other
        // folder is neither a result nor a listed duplicate.
        let (_, deduped, _) =
            call_json(&t.searcher, request(&[("q", "a photo"), ("dedup", "true")], claims_of(owner))).await;
        assert!(leaks(&deduped, owner).is_empty(), "{owner} with dedup sees {:?}", leaks(&deduped, owner));
    }
    // A user with no images finds nothing, and /health does not say how many images others have.
    let (status, body, _) = call_json(&t.searcher, request(&[("q", "a photo")], claims_of("carol"))).await;
    assert_eq!((status, keys(&body).len()), (200, 0), "{body}");
    let health = apigw_request("v2-get-search.json", |j| {
        j["rawPath"] = json!("/health");
        j["rawQueryString"] = json!("");
        j["queryStringParameters"] = json!({});
        j["requestContext"]["authorizer"] = json!({"jwt": {"claims": claims_of("carol"), "scopes": null}});
    });
    let (status, body, _) = call_json(&t.searcher, health).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["milvus"].get("images").is_none(), "{body}");
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn cross_tenant_attempts_return_and_reveal_nothing() {
    let t = tenants().await;
    let alice = || claims_of("alice");
    // Another owner's prefix: an empty page, as for a prefix that holds nothing.
    let (status, body, _) = call_json(&t.searcher, request(&[("q", "dog"), ("prefix", "users/bob/")], alice())).await;
    assert_eq!((status, keys(&body)), (200, Vec::<String>::new()), "{body}");
    // `similar_to` with another owner's key answers exactly as for a key that does not exist.
    let (status, theirs, _) = call_json(&t.searcher, request(&[("similar_to", "users/bob/dog.jpg")], alice())).await;
    let (_, nobodys, _) = call_json(&t.searcher, request(&[("similar_to", "users/bob/nothing.jpg")], alice())).await;
    assert_eq!(status, 404, "{theirs}");
    assert_eq!(theirs["error"]["code"], nobodys["error"]["code"]);
    let (status, own, _) = call_json(&t.searcher, request(&[("similar_to", "users/alice/cat.jpg")], alice())).await;
    assert_eq!(status, 200, "{own}");
    assert!(leaks(&own, "alice").is_empty(), "{own}");
    // A cursor from another owner's search, with the very same parameters, is refused.
    let params = [("q", "a photo"), ("k", "1")];
    let (_, bobs, _) = call_json(&t.searcher, request(&params, claims_of("bob"))).await;
    let cursor = bobs["next_cursor"].as_str().expect("bob has a second page").to_string();
    let (status, body, _) =
        call_json(&t.searcher, request(&[params[0], params[1], ("cursor", &cursor)], alice())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_cursor")), "{body}");
    // An owner that is not one (a path, or a claim the template does not name) is refused.
    for claims in [claims_of("bob/../alice"), claims_of(""), Some(json!({"email": "alice@example.com"}))] {
        let (status, body, _) = call_json(&t.searcher, request(&[("q", "cat")], claims.clone())).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{claims:?}: {body}");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: bash scripts/test"]
async fn on_an_open_deployment_forged_identities_get_nothing() {
    let t = tenants().await;
    // API Gateway with authorization NONE passes headers through but verifies nothing: a token,
    // an identity header or an owner parameter is not an identity.
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.";
    let mut forged = request(&[("q", "cat")], None);
    for (name, value) in [
        ("authorization", format!("Bearer {unsigned}")),
        ("x-amzn-oidc-identity", "alice".to_string()),
        ("x-amzn-oidc-data", unsigned.to_string()),
        ("x-user", "alice".to_string()),
    ] {
        forged.headers_mut().insert(name, value.parse().unwrap());
    }
    let (status, body, _) = call_json(&t.searcher, forged).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    assert!(body["results"].is_null());
    // Nor is a parameter: without a verified identity nothing is searched, whatever is asked.
    for param in ["owner", "sub", "as_user"] {
        let (status, body, _) = call_json(&t.searcher, request(&[("q", "cat"), (param, "alice")], None)).await;
        assert_eq!(status, 401, "{param}: {body}");
    }
    // Claims smuggled in a non-JWT authorizer context (a Lambda authorizer's free-form fields) are not read.
    let smuggled = apigw_request("v2-get-search.json", |j| {
        with_query(j, &[("q", "cat")]);
        j["requestContext"]["authorizer"] = json!({"lambda": {"sub": "alice", "claims": {"sub": "alice"}}});
    });
    let (status, body, _) = call_json(&t.searcher, smuggled).await;
    assert_eq!(status, 401, "{body}");
}

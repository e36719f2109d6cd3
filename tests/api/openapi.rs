//! Keeps `openapi.yaml` honest: every documented operation exists on the real broker, every
//! response it gives here is documented, and the bodies have the documented fields.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{BrokerOptions, TOKEN, Upstream, new_password};

pub fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("openapi.yaml is YAML")
}

/// Follows one `$ref` inside the spec.
fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            spec.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => node,
    }
}

fn documented_codes(spec: &Value) -> BTreeSet<String> {
    spec.pointer("/components/schemas/ErrorCode/enum")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Method, path template, concrete path, extra headers.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_matches_a_documented_status_and_shape() {
    let spec = spec();
    let upstream = Upstream::start().await;
    let password = new_password("openapi");
    upstream
        .create_secret("good", &json!({"username": "u", "password": password}))
        .await;
    upstream.create_secret_string("bad", "not json").await;
    let broker = BrokerOptions::new(upstream.proxy.endpoint())
        .database("good", "good", "")
        .database("bad", "bad", "")
        .database("missing", "missing", "")
        .cold()
        .spawn()
        .await;

    let credential_fields: BTreeSet<String> = spec
        .pointer("/components/schemas/Credentials/required")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let codes = documented_codes(&spec);

    let cases: [Case; 9] = [
        ("get", "/credentials/{db}", "/credentials/good", &[]),
        (
            "post",
            "/credentials/{db}/refresh",
            "/credentials/good/refresh",
            &[],
        ),
        ("get", "/credentials/{db}", "/credentials/bad", &[]),
        ("get", "/credentials/{db}", "/credentials/missing", &[]),
        ("get", "/credentials/{db}", "/credentials/nope", &[]),
        ("get", "/credentials/{db}", "/credentials/a%20b", &[]),
        (
            "post",
            "/credentials/{db}/refresh",
            "/credentials/good/refresh",
            &[("authorization", "Bearer wrong")],
        ),
        (
            "get",
            "/credentials/{db}",
            "/credentials/good",
            &[("x-forwarded-for", "10.1.2.3")],
        ),
        (
            "get",
            "/credentials/{db}/refresh",
            "/credentials/good/refresh",
            &[],
        ),
    ];
    for (method, template, path, headers) in cases {
        let mut request = broker
            .http
            .request(method.to_uppercase().parse().unwrap(), broker.url(path));
        if !headers.iter().any(|(k, _)| *k == "authorization") {
            request = request.bearer_auth(TOKEN);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16().to_string();
        // A method the path does not document is answered with the 405 of a documented one.
        let operation = spec["paths"][template]
            .get(method)
            .or_else(|| spec["paths"][template].get("get"))
            .or_else(|| spec["paths"][template].get("post"))
            .unwrap();
        let documented = resolve(&spec, &operation["responses"][&status]);
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, not in openapi.yaml"
        );
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        if status == "200" {
            let keys: BTreeSet<String> = body.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, credential_fields, "{method} {path}");
        } else {
            let code = body["error"]["code"].as_str().unwrap();
            assert!(codes.contains(code), "{code} is not in ErrorCode");
            assert!(
                documented["description"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("`{code}`")),
                "{method} {path} -> {status} {code}: the response description does not name the code"
            );
        }
    }
}

#[test]
fn every_documented_path_is_routed() {
    let spec = spec();
    let paths: BTreeSet<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "/credentials/{db}",
        "/credentials/{db}/refresh",
        "/credentials/{db}/events",
        "/healthz",
        "/readyz",
        "/status",
        "/metrics",
        // The AWS agent's API, on its own listener (tests/api/agent.rs).
        "/secretsmanager/get",
        "/v1/{secretId}",
        "/ping",
    ]
    .into();
    assert_eq!(paths, expected);
}

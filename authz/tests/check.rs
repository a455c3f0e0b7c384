//! gRPC-level tests: Check on a running in-process server (127.0.0.1:0), asserting what Envoy and
//! the client would see: HTTP status, reason code, headers, metrics.

mod common;

use base64::Engine as _;
use common::*;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use serde_json::json;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

const MS: &str = "/v2/models/mission-summarizer/infer";
const TT: &str = "/v2/models/threat-triage/infer";
const BE: &str = "/v2/models/benchmark-echo/infer";
const GRPC_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The negative-authorization table: every row must be denied with exactly this status and code.
fn negative_table() -> Vec<(&'static str, Req, u16, &'static str)> {
    let k = keys();
    let mut rows: Vec<(&'static str, Req, u16, &'static str)> = Vec::new();
    let a = analyst();

    // --- tokens -------------------------------------------------------------------------
    let none_tok = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims("analyst-1", &["analyst"]).to_string())
    );
    rows.push(("alg none", req(BE).bearer(&none_tok), 401, "invalid_token"));
    let pub_pem = {
        use rsa::pkcs8::EncodePublicKey;
        k.rsa
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(RSA_KID.into());
    let hs = jsonwebtoken::encode(
        &h,
        &claims("admin-1", &["platform-admin"]),
        &jsonwebtoken::EncodingKey::from_secret(pub_pem.as_bytes()),
    )
    .unwrap();
    rows.push((
        "HS256 signed with the RSA public key",
        req(BE).bearer(&hs),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c["exp"] = json!(now() - 3600);
    rows.push(("expired", req(BE).bearer(&rs256(&c)), 401, "invalid_token"));
    let mut c = claims("analyst-1", &["analyst"]);
    c["nbf"] = json!(now() + 3600);
    rows.push((
        "nbf in the future",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c["iss"] = json!("https://evil.example");
    rows.push((
        "wrong iss",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c["aud"] = json!("another-service");
    rows.push((
        "wrong aud",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c.as_object_mut().unwrap().remove("aud");
    rows.push((
        "missing aud",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c.as_object_mut().unwrap().remove("exp");
    rows.push((
        "missing exp",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c.as_object_mut().unwrap().remove("sub");
    rows.push((
        "missing sub",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let unknown_kid = rs256_with(
        &claims("analyst-1", &["analyst"]),
        "no-such-kid",
        &k.rsa_der,
    );
    rows.push((
        "unknown kid",
        req(BE).bearer(&unknown_kid),
        401,
        "invalid_token",
    ));
    let forged = rs256_with(
        &claims("admin-1", &["platform-admin"]),
        RSA_KID,
        &rogue_der(),
    );
    rows.push((
        "signed by a key not in the JWKS",
        req(BE).bearer(&forged),
        401,
        "invalid_token",
    ));
    let ed_kid = authz::devkeys::DevKey::kid(&k.ed);
    let mismatched = rs256_with(&claims("analyst-1", &["analyst"]), &ed_kid, &k.rsa_der);
    rows.push((
        "RS256 header naming an Ed25519 key",
        req(BE).bearer(&mismatched),
        401,
        "invalid_token",
    ));
    let tampered = {
        let parts: Vec<&str> = a.split('.').collect();
        let forged =
            b64(&claims("analyst-1", &["platform-admin", "security-engineer"]).to_string());
        format!("{}.{}.{}", parts[0], forged, parts[2])
    };
    rows.push((
        "tampered payload",
        req(TT).bearer(&tampered).reason("x"),
        401,
        "invalid_token",
    ));
    rows.push((
        "token only in the query string",
        req(&format!("{BE}?access_token={a}")),
        401,
        "unauthenticated",
    ));
    let mut c = claims("analyst-1", &[]);
    c.as_object_mut().unwrap().remove("roles");
    rows.push((
        "missing roles claim",
        req(BE).bearer(&rs256(&c)),
        403,
        "role_not_allowed",
    ));
    let mut c = claims("analyst-1", &[]);
    c["roles"] = json!("analyst");
    rows.push((
        "roles claim is a string",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &[]);
    c["roles"] = json!([{"name": "analyst"}]);
    rows.push((
        "roles claim holds objects",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    let mut nested = json!("deep");
    for _ in 0..200 {
        nested = json!([nested]);
    }
    c["nested"] = nested;
    rows.push((
        "deeply nested claims",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));
    rows.push((
        "garbage token",
        req(BE).bearer("not-a-jwt"),
        401,
        "invalid_token",
    ));
    rows.push((
        "three garbage parts",
        req(BE).bearer("a.b.c"),
        401,
        "invalid_token",
    ));
    rows.push((
        "basic auth",
        req(BE).header("authorization", "Basic YTpi"),
        401,
        "invalid_token",
    ));
    let huge = format!("{}.{}.sig", b64("{}"), "A".repeat(20_000));
    rows.push((
        "enormous token",
        req(BE).bearer(&huge),
        401,
        "invalid_token",
    ));
    let mut c = claims("analyst-1", &["analyst"]);
    c["sub"] = json!(42);
    rows.push((
        "numeric sub",
        req(BE).bearer(&rs256(&c)),
        401,
        "invalid_token",
    ));

    // --- other credentials --------------------------------------------------------------
    rows.push(("no credentials", req(BE), 401, "unauthenticated"));
    let hash_of_key = authz::authn::api_key::hash_key(LOAD_TESTER_KEY);
    rows.push((
        "API key that is another principal's hash",
        req(BE).api_key(&hash_of_key),
        401,
        "invalid_api_key",
    ));
    rows.push((
        "unknown API key",
        req(BE).api_key("guess"),
        401,
        "invalid_api_key",
    ));
    rows.push((
        "bearer and API key together",
        req(BE).bearer(&a).api_key(LOAD_TESTER_KEY),
        401,
        "ambiguous_credentials",
    ));
    rows.push((
        "unknown SPIFFE id",
        req(BE).peer("spiffe://gateway.local/ns/evil/sa/x"),
        401,
        "unknown_principal",
    ));
    rows.push((
        "SPIFFE id differing only in case",
        req(BE).peer("spiffe://gateway.local/ns/security/sa/Triage-Bot"),
        401,
        "unknown_principal",
    ));
    rows.push((
        "identity claimed by a plain header",
        req(BE)
            .header("x-authz-principal", "admin-1")
            .header("x-user", "admin-1"),
        401,
        "unauthenticated",
    ));
    rows.push((
        "API key on a restricted model",
        req(TT).api_key(REPORT_BUILDER_KEY).reason("x"),
        403,
        "role_not_allowed",
    ));
    rows.push((
        "load-tester key on mission-summarizer",
        req(MS).api_key(LOAD_TESTER_KEY).reason("x"),
        403,
        "role_not_allowed",
    ));

    // --- paths ----------------------------------------------------------------------------
    for (name, path) in [
        (
            "%2F in the model name",
            "/v2/models/threat-triage%2F..%2Fbenchmark-echo/infer",
        ),
        ("%2f in the path", "/v2/models/benchmark-echo%2finfer"),
        ("%5C in the path", "/v2/models/benchmark-echo%5Cinfer"),
        (
            "dot-dot segment",
            "/v2/models/benchmark-echo/../threat-triage/infer",
        ),
        ("dot segment", "/v2/models/./threat-triage/infer"),
        ("double slash", "/v2/models//threat-triage/infer"),
        ("semicolon parameter", "/v2/models/threat-triage;x=1/infer"),
        ("upper-case /V2/", "/V2/models/benchmark-echo/infer"),
        ("upper-case MODELS", "/v2/MODELS/benchmark-echo/infer"),
        ("trailing slash", "/v2/models/benchmark-echo/infer/"),
        (
            "unicode look-alike model name",
            "/v2/models/bеnchmark-echo/infer",
        ),
        ("backslash", "/v2/models/benchmark-echo\\infer"),
        ("fragment", "/v2/models/benchmark-echo/infer#x"),
    ] {
        rows.push((name, req(path).bearer(&a), 400, "invalid_path"));
    }
    let long = format!("/v2/models/{}/infer", "m".repeat(129));
    rows.push((
        "model name over 128 bytes",
        req(&long).bearer(&a),
        400,
        "invalid_path",
    ));
    rows.push((
        "repository API is not exposed",
        req("/v2/repository/models/benchmark-echo/load").bearer(&a),
        403,
        "path_not_allowed",
    ));
    rows.push((
        "unknown path",
        req("/admin").bearer(&a),
        403,
        "path_not_allowed",
    ));

    // --- policy ---------------------------------------------------------------------------
    rows.push((
        "analyst-1 on threat-triage",
        req(TT).bearer(&a).reason("curious"),
        403,
        "role_not_allowed",
    ));
    rows.push((
        "no reason for mission-summarizer",
        req(MS).bearer(&a),
        403,
        "reason_required",
    ));
    rows.push((
        "whitespace reason",
        req(MS).bearer(&a).reason("  \t "),
        403,
        "reason_required",
    ));
    rows.push((
        "unknown model",
        req("/v2/models/nope/infer").bearer(&a),
        403,
        "unknown_model",
    ));
    rows.push((
        "model name in another case",
        req("/v2/models/Benchmark-Echo/infer").bearer(&a),
        403,
        "unknown_model",
    ));

    // --- malformed requests -----------------------------------------------------------------
    rows.push((
        "reason over 500 bytes",
        req(MS).bearer(&a).reason(&"r".repeat(501)),
        400,
        "malformed_request",
    ));
    rows.push((
        "reason with control characters",
        req(MS).bearer(&a).reason("a\u{1b}[2Jb"),
        400,
        "malformed_request",
    ));
    rows.push((
        "missing :path",
        req(BE).bearer(&a).no_path(),
        400,
        "malformed_request",
    ));
    rows.push((
        "enormous headers",
        req(BE).bearer(&a).header("x-junk", &"j".repeat(100_000)),
        400,
        "malformed_request",
    ));
    rows.push((
        "invalid UTF-8 authorization",
        req(BE).raw_header("authorization", b"Bearer \xff\xfe"),
        400,
        "malformed_request",
    ));
    rows.push((
        "duplicated API key header",
        req(BE)
            .raw_header("x-api-key", b"a")
            .raw_header("x-api-key", b"b"),
        400,
        "malformed_request",
    ));

    // --- OIP gRPC: the model comes from the message ----------------------------------------
    rows.push((
        "gRPC ModelInfer naming a forbidden model",
        req(GRPC_INFER)
            .bearer(&a)
            .reason("x")
            .body(grpc_frame("threat-triage", "")),
        403,
        "role_not_allowed",
    ));
    let mut compressed = grpc_frame("benchmark-echo", "");
    compressed[0] = 1;
    rows.push((
        "compressed gRPC frame",
        req(GRPC_INFER).bearer(&a).body(compressed),
        400,
        "malformed_request",
    ));
    let mut cut = grpc_frame("benchmark-echo", "");
    cut.truncate(9);
    rows.push((
        "model name cut off",
        req(GRPC_INFER).bearer(&a).body(cut),
        400,
        "malformed_request",
    ));
    rows.push((
        "gRPC body not forwarded",
        req(GRPC_INFER).bearer(&a),
        400,
        "malformed_request",
    ));
    let dup = {
        let mut msg = vec![0x0a, 14];
        msg.extend_from_slice(b"benchmark-echo");
        msg.extend_from_slice(&[0x0a, 13]);
        msg.extend_from_slice(b"threat-triage");
        let mut f = vec![0];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(&msg);
        f
    };
    rows.push((
        "model name given twice",
        req(GRPC_INFER).bearer(&a).body(dup),
        400,
        "malformed_request",
    ));
    rows.push((
        "gRPC statistics for every model (empty name)",
        req("/inference.GRPCInferenceService/ModelStatistics")
            .bearer(&a)
            .body(grpc_frame("", "")),
        400,
        "malformed_request",
    ));
    rows.push((
        "gRPC repository method",
        req("/inference.GRPCInferenceService/RepositoryModelLoad").bearer(&a),
        403,
        "path_not_allowed",
    ));
    rows
}

#[tokio::test]
async fn negative_authorization_table() {
    let server = Server::start().await;
    let rows = negative_table();
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    let mut failures = Vec::new();
    for (name, r, status, code) in rows {
        let out = server.check(r.build()).await;
        if out.status != status || out.code != code {
            failures.push(format!(
                "{name}: want {status} {code}, got {} {} ({})",
                out.status, out.code, out.body
            ));
        }
        // A denial always names its decision id and never leaks upstream headers.
        if out.status != 200 {
            assert_eq!(
                out.body["error"]["decision_id"].as_str().map(str::len),
                Some(36),
                "{name}"
            );
            assert_eq!(
                out.headers.get("content-type").map(String::as_str),
                Some("application/json")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn allowed_requests_get_identity_headers_and_lose_credentials() {
    let server = Server::start().await;
    let out = server
        .check(
            req(MS)
                .bearer(&analyst())
                .reason("daily brief")
                .header("x-authz-principal", "admin-1")
                .build(),
        )
        .await;
    assert_eq!((out.status, out.code.as_str()), (200, "allowed"));
    assert_eq!(out.headers["x-authz-principal"], "analyst-1");
    // The client's copy is replaced, not appended to.
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    assert_eq!(out.actions["x-authz-principal"], overwrite);
    assert_eq!(out.actions["x-authz-decision-id"], overwrite);
    let id = uuid::Uuid::parse_str(&out.headers["x-authz-decision-id"]).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(out.headers["x-authz-model"], "mission-summarizer");
    assert!(out.removed.contains(&"authorization".to_owned()));
    assert!(out.removed.contains(&"x-api-key".to_owned()));
    assert_eq!(out.grpc_code, 0);
}

#[tokio::test]
async fn every_credential_kind_and_demo_principal_works() {
    let server = Server::start().await;
    let cases = [
        (
            "security-1 on threat-triage",
            req(TT).bearer(&security()).reason("alert 7"),
            "security-1",
        ),
        (
            "admin-1 on threat-triage",
            req(TT)
                .bearer(&token_for(
                    "admin-1",
                    &["platform-admin", "security-engineer"],
                ))
                .reason("r"),
            "admin-1",
        ),
        (
            "analyst-1 on benchmark-echo without reason",
            req(BE).bearer(&analyst()),
            "analyst-1",
        ),
        (
            "load-tester API key",
            req(BE).api_key(LOAD_TESTER_KEY),
            "load-tester",
        ),
        (
            "report-builder API key",
            req(MS).api_key(REPORT_BUILDER_KEY).reason("weekly"),
            "report-builder",
        ),
        (
            "mTLS triage bot",
            req(TT).peer(TRIAGE_BOT).reason("auto"),
            "triage-bot",
        ),
        (
            "EdDSA dev token",
            req(BE).bearer(&keys().ed.mint(&claims("analyst-1", &["analyst"])).unwrap()),
            "analyst-1",
        ),
        (
            "version path",
            req("/v2/models/benchmark-echo/versions/1/infer").bearer(&analyst()),
            "analyst-1",
        ),
        (
            "gRPC ModelInfer on an allowed model",
            req(GRPC_INFER)
                .bearer(&analyst())
                .body(grpc_frame("benchmark-echo", "1")),
            "analyst-1",
        ),
        (
            "gRPC ModelStatistics naming an allowed model",
            req("/inference.GRPCInferenceService/ModelStatistics")
                .bearer(&analyst())
                .body(grpc_frame("benchmark-echo", "")),
            "analyst-1",
        ),
        (
            "REST statistics of an allowed model",
            req("/v2/models/benchmark-echo/stats").bearer(&analyst()),
            "analyst-1",
        ),
        (
            "header credential wins over the peer identity",
            req(BE)
                .bearer(&analyst())
                .peer("spiffe://gateway.local/ns/evil/sa/x"),
            "analyst-1",
        ),
    ];
    for (name, r, principal) in cases {
        let out = server.check(r.build()).await;
        assert_eq!(out.status, 200, "{name}: {}", out.body);
        assert_eq!(out.headers["x-authz-principal"], principal, "{name}");
    }
    let out = server.check(req("/v2/health/ready").build()).await;
    assert_eq!(out.status, 200);
    assert!(!out.headers.contains_key("x-authz-principal"));
    let out = server
        .check(req("/inference.GRPCInferenceService/ServerLive").build())
        .await;
    assert_eq!(out.status, 200);
}

#[tokio::test]
async fn denials_explain_themselves() {
    let server = Server::start().await;
    let out = server.check(req(BE).build()).await;
    assert_eq!(out.status, 401);
    assert!(
        out.headers["www-authenticate"].starts_with("Bearer "),
        "{:?}",
        out.headers
    );
    assert_eq!(out.grpc_code, 16);
    let out = server.check(req(MS).bearer(&analyst()).build()).await;
    assert_eq!(out.status, 403);
    assert_eq!(out.body["error"]["code"], "reason_required");
    assert!(
        out.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-access-reason")
    );
    assert_eq!(
        out.headers["x-authz-decision-id"],
        out.body["error"]["decision_id"].as_str().unwrap()
    );
    let out = server
        .check(req(TT).api_key(REPORT_BUILDER_KEY).reason("x").build())
        .await;
    assert_eq!(out.code, "role_not_allowed");
}

#[tokio::test]
async fn custom_forbid_reason_codes_reach_the_client() {
    let server = Server::start_with(
        "[[authn.api_keys]]\nprincipal = \"sec-automation\"\nroles = [\"security-engineer\"]\n\
         sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
    )
    .await;
    // sha256("test")
    let out = server
        .check(req(TT).api_key("test").reason("automation").build())
        .await;
    assert_eq!(
        (out.status, out.code.as_str()),
        (403, "restricted_model_requires_user_identity")
    );
}

#[tokio::test]
async fn empty_and_attribute_less_requests_are_malformed() {
    let server = Server::start().await;
    let out = server.check(Default::default()).await;
    assert_eq!((out.status, out.code.as_str()), (400, "malformed_request"));
}

#[tokio::test]
async fn metrics_count_decisions_with_bounded_labels() {
    let server = Server::start().await;
    // Distinct tokens (different subjects) so exactly one cache hit is expected.
    let t1 = token_for("u-1", &["analyst"]);
    server.check(req(TT).bearer(&t1).reason("x").build()).await;
    let t2 = token_for("u-2", &[]);
    server
        .check(
            req("/v2/models/made-up-model-123/infer")
                .bearer(&t2)
                .build(),
        )
        .await;
    let t = analyst();
    server.check(req(BE).bearer(&t).build()).await;
    server.check(req(BE).bearer(&t).build()).await;
    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "authz_decisions_total{decision=\"deny\",reason=\"role_not_allowed\",model=\"threat-triage\"} 1",
        "authz_decisions_total{decision=\"deny\",reason=\"unknown_model\",model=\"unknown\"} 1",
        "authz_decisions_total{decision=\"allow\",reason=\"allowed\",model=\"benchmark-echo\"} 2",
        "authz_token_cache_lookups_total{result=\"hit\"} 1",
        "authz_token_cache_lookups_total{result=\"miss\"} 3",
        "authz_jwks_refresh_total{issuer=\"https://issuer.test\",result=\"success\"} 1",
        "authz_check_duration_seconds_count 4",
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    assert!(!body.contains("made-up-model-123"));
    assert!(!body.contains("analyst-1"));
}

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start().await;
    assert_eq!(server.admin_get("/healthz").await.0, 200);
    assert_eq!(server.admin_get("/readyz").await.0, 200);
    let mut health = server.health().await;
    let mut serving = false;
    for _ in 0..40 {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(serving, "grpc.health.v1 never reported SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_grpc_health_say_not_serving_from_the_start_of_a_drain() {
    use tonic_health::pb::health_check_response::ServingStatus;
    // A Redis that accepts connections and never answers: a check waits out the store timeout
    // (1 s), long enough to look at the probes while it drains.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hung.local_addr().unwrap());
    let mut server = Server::start_editing("", |t| {
        t.replace(
            "timeout_ms = 50",
            &format!("redis_url = \"{url}\"\ntimeout_ms = 1000"),
        )
    })
    .await;
    assert_eq!(server.admin_get("/readyz").await.0, 200);
    let mut health = server
        .health()
        .await
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_status = async || health.message().await.unwrap().unwrap().status;
    assert_eq!(next_status().await, ServingStatus::Serving as i32);

    let mut client = server.client().await;
    let in_flight = tokio::spawn(async move {
        client
            .check(req(BE).bearer(&analyst()).build())
            .await
            .map(|r| Outcome::from(r.into_inner()))
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let serving = server.start_drain().expect("serving");
    assert_eq!(next_status().await, ServingStatus::NotServing as i32);
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: draining: shutting down\n")
    );
    drop(health);
    // The check in flight when the drain began still gets its answer (the store timed out).
    let out = in_flight.await.unwrap().expect("answered during the drain");
    assert_eq!(out.code, "rate_limit_unavailable");
    serving.await.unwrap().expect("a clean drain");
}

#[tokio::test]
async fn unreachable_jwks_means_not_ready_and_503_for_its_tokens() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = Server::start_with(&format!(
        "[[authn.issuers]]\nissuer = \"https://down.example\"\naudiences = [\"inference-gateway\"]\n\
         jwks_url = \"http://127.0.0.1:{port}/jwks\"\nallow_insecure_http = true\nfetch_timeout = \"1s\"\n"
    ))
    .await;
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("https://down.example"), "{body}");
    let mut c = claims("analyst-1", &["analyst"]);
    c["iss"] = json!("https://down.example");
    let out = server.check(req(BE).bearer(&rs256(&c)).build()).await;
    assert_eq!((out.status, out.code.as_str()), (503, "unavailable"));
    // Other issuers keep working.
    assert_eq!(
        server
            .check(req(BE).bearer(&analyst()).build())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn decisions_carry_everything_the_audit_needs() {
    let server = Server::start().await;
    let svc = authz::service::AuthzService::start(
        std::sync::Arc::clone(&server.runtime),
        std::sync::Arc::clone(&server.metrics),
    )
    .expect("the decision pipeline starts");
    let r = req("/v2/models/mission-summarizer/versions/2/infer")
        .bearer(&analyst())
        .reason("  daily brief  ")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .build();
    let d = svc.decide(&r).await;
    assert!(d.allowed());
    assert_eq!(d.http_status(), 200);
    assert_eq!(d.reason.as_str(), "allowed");
    assert_eq!(d.policies, vec!["permit-configured-roles"]);
    let p = d.principal.as_ref().unwrap();
    assert_eq!(
        (p.id.as_str(), p.auth_method.as_str()),
        ("analyst-1", "jwt")
    );
    assert_eq!(p.roles, vec!["analyst", "mission-user"]);
    assert_eq!(d.model.as_deref(), Some("mission-summarizer"));
    assert_eq!(d.version.as_deref(), Some("2"));
    assert_eq!(d.action.map(|a| a.as_str()), Some("infer"));
    assert_eq!(d.access_reason.as_deref(), Some("daily brief"));
    assert_eq!(d.source_ip, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(d.request_id.as_deref(), Some("req-abc-123"));
    assert_eq!(
        d.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    let d = svc.decide(&req(TT).bearer(&security()).build()).await;
    assert_eq!(d.http_status(), 403);
    assert_eq!(d.policies, vec!["reason-required-for-inference"]);
    assert_eq!(d.decision_str(), "deny");
}

#[tokio::test]
async fn forbid_without_reason_annotation_is_forbidden_by_policy() {
    let server = Server::start().await;
    let policy = server.dir.path().join("extra.cedar");
    std::fs::write(
        &policy,
        "@id(\"echo-maintenance\")\nforbid(principal, action, resource == Gateway::Model::\"benchmark-echo\");",
    )
    .unwrap();
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        text.replace("files = [", &format!("files = [\"{}\", ", policy.display())),
    )
    .unwrap();
    authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .unwrap();
    let out = server.check(req(BE).bearer(&analyst()).build()).await;
    assert_eq!(
        (out.status, out.code.as_str()),
        (403, "forbidden_by_policy")
    );
    assert!(
        out.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("echo-maintenance")
    );
    // Someone not permitted at all still learns that first.
    let out = server
        .check(req(BE).bearer(&token_for("x", &["guest"])).build())
        .await;
    assert_eq!(out.code, "role_not_allowed");
}

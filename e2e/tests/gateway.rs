//! The demo scenario through real Envoy, authz and modelserver (issue 5): every row asserts the
//! status and the reason code (`error.code` of the JSON body) a client sees, and where a request
//! must not reach the model server, that it did not (Envoy's access log and both servers'
//! counters).
//!
//! One stack is shared by the tests of this file (in-process rate-limit store, no Redis), one test
//! at a time because they assert on its counters; each test uses principals and models no other
//! test here rate-limits, so their order does not matter. Faults (processes
//! stopped) are in `gateway_faults.rs`, gRPC in `gateway_grpc.rs`.
//!
//! Envoy calls authz on a Unix domain socket here (the same-host topology of `make up` and
//! compose); the other files use authz's TCP listener, so both transports carry the suite.

use e2e::stack::{HttpResponse, SharedStack, Stack};

/// One stack per mode for this file (in-process rate-limit store, no Redis; authz on a Unix
/// socket, or inside Envoy); `lock()` hands it to one test at a time, since the tests compare its
/// counters before and after their requests. Every test runs against both (`both_modes!`).
/// Both add [`QUOTA_ROLE`]'s override to the demo config.
static SERVICE: SharedStack = SharedStack::new(|| {
    with_quota_role(
        Stack::builder()
            .redis(false)
            .audit(false)
            .authz_unix_socket(true),
    )
});
static EMBEDDED: SharedStack = SharedStack::new(|| {
    with_quota_role(
        Stack::builder()
            .redis(false)
            .audit(false)
            .embedded(e2e::workspace_module()),
    )
});

/// A role only the catalog quota test holds, with a `benchmark-echo` limit slow enough (5 per
/// hour, burst 5) that no refill happens during the test, so `remaining` is exact.
const QUOTA_ROLE: &str = "e2e-quota";

fn with_quota_role(builder: e2e::stack::StackBuilder) -> e2e::stack::StackBuilder {
    let at = format!("models.benchmark-echo.rate_limit.roles.{QUOTA_ROLE}");
    builder
        .authz_setting(&format!("{at}.rate"), 5)
        .authz_setting(&format!("{at}.period"), "1h")
}

const ANALYST: &[&str] = &["analyst", "mission-user"];
const SECURITY: &[&str] = &["security-engineer", "mission-user"];
const ADMIN: &[&str] = &["platform-admin", "security-engineer"];
const REASON: &str = "triage of the overnight field reports";

/// Asserts status and reason code, showing the response and the stack's logs otherwise.
fn expect(s: &Stack, resp: &HttpResponse, status: u16, code: Option<&str>, what: &str) {
    assert_eq!(
        (resp.status, resp.error_code().as_deref()),
        (status, code),
        "{what}: got {} {:?} {}\n{}",
        resp.status,
        resp.headers,
        resp.body,
        s.diagnostics()
    );
}

/// Asserts Envoy's access log shows the request (by User-Agent) never went upstream: ext_authz
/// answered it (`UAEX`) or Envoy itself did, and no upstream host was picked.
fn expect_not_forwarded(s: &Stack, user_agent: &str) {
    let entry = s
        .access_log_entry(user_agent)
        .unwrap_or_else(|| panic!("no access-log entry for {user_agent}\n{}", s.diagnostics()));
    assert!(
        entry["upstream_host"].is_null() || entry["upstream_host"] == "-",
        "{user_agent}: Envoy forwarded it upstream: {entry}"
    );
}

e2e::both_modes! {
    service: SERVICE, embedded: EMBEDDED;

fn analyst_gets_a_mission_summary_with_a_reason(s: &Stack) {
    let token = s.token("analyst-1", ANALYST);
    let before = s.modelserver_metric("nv_inference_count", Some("mission-summarizer"));
    let resp = s.infer(
        Some(&token),
        "mission-summarizer",
        Some(REASON),
        "row-analyst-summary",
    );
    expect(
        s,
        &resp,
        200,
        None,
        "analyst-1 -> mission-summarizer with a reason",
    );
    let body = resp.json();
    assert_eq!(body["model_name"], "mission-summarizer", "{body}");
    let summary = body["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "SUMMARY"))
        .unwrap_or_else(|| panic!("no SUMMARY output: {body}"));
    assert_eq!(summary["data"][0], "medical", "{body}");
    let urgency = body["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|t| t["name"] == "URGENCY"))
        .and_then(|t| t["data"][0].as_f64())
        .unwrap_or_else(|| panic!("no URGENCY output: {body}"));
    assert!(
        (urgency - 0.970_687_8).abs() < 1e-4,
        "urgency {urgency}: {body}"
    );
    let after = s.modelserver_metric("nv_inference_count", Some("mission-summarizer"));
    assert_eq!(
        after - before,
        1.0,
        "the model server counted the inference"
    );
}

fn a_missing_or_blank_reason_is_reason_required(s: &Stack) {
    let token = s.token("analyst-1", ANALYST);
    let before = s.envoy_requests_to_modelserver();
    for (reason, ua) in [
        (None, "row-no-reason"),
        (Some("   "), "row-blank-reason"),
        (Some("\t \t"), "row-tab-reason"),
    ] {
        let resp = s.infer(Some(&token), "mission-summarizer", reason, ua);
        expect(
            s,
            &resp,
            403,
            Some("reason_required"),
            &format!("reason {reason:?}"),
        );
        expect_not_forwarded(s, ua);
    }
    assert_eq!(s.envoy_requests_to_modelserver(), before);
}

fn analyst_is_not_allowed_threat_triage(s: &Stack) {
    let token = s.token("analyst-1", ANALYST);
    let before = s.modelserver_metric("nv_inference_count", Some("threat-triage"));
    let resp = s.infer(
        Some(&token),
        "threat-triage",
        Some(REASON),
        "row-analyst-triage",
    );
    expect(
        s,
        &resp,
        403,
        Some("role_not_allowed"),
        "analyst-1 -> threat-triage",
    );
    expect_not_forwarded(s, "row-analyst-triage");
    assert_eq!(
        s.modelserver_metric("nv_inference_count", Some("threat-triage")),
        before
    );
}

fn no_credentials_is_401_with_www_authenticate(s: &Stack) {
    let resp = s.infer(None, "mission-summarizer", Some(REASON), "row-anonymous");
    expect(s, &resp, 401, Some("unauthenticated"), "no credentials");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge:?} ({:?})",
        resp.headers
    );
    expect_not_forwarded(s, "row-anonymous");

    // A garbage token is not "no credentials" but is never accepted either.
    let resp = s.infer(
        Some("not.a.jwt"),
        "benchmark-echo",
        None,
        "row-garbage-token",
    );
    assert_eq!(resp.status, 401, "garbage token: {}", resp.body);
    expect_not_forwarded(s, "row-garbage-token");
}

/// Documented choice: an unknown model is authz's 403 `unknown_model`, decided before routing to
/// the model server (which would answer 404), so callers cannot probe which models exist.
fn unknown_model_is_403_unknown_model(s: &Stack) {
    let token = s.token("analyst-1", ANALYST);
    let resp = s.infer(
        Some(&token),
        "no-such-model",
        Some(REASON),
        "row-unknown-model",
    );
    expect(
        s,
        &resp,
        403,
        Some("unknown_model"),
        "analyst-1 -> no-such-model",
    );
    expect_not_forwarded(s, "row-unknown-model");
    // A model that exists in the repository but not in authz's config is unknown too.
    let resp = s.infer(
        Some(&token),
        "simple-fp32",
        Some(REASON),
        "row-unlisted-model",
    );
    expect(
        s,
        &resp,
        403,
        Some("unknown_model"),
        "analyst-1 -> simple-fp32 (not in authz config)",
    );
    expect_not_forwarded(s, "row-unlisted-model");
}

fn benchmark_echo_needs_no_reason(s: &Stack) {
    let token = s.token("analyst-1", ANALYST);
    let resp = s.infer(Some(&token), "benchmark-echo", None, "row-echo");
    expect(
        s,
        &resp,
        200,
        None,
        "analyst-1 -> benchmark-echo without a reason",
    );
    let body = resp.json();
    assert_eq!(body["outputs"][0]["name"], "ECHO", "{body}");
    assert_eq!(body["outputs"][0]["data"][0], "hello, gateway", "{body}");
}

/// Needs the rate limiter (issue 6) in authz: threat-triage allows 20 requests per minute.
fn security_engineer_gets_20_triages_then_429_and_admin_is_unaffected(s: &Stack) {
    let token = s.token("security-1", SECURITY);
    for i in 1..=20 {
        let ua = format!("row-security-{i}");
        let resp = s.infer(Some(&token), "threat-triage", Some(REASON), &ua);
        expect(
            s,
            &resp,
            200,
            None,
            &format!("security-1 -> threat-triage #{i}"),
        );
        if i == 1 {
            assert_eq!(
                resp.json()["outputs"]
                    .as_array()
                    .and_then(|o| o.iter().find(|t| t["name"] == "LABEL"))
                    .map(|t| t["data"][0].clone()),
                Some("malicious".into()),
                "{}",
                resp.body
            );
            assert_eq!(
                resp.header("ratelimit-limit"),
                Some("20"),
                "{:?}",
                resp.headers
            );
        }
    }
    let before = s.modelserver_metric("nv_inference_count", Some("threat-triage"));
    let resp = s.infer(
        Some(&token),
        "threat-triage",
        Some(REASON),
        "row-security-21",
    );
    expect(
        s,
        &resp,
        429,
        Some("rate_limited"),
        "security-1 -> threat-triage #21",
    );
    let retry_after: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", resp.headers));
    // 20/min is one request per 3 s: the next one is at most 3 s away (rounded up).
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    expect_not_forwarded(s, "row-security-21");
    assert_eq!(
        s.modelserver_metric("nv_inference_count", Some("threat-triage")),
        before
    );

    let admin = s.token("admin-1", ADMIN);
    let resp = s.infer(
        Some(&admin),
        "threat-triage",
        Some(REASON),
        "row-admin-after",
    );
    expect(
        s,
        &resp,
        200,
        None,
        "admin-1 -> threat-triage after security-1 was limited",
    );
}

/// Envoy removes client-sent `x-authz-*` headers before ext_authz, and authz sets its own on an
/// allow. The access log's `principal`/`decision_id` fields are the request headers as Envoy
/// forwards them to the model server, so they show what the model server received.
fn a_client_sent_authz_principal_never_reaches_the_model_server(s: &Stack) {
    let token = s.token("spoof-analyst", ANALYST);

    // Allowed request with forged identity headers: authz's values replace them.
    let resp = s.request(
        "POST",
        "/v2/models/benchmark-echo/infer",
        &[
            ("user-agent", "row-spoof-allowed"),
            ("authorization", &format!("Bearer {token}")),
            ("x-authz-principal", "admin-1"),
            ("x-authz-decision-id", "forged-decision"),
            ("X-Authz-Principal", "admin-1"),
        ],
        Some(e2e::stack::demo_infer_body("benchmark-echo")),
    );
    expect(s, &resp, 200, None, "spoofing headers with a valid token");
    let entry = s
        .access_log_entry("row-spoof-allowed")
        .unwrap_or_else(|| panic!("no access-log entry\n{}", s.diagnostics()));
    assert_eq!(entry["principal"], "spoof-analyst", "{entry}");
    let decision = entry["decision_id"].as_str().unwrap_or_default();
    assert!(
        !decision.is_empty() && decision != "-" && !decision.contains("forged"),
        "decision id forwarded: {entry}"
    );
    assert!(
        entry["upstream_host"].is_string(),
        "it was forwarded: {entry}"
    );

    // A public route (no ext_authz): the forged header is stripped anyway.
    let resp = s.request(
        "GET",
        "/v2/health/ready",
        &[
            ("user-agent", "row-spoof-public"),
            ("x-authz-principal", "admin-1"),
        ],
        None,
    );
    assert_eq!(resp.status, 200, "public health route: {}", resp.body);
    let entry = s
        .access_log_entry("row-spoof-public")
        .unwrap_or_else(|| panic!("no access-log entry\n{}", s.diagnostics()));
    assert!(
        entry["principal"].is_null() || entry["principal"] == "-",
        "forged principal forwarded on a public route: {entry}"
    );

    // The header is not an identity: without credentials it is still 401.
    let resp = s.request(
        "POST",
        "/v2/models/benchmark-echo/infer",
        &[
            ("user-agent", "row-spoof-anonymous"),
            ("x-authz-principal", "admin-1"),
        ],
        Some(e2e::stack::demo_infer_body("benchmark-echo")),
    );
    expect(
        s,
        &resp,
        401,
        Some("unauthenticated"),
        "forged principal without credentials",
    );
    expect_not_forwarded(s, "row-spoof-anonymous");

    // Underscore spellings (which some servers map to dashes) are rejected outright.
    let resp = s.request(
        "POST",
        "/v2/models/benchmark-echo/infer",
        &[
            ("user-agent", "row-spoof-underscore"),
            ("authorization", &format!("Bearer {token}")),
            ("x_authz_principal", "admin-1"),
        ],
        Some(e2e::stack::demo_infer_body("benchmark-echo")),
    );
    assert_eq!(
        resp.status, 400,
        "underscore header: {} {}",
        resp.status, resp.body
    );
}

/// The path tricks of issue 3, sent through Envoy by a caller who may use mission-summarizer and
/// benchmark-echo but not threat-triage: none of them reaches threat-triage (or anything else:
/// the model server sees no request at all), whatever Envoy or authz answers.
fn path_tricks_reach_no_model(s: &Stack) {
    let token = s.token("tricky-analyst", ANALYST);
    let auth = format!("Bearer {token}");
    // (path, expected status, expected `error.code`; None: Envoy's own bodiless 400)
    const ROLE_DENIED: (u16, Option<&str>) = (403, Some("role_not_allowed"));
    const ENVOY_REJECTS: (u16, Option<&str>) = (400, None);
    const INVALID_PATH: (u16, Option<&str>) = (400, Some("invalid_path"));
    const NOT_FOUND: (u16, Option<&str>) = (404, Some("not_found"));
    let cases: &[(&str, (u16, Option<&str>))] = &[
        // Envoy resolves these to /v2/models/threat-triage/infer, which authz then judges.
        (
            "/v2/models/mission-summarizer/../threat-triage/infer",
            ROLE_DENIED,
        ),
        (
            "/v2/models/mission-summarizer/%2e%2e/threat-triage/infer",
            ROLE_DENIED,
        ),
        (
            "/v2/models/mission-summarizer;/../threat-triage/infer",
            ROLE_DENIED,
        ),
        ("/v2/models/./threat-triage/infer", ROLE_DENIED),
        ("//v2/models/threat-triage/infer", ROLE_DENIED),
        ("/v2/models//threat-triage/infer", ROLE_DENIED),
        ("/v2/models/threat-triage/versions/1/infer", ROLE_DENIED),
        ("/v2/models/threat-triage/infer?x=1", ROLE_DENIED),
        // Escaped slashes and backslashes: rejected by Envoy before anything else.
        ("/v2/models/threat-triage%2Finfer", ENVOY_REJECTS),
        ("/v2/models/threat-triage%2finfer", ENVOY_REJECTS),
        (
            "/v2/models/mission-summarizer%2F..%2Fthreat-triage/infer",
            ENVOY_REJECTS,
        ),
        ("/v2/models/threat-triage%5Cinfer", ENVOY_REJECTS),
        (
            "/v2/models/mission-summarizer%5C..%5Cthreat-triage/infer",
            ENVOY_REJECTS,
        ),
        // Ambiguous paths Envoy routes but authz refuses to guess about.
        ("/v2/models/threat-triage%252Finfer", INVALID_PATH),
        ("/v2/models/threat-triage;v=1/infer", INVALID_PATH),
        ("/v2/models/threat-triage/infer/", INVALID_PATH),
        // Unicode look-alikes (Cyrillic а, fullwidth hyphen) of threat-triage.
        ("/v2/models/threat-tri%D0%B0ge/infer", INVALID_PATH),
        ("/v2/models/threat%EF%BC%8Dtriage/infer", INVALID_PATH),
        // Non-canonical case of the prefix matches no route.
        ("/V2/models/threat-triage/infer", NOT_FOUND),
        ("/v2/Models/threat-triage/infer", NOT_FOUND),
        // The repository API is never exposed.
        (
            "/v2/repository/models/threat-triage/load",
            (403, Some("not_exposed")),
        ),
        ("/v2/repository/index", (403, Some("not_exposed"))),
    ];
    let before_requests = s.envoy_requests_to_modelserver();
    let before_seen = s.modelserver_requests_seen();
    let before_triage = s.modelserver_metric("nv_inference_count", Some("threat-triage"));
    let mut failures = Vec::new();
    for (i, (path, want)) in cases.iter().enumerate() {
        let ua = format!("row-trick-{i}");
        let resp = s.request(
            "POST",
            path,
            &[
                ("user-agent", &ua),
                ("authorization", &auth),
                ("x-access-reason", REASON),
            ],
            Some(e2e::stack::demo_infer_body("threat-triage")),
        );
        let got = (resp.status, resp.error_code());
        eprintln!("{path} -> {} {:?}", got.0, got.1);
        if (got.0, got.1.as_deref()) != *want {
            failures.push(format!(
                "{path}: got {} {}, want {want:?}",
                resp.status, resp.body
            ));
        }
        match s.access_log_entry(&ua) {
            Some(e) if e["upstream_host"].is_null() || e["upstream_host"] == "-" => {}
            Some(e) => failures.push(format!("{path}: forwarded upstream: {e}")),
            None => failures.push(format!("{path}: no access-log entry")),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        s.diagnostics()
    );
    assert_eq!(
        s.envoy_requests_to_modelserver(),
        before_requests,
        "Envoy forwarded a trick"
    );
    assert_eq!(
        s.modelserver_requests_seen(),
        before_seen,
        "the model server saw a trick"
    );
    assert_eq!(
        s.modelserver_metric("nv_inference_count", Some("threat-triage")),
        before_triage
    );
}

/// Model metadata and readiness are authorized per model like inference (without the access
/// reason, which only inference needs).
fn model_metadata_is_authorized_per_model(s: &Stack) {
    let token = s.token("meta-analyst", ANALYST);
    let auth = format!("Bearer {token}");
    let get = |path: &str, ua: &str| {
        s.request(
            "GET",
            path,
            &[("user-agent", ua), ("authorization", &auth)],
            None,
        )
    };
    let resp = get("/v2/models/mission-summarizer", "row-meta-allowed");
    expect(
        s,
        &resp,
        200,
        None,
        "analyst metadata of mission-summarizer",
    );
    assert_eq!(resp.json()["name"], "mission-summarizer", "{}", resp.body);
    let resp = get("/v2/models/mission-summarizer/ready", "row-ready-allowed");
    expect(
        s,
        &resp,
        200,
        None,
        "analyst readiness of mission-summarizer",
    );
    let resp = get("/v2/models/threat-triage", "row-meta-denied");
    expect(
        s,
        &resp,
        403,
        Some("role_not_allowed"),
        "analyst metadata of threat-triage",
    );
    expect_not_forwarded(s, "row-meta-denied");
    let resp = get("/v2/models/threat-triage/config", "row-config-denied");
    expect(
        s,
        &resp,
        403,
        Some("role_not_allowed"),
        "analyst config of threat-triage",
    );
    expect_not_forwarded(s, "row-config-denied");
}

/// Public paths need no credentials and write no decision; the health of the gateway reflects
/// the model server's.
fn health_paths_are_public(s: &Stack) {
    for path in ["/v2/health/ready", "/v2/health/live"] {
        let resp = s.request("GET", path, &[], None);
        assert_eq!(resp.status, 200, "{path}: {}", resp.body);
    }
}

/// `GET /v1/models`: each demo principal sees exactly the models the demo policy lets it call,
/// with the reason flag and the limit of its roles; answered by authz, never forwarded.
fn the_catalog_lists_exactly_what_each_principal_may_call(s: &Stack) {
    let be = ("benchmark-echo", false, 120);
    let ms = ("mission-summarizer", true, 30);
    let tt = ("threat-triage", true, 20);
    let jwt = |sub, roles| ("authorization", format!("Bearer {}", s.token(sub, roles)));
    let cases = [
        ("analyst-1", jwt("analyst-1", ANALYST), vec![be, ms]),
        ("security-1", jwt("security-1", SECURITY), vec![be, ms, tt]),
        ("admin-1", jwt("admin-1", ADMIN), vec![be, ms, tt]),
        (
            "report-builder",
            ("x-api-key", "demo-report-builder-key".to_owned()),
            vec![be, ms],
        ),
    ];
    for (principal, (header, value), expected) in cases {
        let ua = format!("row-catalog-{principal}");
        let resp = s.request(
            "GET",
            "/v1/models",
            &[("user-agent", &ua), (header, &value)],
            None,
        );
        expect(s, &resp, 200, None, &format!("catalog of {principal}"));
        let body = resp.json();
        assert_eq!(body["principal"], principal, "{body}");
        let got: Vec<(&str, bool, u64)> = body["models"]
            .as_array()
            .unwrap_or_else(|| panic!("no models: {body}"))
            .iter()
            .map(|m| {
                assert_eq!(m["rate_limit"]["period"], "60s", "{m}");
                // Other tests here may have spent some of it; it never exceeds the burst.
                let burst = m["rate_limit"]["burst"].as_u64();
                assert!(
                    m["remaining"].as_u64().is_some_and(|r| Some(r) <= burst),
                    "{m}"
                );
                (
                    m["name"].as_str().unwrap_or_default(),
                    m["reason_required"].as_bool().unwrap_or_default(),
                    m["rate_limit"]["rate"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(got, expected, "catalog of {principal}: {body}");
        assert_eq!(resp.header("cache-control"), Some("no-store"));
        expect_not_forwarded(s, &ua);
    }
}

/// The catalog's `remaining` is what the `RateLimit-Remaining` header of the principal's last
/// inference said, and reading the catalog spends nothing: two reads show the same figure, and
/// the next inference's header continues the count. A model it has not called shows the full
/// burst. Uses its own principal and [`QUOTA_ROLE`] (5 per hour), so no other test and no refill
/// changes the figures.
fn the_catalog_shows_the_remaining_quota_and_reading_it_spends_nothing(s: &Stack) {
    let principal = "quota-1";
    let token = s.token(principal, &["analyst", "mission-user", QUOTA_ROLE]);
    let catalog = |ua: &str| {
        let resp = s.request(
            "GET",
            "/v1/models",
            &[("user-agent", ua), ("authorization", &format!("Bearer {token}"))],
            None,
        );
        expect(s, &resp, 200, None, ua);
        let body = resp.json();
        assert_eq!(body["principal"], principal, "{body}");
        let model = |name: &str| {
            body["models"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("{name} not listed: {body}"))
        };
        (model("benchmark-echo"), model("mission-summarizer"))
    };
    let (echo, summarizer) = catalog("row-quota-catalog-fresh");
    assert_eq!(echo["rate_limit"]["role"], QUOTA_ROLE, "{echo}");
    assert_eq!(echo["rate_limit"]["burst"], 5, "{echo}");
    assert_eq!(echo["remaining"], 5, "nothing spent yet: {echo}");
    assert_eq!(summarizer["remaining"], 30, "never called: {summarizer}");
    let mut said = None;
    for n in 1..=3 {
        let resp = s.infer(
            Some(&token),
            "benchmark-echo",
            None,
            &format!("row-quota-infer-{n}"),
        );
        expect(s, &resp, 200, None, &format!("inference {n}"));
        said = resp.header("ratelimit-remaining").map(str::to_owned);
    }
    assert_eq!(said.as_deref(), Some("2"), "5 - 3");
    for read in ["row-quota-catalog-1", "row-quota-catalog-2"] {
        let (echo, summarizer) = catalog(read);
        assert_eq!(
            echo["remaining"].to_string(),
            said.clone().unwrap_or_default(),
            "{read}: the catalog disagrees with the last RateLimit-Remaining: {echo}"
        );
        assert_eq!(summarizer["remaining"], 30, "{read}: {summarizer}");
        expect_not_forwarded(s, read);
    }
    let resp = s.infer(Some(&token), "benchmark-echo", None, "row-quota-infer-4");
    expect(s, &resp, 200, None, "inference after the catalog reads");
    assert_eq!(
        resp.header("ratelimit-remaining"),
        Some("1"),
        "the catalog reads spent nothing"
    );
}

/// The catalog needs credentials like any call, and a client-sent `x-authz-principal` names
/// nobody: Envoy strips it before the check, authz lists the token's principal.
fn the_catalog_needs_credentials_and_ignores_a_forged_principal(s: &Stack) {
    let resp = s.request(
        "GET",
        "/v1/models",
        &[("x-authz-principal", "admin-1")],
        None,
    );
    expect(s, &resp, 401, Some("unauthenticated"), "catalog without credentials");
    let token = s.token("analyst-1", ANALYST);
    let resp = s.request(
        "GET",
        "/v1/models",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-authz-principal", "admin-1"),
        ],
        None,
    );
    expect(s, &resp, 200, None, "catalog with a forged principal header");
    let body = resp.json();
    assert_eq!(body["principal"], "analyst-1", "{body}");
    let names: Vec<&str> = body["models"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!names.contains(&"threat-triage"), "{body}");
    // Only a read is the catalog: any other method on its path is not exposed.
    for method in ["POST", "DELETE", "PUT"] {
        let resp = s.request(
            method,
            "/v1/models",
            &[("authorization", &format!("Bearer {token}"))],
            Some("{}"),
        );
        expect(
            s,
            &resp,
            403,
            Some("path_not_allowed"),
            &format!("{method} /v1/models"),
        );
        assert!(resp.json().get("models").is_none(), "{method}: no catalog");
    }
}
}

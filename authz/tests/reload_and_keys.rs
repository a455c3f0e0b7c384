//! Hot reload (valid swaps, invalid rejected with the running config kept) and JWKS sources
//! (HTTP URL via OIDC discovery, key rotation picked up on an unknown `kid`, rate-limited).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::*;
use serde_json::json;

const BE: &str = "/v2/models/benchmark-echo/infer";

fn metric(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn invalid_reload_is_rejected_and_the_running_config_kept() {
    let server = Server::start().await;
    let ok = server.check(req(BE).bearer(&analyst()).build()).await;
    assert_eq!(ok.status, 200);

    // A config with a broken policy file path and a bad model: rejected.
    let good = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        good.replace(
            "rate = 120, period = \"60s\"",
            "rate = 120, period = \"soon\"",
        ),
    )
    .unwrap();
    let err = authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("models.benchmark-echo.rate_limit.period"),
        "{err}"
    );
    assert_eq!(
        server
            .check(req(BE).bearer(&analyst()).build())
            .await
            .status,
        200
    );

    // A policy that does not validate against the schema: rejected too.
    let bad_policy = server.dir.path().join("bad.cedar");
    std::fs::write(
        &bad_policy,
        "@id(\"x\") permit(principal, action, resource) when { resource.owner == 1 };",
    )
    .unwrap();
    std::fs::write(
        &server.config,
        good.replace(
            "files = [",
            &format!("files = [\"{}\", ", bad_policy.display()),
        ),
    )
    .unwrap();
    let err = authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
    assert_eq!(
        server
            .check(req(BE).bearer(&analyst()).build())
            .await
            .status,
        200
    );

    // A valid change lands atomically: analysts lose benchmark-echo.
    std::fs::write(
        &server.config,
        good.replace(
            "allowed_roles = [\"analyst\", \"security-engineer\", \"platform-admin\", \"load-tester\"]",
            "allowed_roles = [\"security-engineer\", \"platform-admin\", \"load-tester\"]",
        ),
    )
    .unwrap();
    authz::runtime::reload(&server.config, &server.runtime, &server.metrics)
        .await
        .unwrap();
    let out = server.check(req(BE).bearer(&analyst()).build()).await;
    assert_eq!((out.status, out.code.as_str()), (403, "role_not_allowed"));

    let (_, body) = server.admin_get("/metrics").await;
    assert_eq!(
        metric(&body, "authz_config_reloads_total{result=\"failure\"}"),
        Some(2),
        "{body}"
    );
    assert_eq!(
        metric(&body, "authz_config_reloads_total{result=\"success\"}"),
        Some(1),
        "{body}"
    );
}

#[tokio::test]
async fn file_changes_are_picked_up_by_polling() {
    let server = Server::start().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(authz::runtime::watch(
        server.config.clone(),
        Arc::clone(&server.runtime),
        Arc::clone(&server.metrics),
        Duration::from_millis(50),
        async {
            let _ = stop_rx.await;
        },
    ));
    assert_eq!(
        server
            .check(req(BE).bearer(&analyst()).build())
            .await
            .status,
        200
    );
    let policy = server.dir.path().join("extra.cedar");
    std::fs::write(
        &policy,
        "@id(\"no-analysts-on-echo\") @reason(\"echo_closed\")\n\
         forbid(principal in Gateway::Role::\"analyst\", action, resource == Gateway::Model::\"benchmark-echo\");",
    )
    .unwrap();
    let text = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        text.replace("files = [", &format!("files = [\"{}\", ", policy.display())),
    )
    .unwrap();
    let mut last = None;
    for _ in 0..100 {
        let out = server.check(req(BE).bearer(&analyst()).build()).await;
        if out.code == "echo_closed" {
            last = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = last.expect("policy change was not picked up within 5 s");
    assert_eq!(out.status, 403);
    assert_eq!(
        out.body["error"]["message"].as_str().unwrap(),
        "denied by policy (echo_closed): no-analysts-on-echo"
    );
    let _ = stop_tx.send(());
    watcher.await.unwrap();
}

/// A tiny identity provider: discovery document and a JWKS that tests can rotate.
struct Idp {
    url: String,
    jwks: Arc<Mutex<String>>,
    jwks_fetches: Arc<Mutex<u32>>,
}

async fn idp() -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(
        json!({"keys": [rsa_jwk(&keys().rsa, "idp-1")]}).to_string(),
    ));
    let fetches = Arc::new(Mutex::new(0u32));
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/keys")}).to_string();
    #[derive(Clone)]
    struct S(Arc<Mutex<String>>, Arc<Mutex<u32>>, String);
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(s): State<S>| async move { s.2.clone() }),
        )
        .route(
            "/keys",
            get(|State(s): State<S>| async move {
                *s.1.lock().unwrap() += 1;
                s.0.lock().unwrap().clone()
            }),
        )
        .with_state(S(Arc::clone(&jwks), Arc::clone(&fetches), discovery));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Idp {
        url,
        jwks,
        jwks_fetches: fetches,
    }
}

#[tokio::test]
async fn oidc_discovery_rotation_and_rate_limited_refresh() {
    let idp = idp().await;
    let server = Server::start_with(&format!(
        "[[authn.issuers]]\nissuer = \"{}\"\naudiences = [\"inference-gateway\"]\ndiscovery = true\n\
         allow_insecure_http = true\nroles_claim = \"realm_access.roles\"\nmin_refresh_interval = \"1h\"\n",
        idp.url
    ))
    .await;
    let claims_for = |sub: &str| {
        let mut c = claims(sub, &[]);
        c["iss"] = json!(idp.url);
        c["realm_access"] = json!({"roles": ["analyst"]});
        c
    };
    let der = &keys().rsa_der;
    let out = server
        .check(
            req(BE)
                .bearer(&rs256_with(&claims_for("kc-user"), "idp-1", der))
                .build(),
        )
        .await;
    assert_eq!(
        (out.status, out.headers["x-authz-principal"].as_str()),
        (200, "kc-user")
    );
    assert_eq!(*idp.jwks_fetches.lock().unwrap(), 1);

    // The IdP rotates in a new key; the first token naming it triggers one refresh.
    *idp.jwks.lock().unwrap() =
        json!({"keys": [rsa_jwk(&keys().rsa, "idp-1"), rsa_jwk(&keys().rogue, "idp-2")]})
            .to_string();
    let rotated = rs256_with(&claims_for("kc-user-2"), "idp-2", &rogue_der());
    let out = server.check(req(BE).bearer(&rotated).build()).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(*idp.jwks_fetches.lock().unwrap(), 2);

    // Unknown kids within min_refresh_interval do not reach the IdP again.
    for i in 0..5 {
        let forged = rs256_with(&claims_for("x"), &format!("bogus-{i}"), der);
        let out = server.check(req(BE).bearer(&forged).build()).await;
        assert_eq!((out.status, out.code.as_str()), (401, "invalid_token"));
    }
    assert_eq!(*idp.jwks_fetches.lock().unwrap(), 2);
}

#[tokio::test]
async fn failed_discovery_leaves_the_service_not_ready() {
    let idp = idp().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[[authn.issuers]]\nissuer = \"{}/realms/x\"\naudiences = [\"a\"]\ndiscovery = true\nallow_insecure_http = true\n",
            idp.url
        ),
    );
    // Discovery of "{url}/realms/x" 404s here; the server starts but is not ready.
    let rt = authz::runtime::Runtime::load(&path, Arc::new(authz::metrics::Metrics::new()))
        .await
        .unwrap();
    assert!(!rt.ready());
    assert!(rt.not_ready_reason().unwrap().contains("/realms/x"));
}

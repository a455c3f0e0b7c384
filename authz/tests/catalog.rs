//! `GET /v1/models`: the catalog each demo principal gets, computed by `policy::access` (the
//! code `authz policy diff` uses) with the limits configured for its roles.

mod common;

use std::sync::Arc;

use authz::catalog::{Catalog, catalog};
use authz::decision::{AuthMethod, Principal};
use authz::metrics::Metrics;
use authz::runtime::Runtime;
use common::write_config;

async fn demo_catalog(id: &str, method: AuthMethod, roles: &[&str]) -> Catalog {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let rt = Runtime::load(&path, Arc::new(Metrics::new()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let principal = Principal {
        id: id.to_owned(),
        auth_method: method,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    catalog(&rt.policy, &rt.limits, &principal, 1_700_000_000)
}

/// (name, reason required, rate, period, burst) of one listed model.
type Row<'a> = (&'a str, bool, Option<u64>, Option<&'a str>, Option<u64>);

/// The [`Row`] of each listed model.
fn summary(c: &Catalog) -> Vec<Row<'_>> {
    c.models
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.reason_required,
                m.rate_limit.rate,
                m.rate_limit.period.as_deref(),
                m.rate_limit.burst,
            )
        })
        .collect()
}

#[tokio::test]
async fn an_analyst_sees_its_two_models_and_never_threat_triage() {
    let c = demo_catalog("analyst-1", AuthMethod::Jwt, &["analyst", "mission-user"]).await;
    assert_eq!(
        summary(&c),
        [
            ("benchmark-echo", false, Some(120), Some("60s"), Some(120)),
            ("mission-summarizer", true, Some(30), Some("60s"), Some(30)),
        ]
    );
    let m = &c.models[1];
    assert_eq!(m.sensitivity, "standard");
    assert_eq!(
        m.actions,
        ["infer", "ready", "metadata", "config", "statistics"]
    );
    assert_eq!(m.remaining, None);
    assert_eq!(c.principal, "analyst-1");
}

#[tokio::test]
async fn security_and_admin_see_every_model_with_reason_flags() {
    for (id, roles) in [
        ("security-1", ["security-engineer", "mission-user"]),
        ("admin-1", ["platform-admin", "security-engineer"]),
    ] {
        let c = demo_catalog(id, AuthMethod::Jwt, &roles).await;
        assert_eq!(
            summary(&c),
            [
                ("benchmark-echo", false, Some(120), Some("60s"), Some(120)),
                ("mission-summarizer", true, Some(30), Some("60s"), Some(30)),
                ("threat-triage", true, Some(20), Some("60s"), Some(20)),
            ],
            "{id}"
        );
        assert_eq!(c.models[2].sensitivity, "restricted");
    }
}

#[tokio::test]
async fn a_role_override_is_the_limit_reported_and_names_its_role() {
    let c = demo_catalog("load-tester", AuthMethod::ApiKey, &["load-tester"]).await;
    assert_eq!(
        summary(&c),
        [(
            "benchmark-echo",
            false,
            Some(100_000),
            Some("1s"),
            Some(100_000)
        )]
    );
    assert_eq!(c.models[0].rate_limit.role.as_deref(), Some("load-tester"));
    assert_eq!(c.auth_method, "api_key");
}

#[tokio::test]
async fn a_forbid_on_api_keys_hides_a_restricted_model_its_roles_would_allow() {
    // `restricted-models-need-user-identity`: security-engineer may use threat-triage, but not
    // with an API key.
    let c = demo_catalog("key", AuthMethod::ApiKey, &["security-engineer"]).await;
    let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["benchmark-echo"]);
}

#[tokio::test]
async fn a_principal_without_a_permitted_role_gets_an_empty_catalog() {
    let c = demo_catalog("nobody", AuthMethod::Jwt, &["intern"]).await;
    assert!(c.models.is_empty());
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["models"], serde_json::json!([]));
}

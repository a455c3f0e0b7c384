//! Step 6: the one place a [`Decision`] becomes a `CheckResponse`, i.e. what Envoy does next.
//!
//! - **Allow** (`status` OK + `OkHttpResponse`): Envoy forwards the request upstream after applying
//!   our header mutations. `x-authz-principal`, `x-authz-decision-id`, `x-authz-model`,
//!   `x-authz-model-version` and `x-authz-action` are set with `OVERWRITE_IF_EXISTS_OR_ADD`, so a client-sent copy
//!   never reaches the model server as sent; `authorization` and `x-api-key` are listed in
//!   `headers_to_remove`, so credentials never reach it either. `response_headers_to_add` (e.g.
//!   `RateLimit-*`) are added to the response Envoy returns to the client.
//! - **Deny** (`status` PERMISSION_DENIED / UNAUTHENTICATED / ... + `DeniedHttpResponse`): Envoy
//!   does not forward; it answers the client itself with our status, headers and JSON body
//!   `{"error":{"code","message","decision_id"}}`.
//!
//! The gRPC `status` code inside the CheckResponse only tells Envoy allow (OK) vs deny (anything
//! else); the client sees the `DeniedHttpResponse`. We still pick a fitting code for logs. Errors
//! *of the Check call itself* (which trigger Envoy's `failure_mode_allow` / `status_on_error`) never
//! come from here: every decision, including "a dependency is down", is an explicit deny with 503.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use crate::decision::{Decision, ReasonCode};

/// Header naming the authenticated principal, for the model server and access logs.
pub const HEADER_PRINCIPAL: &str = "x-authz-principal";
/// Header carrying the decision id (UUIDv7), to correlate with the audit log.
pub const HEADER_DECISION_ID: &str = "x-authz-decision-id";
/// Header naming the authorized model; a model server can check it against the model it serves
/// (for gRPC, where only the start of the message was inspected).
pub const HEADER_MODEL: &str = "x-authz-model";
/// Header naming the authorized model version ("" when none was named).
pub const HEADER_MODEL_VERSION: &str = "x-authz-model-version";
/// Header naming the authorized action (`infer`, `ready`, `metadata`, `config`, `statistics`):
/// the model server refuses a call whose decoded model, version or action differs from these three.
pub const HEADER_ACTION: &str = "x-authz-action";
/// Credential headers removed before the request goes upstream.
pub const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "x-api-key"];

/// gRPC status codes used in `CheckResponse.status` (google.rpc.Code).
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Builds the `CheckResponse` for a decision.
pub fn to_check_response(d: &Decision) -> CheckResponse {
    let id = d.id.to_string();
    if let (true, Some(catalog)) = (d.allowed(), &d.catalog) {
        catalog_response(catalog, &id)
    } else if d.allowed() {
        allowed_response(d, &id)
    } else {
        denied_response(d, &id)
    }
}

/// OK: the `x-authz-*` headers set (overwriting), credentials removed before the model server,
/// the rate-limit headers added to the response.
fn allowed_response(d: &Decision, id: &str) -> CheckResponse {
    let mut headers = vec![set(HEADER_DECISION_ID, id)];
    if let Some(p) = &d.principal {
        headers.push(set(HEADER_PRINCIPAL, &p.id));
    }
    if let Some(m) = &d.model {
        headers.push(set(HEADER_MODEL, m));
        headers.push(set(
            HEADER_MODEL_VERSION,
            d.version.as_deref().unwrap_or(""),
        ));
        if let Some(a) = d.action {
            headers.push(set(HEADER_ACTION, a.as_str()));
        }
    }
    CheckResponse {
        status: Some(RpcStatus {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove: CREDENTIAL_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            response_headers_to_add: d.response_headers.iter().map(|(k, v)| set(k, v)).collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `GET /v1/models`, answered by authz itself: Envoy's denied-response path with status 200 and
/// the catalog as the body, so nothing is forwarded upstream (no upstream has the policy) and no
/// identity header has to be trusted by a second listener. Envoy counts it under its ext_authz
/// `denied` stat and logs the response flag `UAEX` (docs/policy-rollout.md, "What may I call?").
fn catalog_response(catalog: &crate::catalog::Catalog, id: &str) -> CheckResponse {
    // Serializing plain strings, numbers and bools cannot fail.
    let body = serde_json::to_string(catalog).unwrap_or_default();
    CheckResponse {
        status: Some(RpcStatus {
            // Any non-OK code makes Envoy answer with `denied_response`; the client sees 200.
            code: code::PERMISSION_DENIED,
            message: "catalog".to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 200 }),
            headers: vec![
                set("content-type", "application/json"),
                set(HEADER_DECISION_ID, id),
                // The catalog depends on the credentials and the policy in force.
                set("cache-control", "no-store"),
            ],
            body,
        })),
        ..Default::default()
    }
}

/// Denied: the HTTP status, headers and JSON error body, and the matching gRPC status.
fn denied_response(d: &Decision, id: &str) -> CheckResponse {
    let status = d.http_status();
    let mut headers = vec![
        set("content-type", "application/json"),
        set(HEADER_DECISION_ID, id),
        // Denials depend on credentials and time; never let a cache replay one.
        set("cache-control", "no-store"),
    ];
    if status == 401 {
        // RFC 6750 §3: tell the client which scheme to use and what went wrong.
        let error = match d.reason {
            ReasonCode::InvalidToken => ", error=\"invalid_token\"",
            _ => "",
        };
        headers.push(set(
            "www-authenticate",
            &format!("Bearer realm=\"inference-gateway\"{error}"),
        ));
    }
    // `Retry-After` and the `RateLimit-*` headers come from the rate limiter's state.
    headers.extend(d.response_headers.iter().map(|(k, v)| set(k, v)));
    let body = serde_json::json!({
        "error": {
            "code": d.reason.as_str(),
            "message": d.message,
            "decision_id": id,
        }
    })
    .to_string();
    let grpc_code = match status {
        400 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        429 => code::RESOURCE_EXHAUSTED,
        503 => code::UNAVAILABLE,
        _ => code::PERMISSION_DENIED,
    };
    CheckResponse {
        status: Some(RpcStatus {
            code: grpc_code,
            message: d.reason.as_str().to_owned(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body,
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{AuthMethod, Principal};

    fn header<'a>(h: &'a [HeaderValueOption], k: &str) -> Option<&'a HeaderValueOption> {
        h.iter()
            .find(|o| o.header.as_ref().is_some_and(|h| h.key == k))
    }

    #[test]
    fn allow_overwrites_identity_headers_and_strips_credentials() {
        let mut d = Decision::new(ReasonCode::Allowed, "ok");
        d.principal = Some(Principal {
            id: "analyst-1".into(),
            auth_method: AuthMethod::Jwt,
            roles: vec![],
        });
        d.model = Some("m".into());
        d.action = Some(crate::request::Action::Config);
        d.response_headers
            .push(("ratelimit-remaining".into(), "3".into()));
        let r = to_check_response(&d);
        assert_eq!(r.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!()
        };
        let p = header(&ok.headers, HEADER_PRINCIPAL).unwrap();
        assert_eq!(p.header.as_ref().unwrap().value, "analyst-1");
        assert_eq!(
            p.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
        assert!(header(&ok.headers, HEADER_DECISION_ID).is_some());
        // The decision the model server checks the decoded call against.
        for (name, value) in [
            (HEADER_MODEL, "m"),
            (HEADER_MODEL_VERSION, ""),
            (HEADER_ACTION, "config"),
        ] {
            let h = header(&ok.headers, name).unwrap();
            assert_eq!(h.header.as_ref().unwrap().value, value, "{name}");
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
        }
        assert_eq!(ok.headers_to_remove, vec!["authorization", "x-api-key"]);
        assert_eq!(ok.response_headers_to_add.len(), 1);
    }

    #[test]
    fn denials_carry_status_body_and_challenge() {
        let d = Decision::new(ReasonCode::InvalidToken, "token expired");
        let r = to_check_response(&d);
        let Some(HttpResponse::DeniedResponse(den)) = r.http_response else {
            panic!()
        };
        assert_eq!(den.status.unwrap().code, 401);
        assert!(
            header(&den.headers, "www-authenticate")
                .unwrap()
                .header
                .as_ref()
                .unwrap()
                .value
                .contains("invalid_token")
        );
        let body: serde_json::Value = serde_json::from_str(&den.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_token");
        assert_eq!(body["error"]["decision_id"], d.id.to_string());

        let mut d = Decision::new(ReasonCode::RateLimited, "slow down");
        d.response_headers = vec![("retry-after".into(), "3".into())];
        let Some(HttpResponse::DeniedResponse(den)) = to_check_response(&d).http_response else {
            panic!()
        };
        assert_eq!(den.status.unwrap().code, 429);
        assert_eq!(
            header(&den.headers, "retry-after")
                .unwrap()
                .header
                .as_ref()
                .unwrap()
                .value,
            "3"
        );
    }

    #[test]
    fn the_catalog_is_a_200_answered_by_envoy_never_forwarded() {
        let mut d = Decision::new(ReasonCode::Allowed, "catalog");
        d.catalog = Some(crate::catalog::Catalog {
            principal: "analyst-1".into(),
            auth_method: "jwt",
            models: vec![],
        });
        let r = to_check_response(&d);
        assert_ne!(
            r.status.unwrap().code,
            0,
            "a non-OK code: Envoy answers itself"
        );
        let Some(HttpResponse::DeniedResponse(denied)) = r.http_response else {
            panic!("not answered by Envoy");
        };
        assert_eq!(denied.status.unwrap().code, 200);
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["principal"], "analyst-1");
        assert!(header(&denied.headers, "cache-control").is_some());
    }
}

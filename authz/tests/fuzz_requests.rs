//! Property test over whole check requests: arbitrary paths, headers and bodies without a valid
//! credential never produce an allow (except configured public paths) and never panic.

mod common;

use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn garbage_requests_are_denied_not_allowed(
        path in prop_oneof![
            "/v2/models/[a-zA-Z%./;\\\\-]{0,24}/(infer|ready|config|INFER)",
            "\\PC{0,60}",
            Just("/inference.GRPCInferenceService/ModelInfer".to_owned()),
        ],
        auth in proptest::option::of("\\PC{0,80}"),
        key in proptest::option::of("\\PC{0,40}"),
        reason in proptest::option::of("\\PC{0,40}"),
        peer in proptest::option::of("spiffe://[a-z./]{0,30}"),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let server = server().await;
            let svc = authz::service::AuthzService::start(
                std::sync::Arc::clone(&server.runtime),
                std::sync::Arc::clone(&server.metrics),
            ).expect("the decision pipeline starts");
            let mut r = req(&path).body(body.clone());
            if let Some(a) = &auth { r = r.header("authorization", a); }
            if let Some(k) = &key { r = r.api_key(k); }
            if let Some(x) = &reason { r = r.reason(x); }
            if let Some(p) = &peer { r = r.peer(p); }
            let d = svc.decide(&r.build()).await;
            let public = server.runtime.load().config.request.public_paths.iter().any(|p| p == &path);
            prop_assert!(!d.allowed() || public, "allowed {path:?}: {:?}", d.reason);
            prop_assert!(d.http_status() >= 400 || public);
            Ok(())
        })?;
    }
}

/// One server per test process (proptest cases share it).
async fn server() -> &'static Server {
    static SERVER: tokio::sync::OnceCell<Server> = tokio::sync::OnceCell::const_new();
    SERVER.get_or_init(|| async { Server::start().await }).await
}

//! Shared test fixtures: real keys generated per test binary, a config in a temp dir built from
//! the shipped schema and policies, an in-process server on 127.0.0.1:0, and request builders.
#![allow(dead_code)]

pub mod audit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use authz::devkeys::DevKey;
use authz::metrics::Metrics;
use authz::runtime::{Runtime, SharedRuntime};
use authz::server::Listeners;
use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "inference-gateway";
pub const RSA_KID: &str = "rsa-1";
pub const LOAD_TESTER_KEY: &str = "demo-load-tester-key-do-not-use-in-production";
pub const REPORT_BUILDER_KEY: &str = "demo-report-builder-key";
pub const TRIAGE_BOT: &str = "spiffe://gateway.local/ns/security/sa/triage-bot";

/// Test keys, generated once per test binary.
pub struct Keys {
    pub rsa: rsa::RsaPrivateKey,
    pub rsa_der: Vec<u8>,
    pub ed: DevKey,
    /// A second RSA key that no JWKS lists (forgeries).
    pub rogue: rsa::RsaPrivateKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let rsa = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let rogue = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let rsa_der = rsa.to_pkcs1_der().unwrap().as_bytes().to_vec();
        Keys {
            rsa,
            rsa_der,
            ed: DevKey::generate(),
            rogue,
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn rsa_jwk(key: &rsa::RsaPrivateKey, kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
           "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
}

/// JWKS with the RSA key (`rsa-1`) and the Ed25519 dev key.
pub fn jwks_doc() -> String {
    let k = keys();
    let ed: Value = serde_json::from_str(&k.ed.jwks_json()).unwrap();
    json!({"keys": [rsa_jwk(&k.rsa, RSA_KID), ed["keys"][0].clone()]}).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn claims(sub: &str, roles: &[&str]) -> Value {
    let n = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles, "iat": n, "nbf": n, "exp": n + 600})
}

/// RS256 token signed with the configured RSA key.
pub fn rs256(claims: &Value) -> String {
    rs256_with(claims, RSA_KID, &keys().rsa_der)
}

pub fn rs256_with(claims: &Value, kid: &str, der: &[u8]) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &jsonwebtoken::EncodingKey::from_rsa_der(der)).unwrap()
}

pub fn rogue_der() -> Vec<u8> {
    keys().rogue.to_pkcs1_der().unwrap().as_bytes().to_vec()
}

/// A token for a demo principal (RS256).
pub fn token_for(sub: &str, roles: &[&str]) -> String {
    rs256(&claims(sub, roles))
}

pub fn analyst() -> String {
    token_for("analyst-1", &["analyst", "mission-user"])
}
pub fn security() -> String {
    token_for("security-1", &["security-engineer", "mission-user"])
}

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Writes the demo config into `dir`, with the test issuer and JWKS instead of the dev one.
/// `extra` is appended verbatim (more issuers, tweaks).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let demo = std::fs::read_to_string(config_dir().join("authz.toml")).unwrap();
    let policies = config_dir().join("policies");
    let demo = demo
        .replace("https://issuer.authz.dev", ISSUER)
        .replace("../.dev/jwks.json", "jwks.json")
        .replace("\"policies/", &format!("\"{}/", policies.display()))
        .replace(
            "reload_poll_interval = \"2s\"",
            "reload_poll_interval = \"0s\"",
        );
    std::fs::write(dir.join("jwks.json"), jwks_doc()).unwrap();
    let path = dir.join("authz.toml");
    std::fs::write(&path, format!("{demo}\n{extra}")).unwrap();
    path
}

/// An in-process authz: gRPC and admin servers on loopback, stopped on drop.
pub struct Server {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub runtime: SharedRuntime,
    pub metrics: Arc<Metrics>,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    /// Completing it starts the drain; dropped with the server, which also starts it.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The `serve` task.
    serving: Option<tokio::task::JoinHandle<Result<(), authz::server::ServeError>>>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with("").await
    }

    /// Starts the production wiring (`authz::server::Server::serve`) on loopback listeners,
    /// with `extra` appended to the demo config.
    pub async fn start_with(extra: &str) -> Server {
        Self::start_editing(extra, |text| text).await
    }

    /// As [`Server::start_with`], with `edit` applied to the config text first.
    pub async fn start_editing(extra: &str, edit: impl FnOnce(String) -> String) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), extra);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, edit(text)).unwrap();
        let metrics = Arc::new(Metrics::new());
        let rt = Runtime::load(&config, Arc::clone(&metrics))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners {
            grpc_unix: None,
            grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let grpc = listeners.grpc.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let server = authz::server::Server::start(
            &config,
            rt,
            Arc::clone(&metrics),
            telemetry::Tracer::disabled(),
        )
        .expect("the decision pipeline starts");
        let runtime = server.runtime();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(listeners, async {
            let _ = rx.await;
        }));
        Server {
            grpc,
            admin,
            runtime,
            metrics,
            config,
            dir,
            stop: Some(tx),
            serving: Some(serving),
        }
    }

    /// Starts the drain (as SIGTERM does); the returned task ends when `serve` returns.
    pub fn start_drain(
        &mut self,
    ) -> Option<tokio::task::JoinHandle<Result<(), authz::server::ServeError>>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.serving.take()
    }

    pub async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// A `grpc.health.v1` client on the gRPC listener.
    pub async fn health(
        &self,
    ) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        tonic_health::pb::health_client::HealthClient::new(channel)
    }

    pub async fn check(&self, req: CheckRequest) -> Outcome {
        let resp = self.client().await.check(req).await.unwrap().into_inner();
        Outcome::from(resp)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// What Envoy would do with a CheckResponse.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    pub code: String,
    pub body: Value,
    /// Headers set on the upstream request (allow) or on the client response (deny).
    pub headers: HashMap<String, String>,
    /// `append_action` of each header.
    pub actions: HashMap<String, i32>,
    pub removed: Vec<String>,
    /// Headers Envoy adds to the client's response on allow (`RateLimit-*`).
    pub response_headers: HashMap<String, String>,
    pub grpc_code: i32,
}

impl From<CheckResponse> for Outcome {
    fn from(r: CheckResponse) -> Self {
        let grpc_code = r.status.as_ref().map_or(-1, |s| s.code);
        let mut headers = HashMap::new();
        let mut actions = HashMap::new();
        match r.http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                for h in &ok.headers {
                    let hv = h.header.as_ref().unwrap();
                    headers.insert(hv.key.clone(), hv.value.clone());
                    actions.insert(hv.key.clone(), h.append_action);
                }
                Outcome {
                    status: 200,
                    code: "allowed".into(),
                    body: Value::Null,
                    headers,
                    actions,
                    removed: ok.headers_to_remove,
                    response_headers: ok
                        .response_headers_to_add
                        .iter()
                        .filter_map(|h| h.header.as_ref())
                        .map(|h| (h.key.clone(), h.value.clone()))
                        .collect(),
                    grpc_code,
                }
            }
            Some(HttpResponse::DeniedResponse(d)) => {
                for h in &d.headers {
                    let hv = h.header.as_ref().unwrap();
                    headers.insert(hv.key.clone(), hv.value.clone());
                }
                let body: Value = serde_json::from_str(&d.body).unwrap();
                Outcome {
                    status: d.status.unwrap().code as u16,
                    // The catalog (`GET /v1/models`) is a 200 with no error code.
                    code: body["error"]["code"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    body,
                    headers,
                    actions,
                    removed: vec![],
                    response_headers: HashMap::new(),
                    grpc_code,
                }
            }
            other => panic!("no http_response: {other:?}"),
        }
    }
}

/// Builds a CheckRequest the way Envoy does.
#[derive(Clone)]
pub struct Req {
    pub req: CheckRequest,
}

pub fn req(path: &str) -> Req {
    let http = HttpRequest {
        id: "12345".into(),
        method: "POST".into(),
        path: path.into(),
        host: "gateway".into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        headers: HashMap::from([
            (":path".to_owned(), path.to_owned()),
            (":method".to_owned(), "POST".to_owned()),
            ("x-request-id".to_owned(), "req-abc-123".to_owned()),
        ]),
        ..Default::default()
    };
    Req {
        req: CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "10.1.2.3".into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(http),
                }),
                ..Default::default()
            }),
        },
    }
}

impl Req {
    fn http(&mut self) -> &mut HttpRequest {
        self.req
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .as_mut()
            .unwrap()
    }
    /// The request's method (Envoy's `method` attribute and `:method`).
    pub fn method(mut self, m: &str) -> Self {
        self.http().method = m.to_owned();
        self.header(":method", m)
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.http().headers.insert(k.to_owned(), v.to_owned());
        self
    }
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn reason(self, r: &str) -> Self {
        self.header("x-access-reason", r)
    }
    pub fn api_key(self, k: &str) -> Self {
        self.header("x-api-key", k)
    }
    pub fn peer(mut self, spiffe: &str) -> Self {
        self.req
            .attributes
            .as_mut()
            .unwrap()
            .source
            .as_mut()
            .unwrap()
            .principal = spiffe.to_owned();
        self
    }
    pub fn body(mut self, bytes: Vec<u8>) -> Self {
        self.http().raw_body = bytes;
        self
    }
    pub fn no_path(mut self) -> Self {
        self.http().path.clear();
        self.http().headers.remove(":path");
        self
    }
    pub fn raw_header(mut self, k: &str, v: &[u8]) -> Self {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
        let http = self.http();
        let map = http.header_map.get_or_insert_with(HeaderMap::default);
        map.headers.push(HeaderValue {
            key: k.to_owned(),
            raw_value: v.to_vec(),
            ..Default::default()
        });
        self
    }
    pub fn build(self) -> CheckRequest {
        self.req
    }
}

/// A gRPC frame carrying a ModelInferRequest with `model_name`/`model_version` (+ an id field).
pub fn grpc_frame(name: &str, version: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    for (field, v) in [(1u8, name), (2, version), (3, "req-1")] {
        if v.is_empty() {
            continue;
        }
        msg.push((field << 3) | 2);
        msg.push(v.len() as u8);
        msg.extend_from_slice(v.as_bytes());
    }
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

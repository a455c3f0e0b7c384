//! The floor of any ext_authz service, for `make bench` (variant N): a gRPC
//! `envoy.service.auth.v3.Authorization` server that allows every request at once, with no
//! authentication, policy, rate limit or audit, served the way `authz serve` serves (tonic,
//! TCP_NODELAY, a multi-thread runtime). Envoy + this server measures what the ext_authz call
//! itself costs (Envoy's gRPC client, the extra hop, HTTP/2 and protobuf on both sides), so the
//! benchmark can tell that apart from what authz's decision adds.
//!
//! Never deploy it: it authorizes everything.
//!
//! ```sh
//! cargo build --release -p authz --example ext_authz_floor
//! target/release/examples/ext_authz_floor 127.0.0.1:50061      # or unix:/tmp/floor.sock
//! ```

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus::default()), // code 0: OK
            ..Default::default()
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(addr) = std::env::args().nth(1) else {
        return Err("usage: ext_authz_floor HOST:PORT | unix:/PATH".into());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let server =
            tonic::transport::Server::builder().add_service(AuthorizationServer::new(AllowAll));
        eprintln!("ext_authz_floor: allowing every request on {addr}");
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            server.serve_with_incoming_shutdown(incoming, stop).await?;
        } else {
            let listener =
                tokio::net::TcpListener::bind(addr.parse::<std::net::SocketAddr>()?).await?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(incoming, stop).await?;
        }
        Ok(())
    })
}

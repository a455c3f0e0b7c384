//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService` and
//! `grpc.health.v1.Health`.
//!
//! Inputs come either all in `raw_input_contents` (one entry per input, the binary layout) or each
//! in typed `contents`. Outputs are always returned in `raw_output_contents`, which is what Triton
//! does and what its clients read. Methods of the published service that are not implemented
//! (streaming, shared memory, trace, logging) are not in the service definition, so tonic answers
//! them `UNIMPLEMENTED`.
//!
//! This file owns the service and its methods; `infer` turns `ModelInfer` messages into tensors and
//! back, `proto` renders a model's configuration and statistics as protobuf messages.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use crate::access::{self, ModelAction, ModelCall};
use crate::error::ServerError;
use crate::server::ModelServer;

mod infer;
mod proto;

use infer::{decode_request, infer_response, timeout_parameter};
use proto::{config_proto, stats_proto};

/// Generated protocol types.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Serves the gRPC protocol and `health` on `listener` until `shutdown`, then finishes the calls
/// in flight. [`crate::serve`] calls it: it owns the order of a drain (health first, see
/// [`crate::health`]), and so the health service is built there, not here.
///
/// # Errors
/// Transport errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<ModelServer>,
    health: HealthServer<HealthService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let limit = server.config.limits.grpc_max_message_bytes;
    let service = GrpcInferenceServiceServer::new(OipService { server })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
        // Clients such as tritonclient may compress requests; an answer is compressed only for
        // a client that compressed its request and accepts gzip (`answer_compressed_only_if_asked`).
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip);
    // Every method's request passes the interceptor, which reads the gateway's decision from the
    // initial headers before the message and any request trailers are read.
    let service = tonic::service::interceptor::InterceptedService::new(service, |mut r| {
        answer_compressed_only_if_asked(&mut r);
        access::intercept(r)
    });
    // Accepted connections get TCP_NODELAY (tonic sets it only on listeners it binds itself):
    // without it small answers can wait for the client's delayed ACK.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    });
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Lets tonic compress the answer only when the request itself was compressed (`grpc-encoding`
/// other than `identity`), by dropping `grpc-accept-encoding` from any other request.
///
/// gRPC clients built on grpcio (tritonclient among them) list gzip in `grpc-accept-encoding` on
/// every call whether or not they compress, and tonic compresses every answer such a client
/// accepts: a fresh deflate state per answer made a `ModelInfer` of `benchmark-echo` cost the
/// server 173 µs of CPU instead of 107 (modelserver/README.md). Triton
/// compresses answers only when its operator sets a compression level; a client that asks for
/// compression on a call (tritonclient's `compression_algorithm`) compresses its request, and
/// gets a compressed answer here.
fn answer_compressed_only_if_asked<T>(request: &mut Request<T>) {
    let compressed = request
        .metadata()
        .get("grpc-encoding")
        .is_some_and(|v| v.as_bytes() != b"identity");
    if !compressed {
        request.metadata_mut().remove("grpc-accept-encoding");
    }
}

/// The service implementation over [`ModelServer`].
pub struct OipService {
    server: Arc<ModelServer>,
}

fn status(e: ServerError) -> Status {
    e.grpc_status()
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl GrpcInferenceService for OipService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse {
            live: self.server.live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.server.ready(),
        }))
    }

    async fn model_ready(
        &self,
        mut r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let decision = access::decision_of(&mut r);
        let r = r.into_inner();
        let call = ModelCall {
            name: &r.name,
            version: version(&r.version),
            action: ModelAction::Ready,
        };
        let ready = match self.server.model(&decision, call) {
            Ok(_) => true,
            Err(ServerError::NotReady { .. }) => false,
            Err(e) => return Err(status(e)),
        };
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: crate::server::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::server::EXTENSIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        mut r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let decision = access::decision_of(&mut r);
        let r = r.into_inner();
        let call = ModelCall {
            name: &r.name,
            version: version(&r.version),
            action: ModelAction::Metadata,
        };
        let model = self.server.model(&decision, call).map_err(status)?;
        let tensor =
            |t: &crate::repository::TensorSpec| pb::model_metadata_response::TensorMetadata {
                name: t.name.clone(),
                datatype: t.datatype.as_str().into(),
                shape: t.shape.clone(),
            };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.name.clone(),
            versions: self
                .server
                .repository
                .versions(&model.name)
                .iter()
                .map(|m| m.version_string())
                .collect(),
            platform: crate::repository::config::PLATFORM.into(),
            inputs: model.inputs.iter().map(tensor).collect(),
            outputs: model.outputs.iter().map(tensor).collect(),
        }))
    }

    async fn model_infer(
        &self,
        mut r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = Instant::now();
        let decision = access::decision_of(&mut r);
        let traceparent = r
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let mut span = crate::trace::request_span(&self.server.tracer, traceparent, "grpc");
        let r = r.into_inner();
        let utf8 = |field: &str, b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| {
                status(ServerError::InvalidInput(format!(
                    "{field} is not valid UTF-8"
                )))
            })
        };
        let name = utf8("model_name", r.model_name)?;
        let requested_version = utf8("model_version", r.model_version)?;
        let call = ModelCall {
            name: &name,
            version: version(&requested_version),
            action: ModelAction::Infer,
        };
        let model = self.server.model(&decision, call).map_err(status)?;
        crate::trace::set_model(&mut span, &model);
        let timeout = timeout_parameter(r.parameters.get("timeout"));
        let decoded = timeout.and_then(|timeout| {
            decode_request(&model, r.inputs, r.raw_input_contents, r.outputs)
                .map(|(i, o, b)| (i, o, b, timeout))
        });
        let (inputs, outputs, batch, timeout) = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.server.record_rejected(&model, started);
                return Err(status(e));
            }
        };
        let inference = self.server.infer(&model, inputs, outputs, batch, timeout);
        let tensors = telemetry::in_span(span.handle(), inference).await;
        crate::trace::set_outcome(&mut span, &tensors);
        let tensors = tensors.map_err(status)?;
        Ok(Response::new(infer_response(&model, r.id, tensors)))
    }

    async fn model_config(
        &self,
        mut r: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let decision = access::decision_of(&mut r);
        let r = r.into_inner();
        let call = ModelCall {
            name: &r.name,
            version: version(&r.version),
            action: ModelAction::Config,
        };
        let model = self.server.model(&decision, call).map_err(status)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(config_proto(&model.config, model.runtime_parameters())),
        }))
    }

    async fn model_statistics(
        &self,
        mut r: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let decision = access::decision_of(&mut r);
        let r = r.into_inner();
        // An empty name asks for every model: an unscoped call, refused behind the gateway.
        let call = (!r.name.is_empty()).then(|| ModelCall {
            name: &r.name,
            version: version(&r.version),
            action: ModelAction::Statistics,
        });
        let json = self.server.stats_json(&decision, call).map_err(status)?;
        // The JSON and protobuf forms share field names, so one conversion keeps them identical.
        let stats = json["model_stats"].as_array().cloned().unwrap_or_default();
        let model_stats = stats.iter().map(stats_proto).collect();
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        mut r: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        self.server
            .unscoped(&access::decision_of(&mut r), "the repository index")
            .map_err(status)?;
        let r = r.into_inner();
        let models = self
            .server
            .repository
            .index(r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version.unwrap_or_default(),
                state: e.state.unwrap_or_default().into(),
                reason: e.reason.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        mut r: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        self.server
            .unscoped(&access::decision_of(&mut r), "the repository API")
            .map_err(status)?;
        let r = r.into_inner();
        crate::http::check_repository_parameters(r.parameters.keys().map(String::as_str))
            .map_err(status)?;
        self.server
            .repository
            .load(&r.model_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        mut r: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        self.server
            .unscoped(&access::decision_of(&mut r), "the repository API")
            .map_err(status)?;
        let r = r.into_inner();
        crate::http::check_repository_parameters(r.parameters.keys().map(String::as_str))
            .map_err(status)?;
        self.server
            .repository
            .unload(&r.model_name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

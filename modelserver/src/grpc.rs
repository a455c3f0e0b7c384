//! The Open Inference Protocol over gRPC (tonic): `inference.GRPCInferenceService` and
//! `grpc.health.v1.Health`.
//!
//! Inputs come either all in `raw_input_contents` (one entry per input, the binary layout) or each
//! in typed `contents`. Outputs are always returned in `raw_output_contents`, which is what Triton
//! does and what its clients read. Methods of the published service that are not implemented
//! (streaming, shared memory, trace, logging) are not in the service definition, so tonic answers
//! them `UNIMPLEMENTED`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;

use crate::access::{self, ModelAction, ModelCall};
use crate::error::ServerError;
use crate::repository::config::{InstanceKind, ModelConfig, VersionPolicy};
use crate::server::{ModelServer, check_input, check_outputs, check_request};
use crate::tensor::{self, DataType, Tensor, TensorData};

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
        // Clients such as tritonclient may compress requests; answers are compressed only for
        // clients that say they accept it.
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip);
    // Every method's request passes the interceptor, which reads the gateway's decision from the
    // initial headers before the message and any request trailers are read.
    let service = tonic::service::interceptor::InterceptedService::new(service, access::intercept);
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
        let mut response = pb::ModelInferResponse {
            model_name: model.name.clone(),
            model_version: model.version_string(),
            id: r.id,
            ..Default::default()
        };
        for t in tensors {
            response.raw_output_contents.push(t.data.to_raw().to_vec());
            response
                .outputs
                .push(pb::model_infer_response::InferOutputTensor {
                    name: t.name,
                    datatype: t.datatype.as_str().into(),
                    shape: t.shape,
                    ..Default::default()
                });
        }
        Ok(Response::new(response))
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

/// Reads the request's `timeout` parameter: microseconds the request may stay queued, as Triton.
fn timeout_parameter(
    p: Option<&pb::InferParameter>,
) -> Result<Option<std::time::Duration>, ServerError> {
    use pb::infer_parameter::ParameterChoice;
    let Some(p) = p else { return Ok(None) };
    let us = match p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(v),
        _ => None,
    };
    us.map(|us| Some(std::time::Duration::from_micros(us)))
        .ok_or_else(|| {
            ServerError::InvalidInput(
                "parameter 'timeout' must be a non-negative integer (microseconds)".into(),
            )
        })
}

fn decode_request(
    model: &crate::repository::LoadedModel,
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
    raw: Vec<Vec<u8>>,
    outputs: Vec<pb::model_infer_request::InferRequestedOutputTensor>,
) -> Result<(Vec<Tensor>, Vec<String>, u64), ServerError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(ServerError::InvalidInput(format!(
            "raw_input_contents has {} entries but there are {} inputs",
            raw.len(),
            inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let (_, datatype) = check_input(model, &input.name, &input.datatype, &input.shape)?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(_)) => {
                return Err(ServerError::InvalidInput(format!(
                    "input '{}' has typed contents while raw_input_contents is used",
                    input.name
                )));
            }
            (Some(bytes), None) => {
                tensor::decode_raw(&input.name, datatype, &input.shape, Bytes::from(bytes))?
            }
            (None, Some(contents)) => {
                decode_contents(&input.name, datatype, &input.shape, contents)?
            }
            (None, None) => {
                return Err(ServerError::InvalidInput(format!(
                    "input '{}' has no contents",
                    input.name
                )));
            }
        };
        tensors.push(Tensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
        });
    }
    let batch = check_request(model, &tensors)?;
    let outputs = check_outputs(model, outputs.into_iter().map(|o| o.name).collect())?;
    Ok((tensors, outputs, batch))
}

/// Decodes typed `contents`, checking the element count before converting anything.
fn decode_contents(
    name: &str,
    dt: DataType,
    shape: &[i64],
    c: pb::InferTensorContents,
) -> Result<TensorData, ServerError> {
    let count = tensor::element_count(name, shape)?;
    let given = match dt {
        DataType::Bool => c.bool_contents.len(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => c.int_contents.len(),
        DataType::Int64 => c.int64_contents.len(),
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => c.uint_contents.len(),
        DataType::Uint64 => c.uint64_contents.len(),
        DataType::Fp32 => c.fp32_contents.len(),
        DataType::Fp64 => c.fp64_contents.len(),
        DataType::Bytes => c.bytes_contents.len(),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(ServerError::InvalidInput(format!(
                "input '{name}': {dt} has no typed contents field; send it in raw_input_contents"
            )));
        }
    };
    if given != count {
        return Err(ServerError::InvalidInput(format!(
            "input '{name}': shape {shape:?} needs {count} elements but contents has {given}"
        )));
    }
    let range = |i: usize| {
        ServerError::InvalidInput(format!(
            "input '{name}': element {i} is out of range for {dt}"
        ))
    };
    macro_rules! narrow {
        ($src:expr, $t:ty) => {{
            let mut out = Vec::with_capacity(count * std::mem::size_of::<$t>());
            for (i, v) in $src.iter().enumerate() {
                out.extend_from_slice(&<$t>::try_from(*v).map_err(|_| range(i))?.to_le_bytes());
            }
            out
        }};
    }
    let raw: Vec<u8> = match dt {
        DataType::Bool => c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
        DataType::Int8 => narrow!(c.int_contents, i8),
        DataType::Int16 => narrow!(c.int_contents, i16),
        DataType::Int32 => narrow!(c.int_contents, i32),
        DataType::Int64 => narrow!(c.int64_contents, i64),
        DataType::Uint8 => narrow!(c.uint_contents, u8),
        DataType::Uint16 => narrow!(c.uint_contents, u16),
        DataType::Uint32 => narrow!(c.uint_contents, u32),
        DataType::Uint64 => narrow!(c.uint64_contents, u64),
        DataType::Fp32 => c
            .fp32_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Fp64 => c
            .fp64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Bytes => {
            return Ok(TensorData::Strings(
                c.bytes_contents.into_iter().map(Bytes::from).collect(),
            ));
        }
        DataType::Fp16 | DataType::Bf16 => Vec::new(),
    };
    Ok(TensorData::Raw(Bytes::from(raw)))
}

/// The model configuration as the protobuf schema.
pub fn config_proto(
    c: &ModelConfig,
    runtime: std::collections::BTreeMap<String, String>,
) -> pb::ModelConfig {
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest { num_versions: *n }),
        VersionPolicy::All => PolicyChoice::All(All {}),
        VersionPolicy::Specific(v) => PolicyChoice::Specific(Specific {
            versions: v
                .iter()
                .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    let mut parameters: HashMap<String, pb::ModelParameter> = HashMap::new();
    for (k, v) in c.parameters.iter().chain(&runtime) {
        parameters.insert(
            k.clone(),
            pb::ModelParameter {
                string_value: v.clone(),
            },
        );
    }
    pb::ModelConfig {
        name: c.name.clone(),
        platform: crate::repository::config::PLATFORM.into(),
        backend: crate::repository::config::BACKEND.into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: i32::try_from(c.max_batch_size).unwrap_or(i32::MAX),
        input: c
            .inputs
            .iter()
            .map(|t| pb::ModelInput {
                name: t.name.clone(),
                data_type: t.datatype.config_number(),
                format: 0,
                dims: t.dims.clone(),
            })
            .collect(),
        output: c
            .outputs
            .iter()
            .map(|t| pb::ModelOutput {
                name: t.name.clone(),
                data_type: t.datatype.config_number(),
                dims: t.dims.clone(),
            })
            .collect(),
        instance_group: c
            .instance_groups
            .iter()
            .enumerate()
            .map(|(i, g)| pb::ModelInstanceGroup {
                name: g.name.clone().unwrap_or_else(|| format!("{}_{i}", c.name)),
                count: i32::try_from(g.count).unwrap_or(i32::MAX),
                gpus: g.gpus.clone(),
                kind: match g.kind {
                    InstanceKind::Auto => 0,
                    InstanceKind::Gpu => 1,
                    InstanceKind::Cpu => 2,
                },
            })
            .collect(),
        default_model_filename: c.default_model_filename.clone(),
        scheduling_choice: c.dynamic_batching.as_ref().map(|d| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: d
                    .preferred_batch_size
                    .iter()
                    .map(|&b| i32::try_from(b).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: d.max_queue_delay_microseconds,
                preserve_ordering: d.preserve_ordering,
                default_queue_policy: Some(pb::ModelQueuePolicy {
                    timeout_action: 0,
                    default_timeout_microseconds: d.default_timeout_microseconds,
                    allow_timeout_override: d.allow_timeout_override,
                    max_queue_size: d.max_queue_size.unwrap_or(0),
                }),
            })
        }),
        optimization: (!c.gpu_accelerators.is_empty()).then(|| pb::ModelOptimizationPolicy {
            execution_accelerators: Some(pb::model_optimization_policy::ExecutionAccelerators {
                gpu_execution_accelerator: c
                    .gpu_accelerators
                    .iter()
                    .map(
                        |a| pb::model_optimization_policy::execution_accelerators::Accelerator {
                            name: a.name.clone(),
                            parameters: a.parameters.clone().into_iter().collect(),
                        },
                    )
                    .collect(),
                cpu_execution_accelerator: Vec::new(),
            }),
        }),
        parameters,
    }
}

fn stats_proto(j: &serde_json::Value) -> pb::ModelStatistics {
    let d = |k: &str| {
        Some(pb::StatisticDuration {
            count: j["inference_stats"][k]["count"].as_u64().unwrap_or(0),
            ns: j["inference_stats"][k]["ns"].as_u64().unwrap_or(0),
        })
    };
    pb::ModelStatistics {
        name: j["name"].as_str().unwrap_or_default().into(),
        version: j["version"].as_str().unwrap_or_default().into(),
        last_inference: j["last_inference"].as_u64().unwrap_or(0),
        inference_count: j["inference_count"].as_u64().unwrap_or(0),
        execution_count: j["execution_count"].as_u64().unwrap_or(0),
        inference_stats: Some(pb::InferStatistics {
            success: d("success"),
            fail: d("fail"),
            queue: d("queue"),
            compute_input: d("compute_input"),
            compute_infer: d("compute_infer"),
            compute_output: d("compute_output"),
        }),
        batch_stats: j["batch_stats"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|b| {
                let d = |k: &str| {
                    Some(pb::StatisticDuration {
                        count: b[k]["count"].as_u64().unwrap_or(0),
                        ns: b[k]["ns"].as_u64().unwrap_or(0),
                    })
                };
                pb::InferBatchStatistics {
                    batch_size: b["batch_size"].as_u64().unwrap_or(0),
                    compute_input: d("compute_input"),
                    compute_infer: d("compute_infer"),
                    compute_output: d("compute_output"),
                }
            })
            .collect(),
    }
}

//! The gRPC protocol against a real server and real ONNX Runtime, over loopback.

mod common;

use common::{config, f32_bytes, f32_values, length_prefixed, start};
use modelserver::grpc::pb;
use modelserver::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use modelserver::grpc::pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::Code;
use tonic::transport::Channel;

async fn client(url: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .expect("connect")
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn add_request(a: &[f32], b: &[f32]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: "add_fp32".into(),
        id: "g-1".into(),
        inputs: vec![input("a", "FP32", &[1, 4]), input("b", "FP32", &[1, 4])],
        raw_input_contents: vec![f32_bytes(a), f32_bytes(b)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_config() {
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "modelserver");
    assert!(meta.extensions.contains(&"model_repository".to_string()));

    let ready = |name: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        c.model_ready(ready("add_fp32"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("broken"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        c.model_ready(ready("nope")).await.unwrap_err().code(),
        Code::NotFound
    );

    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "add_fp32".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (m.versions, m.platform.as_str()),
        (vec!["1".to_string()], "onnxruntime_onnx")
    );
    assert_eq!(
        (m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str()),
        ("a", "FP32")
    );
    assert_eq!(m.inputs[0].shape, [-1, 4]);

    let cfg = c
        .model_config(pb::ModelConfigRequest {
            name: "echo_bytes".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.max_batch_size, 0);
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeString as i32);
    assert_eq!(cfg.input[0].dims, [-1]);
    assert_eq!(cfg.instance_group[0].count, 2);
    assert_eq!(
        cfg.instance_group[0].kind,
        pb::model_instance_group::Kind::Cpu as i32
    );
    assert_eq!(cfg.parameters["execution_provider"].string_value, "cpu");

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(s.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_raw_and_typed_contents() {
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc).await;
    let r = c
        .model_infer(add_request(&[1., 2., 3., 4.], &[0.5; 4]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            r.model_name.as_str(),
            r.model_version.as_str(),
            r.id.as_str()
        ),
        ("add_fp32", "1", "g-1")
    );
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(
        (r.outputs[0].name.as_str(), r.outputs[0].shape.as_slice()),
        ("sum", &[1, 4][..])
    );
    assert_eq!(f32_values(&r.raw_output_contents[0]), [1.5, 2.5, 3.5, 4.5]);
    assert_eq!(f32_values(&r.raw_output_contents[1]), [0.5, 1.5, 2.5, 3.5]);

    // Typed contents, one output selected.
    let typed = |name: &str, v: &[f32]| InferInputTensor {
        contents: Some(pb::InferTensorContents {
            fp32_contents: v.to_vec(),
            ..Default::default()
        }),
        ..input(name, "FP32", &[1, 4])
    };
    let req = pb::ModelInferRequest {
        model_name: "add_fp32".into(),
        inputs: vec![typed("a", &[1., 1., 1., 1.]), typed("b", &[2., 2., 2., 2.])],
        outputs: vec![InferRequestedOutputTensor {
            name: "diff".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(f32_values(&r.raw_output_contents[0]), [-1.0; 4]);

    // BYTES both ways.
    let raw = pb::ModelInferRequest {
        model_name: "echo_bytes".into(),
        inputs: vec![input("TEXT", "BYTES", &[2])],
        raw_input_contents: vec![length_prefixed(&[b"alpha", b""])],
        ..Default::default()
    };
    let r = c.model_infer(raw).await.unwrap().into_inner();
    assert_eq!(r.outputs[0].datatype, "BYTES");
    assert_eq!(r.raw_output_contents[0], length_prefixed(&[b"alpha", b""]));
    let typed = pb::ModelInferRequest {
        model_name: "echo_bytes".into(),
        inputs: vec![InferInputTensor {
            contents: Some(pb::InferTensorContents {
                bytes_contents: vec![b"one".to_vec()],
                ..Default::default()
            }),
            ..input("TEXT", "BYTES", &[1])
        }],
        ..Default::default()
    };
    let r = c.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(r.raw_output_contents[0], length_prefixed(&[b"one"]));

    // INT64 with fixed dims, typed.
    let req = pb::ModelInferRequest {
        model_name: "identity_int64".into(),
        inputs: vec![InferInputTensor {
            contents: Some(pb::InferTensorContents {
                int64_contents: vec![1, -2, 3, -4, 5, i64::MAX],
                ..Default::default()
            }),
            ..input("x", "INT64", &[2, 3])
        }],
        ..Default::default()
    };
    let r = c.model_infer(req).await.unwrap().into_inner();
    let values: Vec<i64> = r.raw_output_contents[0]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(values, [1, -2, 3, -4, 5, i64::MAX]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_larger_than_grpc_default_limit_are_accepted() {
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc).await;
    // 6 MiB, above tonic's and grpc's 4 MiB default.
    let n = 6 << 20;
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let req = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: all_inputs_except("UINT8", n as i64),
        raw_input_contents: raw_for_all(&data),
        outputs: vec![InferRequestedOutputTensor {
            name: "out_UINT8".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = c.model_infer(req).await.unwrap().into_inner();
    assert_eq!(r.raw_output_contents[0], data);

    let small = start(config("[limits]\ngrpc_max_message_bytes = 1048576\n")).await;
    let mut c = client(&small.grpc).await;
    let req = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: all_inputs_except("UINT8", n as i64),
        raw_input_contents: raw_for_all(&data),
        ..Default::default()
    };
    let e = c.model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
}

const TYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "BF16", "FP32", "FP64", "BYTES",
];

/// identity_all needs every input: `big` gets `n` elements, the others one zero element each.
fn all_inputs_except(big: &str, n: i64) -> Vec<InferInputTensor> {
    let mut inputs = vec![input(&format!("in_{big}"), big, &[n])];
    for t in TYPES.iter().filter(|t| **t != big) {
        inputs.push(input(&format!("in_{t}"), t, &[0]));
    }
    inputs
}

fn raw_for_all(big: &[u8]) -> Vec<Vec<u8>> {
    let mut raw = vec![big.to_vec()];
    raw.extend(std::iter::repeat_n(Vec::new(), TYPES.len() - 1));
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_grpc_codes_with_messages() {
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc).await;
    let check = |r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>,
                 code: Code,
                 msg: &str| {
        let e = r.unwrap_err();
        assert_eq!((e.code(), e.message()), (code, msg));
    };
    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.model_name = "nope".into();
    check(
        c.model_infer(req).await,
        Code::NotFound,
        "unknown model 'nope'",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.model_name = vec![0xff, 0xfe];
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "model_name is not valid UTF-8",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.inputs[0].datatype = "INT32".into();
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "input 'a': datatype INT32 does not match the model's FP32",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.raw_input_contents.pop();
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "raw_input_contents has 1 entries but there are 2 inputs",
    );

    let mut req = add_request(&[1.; 4], &[1.; 3]);
    req.inputs[1].shape = vec![1, 4];
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "input 'b': shape [1, 4] of FP32 needs 16 bytes but 12 were given",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.inputs[0].shape = vec![1 << 40, 4];
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "input 'a': batch size 1099511627776 exceeds max_batch_size 4",
    );

    let req = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: all_inputs_except("FP32", 1 << 50),
        raw_input_contents: raw_for_all(&[0; 8]),
        ..Default::default()
    };
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "input 'in_FP32': shape [1125899906842624] of FP32 needs 4503599627370496 bytes but 8 were given",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "nah".into(),
        ..Default::default()
    }];
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "unknown output 'nah' for model 'add_fp32' (outputs: sum, diff)",
    );

    let mut req = add_request(&[1.; 4], &[1.; 4]);
    req.model_name = "broken".into();
    let e = c.model_infer(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message()
            .starts_with("model 'broken' is not ready: load failed: creating session from"),
        "{}",
        e.message()
    );

    let req = pb::ModelInferRequest {
        model_name: "identity_all".into(),
        inputs: {
            let mut i = all_inputs_except("FP16", 1);
            i[0].contents = Some(pb::InferTensorContents::default());
            i
        },
        ..Default::default()
    };
    check(
        c.model_infer(req).await,
        Code::InvalidArgument,
        "input 'in_FP16': FP16 has no typed contents field; send it in raw_input_contents",
    );

    // A method of the published service that is not implemented answers UNIMPLEMENTED.
    let mut grpc = tonic::client::Grpc::new(
        Channel::from_shared(s.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/inference.GRPCInferenceService/CudaSharedMemoryStatus",
    );
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let e = grpc
        .unary(tonic::Request::new(()), path, codec)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_and_statistics() {
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc).await;
    let index = c
        .repository_index(pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: false,
        })
        .await
        .unwrap()
        .into_inner();
    let gpu = index.models.iter().find(|m| m.name == "gpu_add").unwrap();
    assert_eq!(gpu.state, "UNAVAILABLE");
    assert!(
        gpu.reason
            .contains("CUDA execution provider on GPU 0 could not be registered"),
        "{}",
        gpu.reason
    );
    assert!(
        index
            .models
            .iter()
            .any(|m| m.name == "versioned" && m.version == "3" && m.state == "READY")
    );

    c.model_infer(add_request(&[1.; 4], &[1.; 4]))
        .await
        .unwrap();
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "add_fp32".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let st = &stats.model_stats[0];
    assert_eq!(
        (
            st.name.as_str(),
            st.version.as_str(),
            st.inference_count,
            st.execution_count
        ),
        ("add_fp32", "1", 1, 1)
    );
    let inf = st.inference_stats.as_ref().unwrap();
    assert_eq!(inf.success.as_ref().unwrap().count, 1);
    assert!(inf.compute_infer.as_ref().unwrap().ns > 0);

    let unload = pb::RepositoryModelUnloadRequest {
        model_name: "add_fp32".into(),
        ..Default::default()
    };
    c.repository_model_unload(unload).await.unwrap();
    let e = c
        .model_infer(add_request(&[1.; 4], &[1.; 4]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "model 'add_fp32' is not ready: unloaded")
    );
    let load = pb::RepositoryModelLoadRequest {
        model_name: "add_fp32".into(),
        ..Default::default()
    };
    c.repository_model_load(load).await.unwrap();
    c.model_infer(add_request(&[1.; 4], &[1.; 4]))
        .await
        .unwrap();

    let load = pb::RepositoryModelLoadRequest {
        model_name: "bad_config".into(),
        ..Default::default()
    };
    let e = c.repository_model_load(load).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "failed to load model 'bad_config': config.pbtxt line 2: field 'sequence_batching': not supported: stateful sequence batching is not implemented"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_requests_and_responses() {
    use tonic::codec::CompressionEncoding;
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let r = c
        .model_infer(add_request(&[1.; 4], &[2.; 4]))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(f32_values(&r.into_inner().raw_output_contents[0]), [3.0; 4]);
}

/// grpcio clients (tritonclient) accept gzip on every call without compressing their requests:
/// their answers are not compressed (as Triton, which compresses only when configured to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_accepts_gzip_gets_an_uncompressed_answer() {
    use tonic::codec::CompressionEncoding;
    let s = start(common::direct()).await;
    let mut c = client(&s.grpc)
        .await
        .accept_compressed(CompressionEncoding::Gzip);
    let mut request = tonic::Request::new(add_request(&[1.; 4], &[2.; 4]));
    request
        .metadata_mut()
        .insert("grpc-encoding", "identity".parse().unwrap());
    let r = c.model_infer(request).await.unwrap();
    assert_eq!(r.metadata().get("grpc-encoding"), None);
    assert_eq!(f32_values(&r.into_inner().raw_output_contents[0]), [3.0; 4]);
    let r = c
        .model_infer(add_request(&[1.; 4], &[2.; 4]))
        .await
        .unwrap();
    assert_eq!(r.metadata().get("grpc-encoding"), None);
    assert_eq!(f32_values(&r.into_inner().raw_output_contents[0]), [3.0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_naming_another_model_than_authz_authorized_is_permission_denied() {
    let s = start(common::config("[authorization]\nmode = \"gateway\"\n")).await;
    let mut c = client(&s.grpc).await;
    // A request carrying authz's decision in its headers, as Envoy forwards it.
    fn decided<T>(message: T, model: &str, version: &str, action: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        let m = r.metadata_mut();
        m.insert("x-authz-model", model.parse().unwrap());
        m.insert("x-authz-model-version", version.parse().unwrap());
        m.insert("x-authz-action", action.parse().unwrap());
        m.insert(
            "x-authz-decision-id",
            "0190a0b0-0000-7000-8000-00000000000a".parse().unwrap(),
        );
        r
    }
    let add = || add_request(&[1.0; 4], &[2.0; 4]);
    // authz authorized add_fp32: served.
    let ok = c
        .model_infer(decided(add(), "add_fp32", "", "infer"))
        .await
        .unwrap();
    assert_eq!(
        f32_values(&ok.into_inner().raw_output_contents[0]),
        vec![3.0; 4]
    );
    // The decoded message names add_fp32; authz authorized another model, another version,
    // another action, or nothing at all.
    let refused = [
        (
            decided(add(), "identity_int64", "", "infer"),
            "model_mismatch",
        ),
        (decided(add(), "add_fp32", "2", "infer"), "version_mismatch"),
        (
            decided(add(), "add_fp32", "", "metadata"),
            "action_mismatch",
        ),
        (tonic::Request::new(add()), "missing_decision"),
    ];
    for (request, cause) in refused {
        let e = c.model_infer(request).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{cause}: {e:?}");
        assert!(e.message().contains(cause), "{cause}: {}", e.message());
    }
    // The refusals never reached the model; every one was counted.
    let stats = c
        .model_statistics(decided(
            pb::ModelStatisticsRequest {
                name: "add_fp32".into(),
                version: String::new(),
            },
            "add_fp32",
            "",
            "statistics",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.model_stats[0].inference_count, 1);
    let metrics = common::metrics(&s.metrics).await;
    for cause in [
        "model_mismatch",
        "version_mismatch",
        "action_mismatch",
        "missing_decision",
    ] {
        assert!(
            metrics.contains(&format!(
                "modelserver_gateway_refusals_total{{action=\"infer\",cause=\"{cause}\"}} 1"
            )),
            "{cause}: {metrics}"
        );
    }
}

//! Tests of parsing `config.pbtxt` and of the configuration's JSON form.

use super::*;

const FULL: &str = r#"
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ -1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 16 } }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
version_policy: { latest: { num_versions: 2 } }
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "cuda" } ] } }
parameters { key: "note" value: { string_value: "hi" } }
"#;

#[test]
fn parses_the_supported_subset() {
    let c = ModelConfig::parse("m", FULL).unwrap();
    assert_eq!(c.max_batch_size, 8);
    assert_eq!(
        c.inputs,
        [TensorConfig {
            name: "x".into(),
            datatype: DataType::Fp32,
            dims: vec![4]
        }]
    );
    assert_eq!(c.outputs[0].datatype, DataType::Bytes);
    let d = c.dynamic_batching.as_ref().unwrap();
    assert_eq!(
        (
            d.preferred_batch_size.as_slice(),
            d.max_queue_delay_microseconds,
            d.max_queue_size
        ),
        (&[4, 8][..], 100, Some(16))
    );
    assert_eq!(
        c.instance_groups[0],
        InstanceGroup {
            name: None,
            count: 2,
            kind: InstanceKind::Gpu,
            gpus: vec![0]
        }
    );
    assert_eq!(c.version_policy, VersionPolicy::Latest(2));
    assert_eq!(c.gpu_accelerators[0].name, "cuda");
    assert_eq!(c.parameters["note"], "hi");
    let j = c.to_json(&BTreeMap::new());
    assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(
        j["dynamic_batching"]["default_queue_policy"]["max_queue_size"],
        16
    );
}

#[test]
fn triton_fields_that_cannot_change_results_are_ignored_and_named() {
    let text = "name: \"m\"\n\
        model_warmup [ { name: \"w\" batch_size: 1 inputs { key: \"x\" value: { data_type: TYPE_FP32 dims: 4 zero_data: true } } } ]\n\
        response_cache { enable: true }\n\
        model_transaction_policy { decoupled: false }\n\
        optimization { priority: PRIORITY_MAX cuda { graphs: true } graph { level: 1 } }\n";
    let c = ModelConfig::parse("m", text).unwrap();
    assert_eq!(
        c.ignored,
        [
            "model_warmup (line 2)",
            "response_cache (line 3)",
            "optimization.priority (line 5)",
            "optimization.cuda (line 5)"
        ]
    );
    assert_eq!(c.graph_optimization, Some(GraphOptimization::Extended));
}

#[test]
fn rejects_unsupported_fields_by_path_and_line() {
    let e = ModelConfig::parse("m", "name: \"m\"\nsequence_batching { }\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.pbtxt line 2: field 'sequence_batching': not supported: stateful sequence \
         batching is not implemented"
    );
    let e = ModelConfig::parse("m", "model_transaction_policy { decoupled: true }").unwrap_err();
    assert!(
        e.to_string().contains("decoupled models are not supported"),
        "{e}"
    );
    let e = ModelConfig::parse("m", "frobnicate: 1").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.pbtxt line 1: unsupported field 'frobnicate'"
    );
    let e = ModelConfig::parse("m", "instance_group { count: 1 rate_limiter { } }").unwrap_err();
    assert_eq!(
        e.to_string(),
        "config.pbtxt line 1: unsupported field 'instance_group.rate_limiter'"
    );
    let e = ModelConfig::parse(
        "m",
        "input { name: \"x\" data_type: TYPE_FP32 dims: 3 reshape { } }",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unsupported field 'input.reshape'"),
        "{e}"
    );
    let e = ModelConfig::parse("m", "optimization { graph { fuse: 1 } }").unwrap_err();
    assert!(
        e.to_string()
            .contains("unsupported field 'optimization.graph.fuse'"),
        "{e}"
    );
    let e = ModelConfig::parse("m", "optimization { graph { level: 3 } }").unwrap_err();
    assert!(
        e.to_string().contains("graph level 3 is not -1 (basic)"),
        "{e}"
    );
}

#[test]
fn rejects_bad_values() {
    let cases = [
        ("name: \"other\"", "differs from the model directory"),
        (
            "platform: \"tensorflow_graphdef\"",
            "only 'onnxruntime_onnx'",
        ),
        ("max_batch_size: -1", "not a valid u32"),
        (
            "input { name: \"x\" data_type: TYPE_COMPLEX dims: 1 }",
            "not a supported data type",
        ),
        ("input { name: \"x\" dims: 1 }", "missing 'data_type'"),
        (
            "instance_group { kind: KIND_MODEL }",
            "'KIND_MODEL' is not supported",
        ),
        (
            "optimization { execution_accelerators { gpu_execution_accelerator { name: \"tensorrt\" } } }",
            "only 'cuda'",
        ),
        (
            "version_policy { latest { num_versions: 1 } all { } }",
            "exactly one",
        ),
        ("default_model_filename: \"../x.onnx\"", "plain file name"),
    ];
    for (text, expected) in cases {
        let e = ModelConfig::parse("m", text).unwrap_err().to_string();
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn cuda_parameter_values_are_checked_when_the_config_is_read() {
    let cuda = |params: &str| {
        ModelConfig::parse(
            "m",
            &format!(
                "optimization {{ execution_accelerators {{ gpu_execution_accelerator {{ name: \"cuda\" {params} }} }} }}"
            ),
        )
    };
    let c = cuda(
        "parameters { key: \"gpu_mem_limit\" value: \"2147483648\" } \
         parameters { key: \"cudnn_conv_algo_search\" value: \"HEURISTIC\" }",
    )
    .unwrap();
    assert_eq!(
        c.gpu_accelerators[0].parameters["gpu_mem_limit"],
        "2147483648"
    );
    let e = cuda("parameters { key: \"gpu_mem_limit\" value: \"2G\" }").unwrap_err();
    assert!(
        e.to_string()
            .contains("gpu_mem_limit '2G' is not a byte count"),
        "{e}"
    );
    let e = cuda("parameters { key: \"cudnn_conv_algo_search\" value: \"FAST\" }").unwrap_err();
    assert!(
        e.to_string()
            .contains("cudnn_conv_algo_search 'FAST' is not one of EXHAUSTIVE, HEURISTIC, DEFAULT"),
        "{e}"
    );
    let e = cuda("parameters { key: \"device_id\" value: \"1\" }").unwrap_err();
    assert!(
        e.to_string()
            .contains("cuda parameter 'device_id' is not supported"),
        "{e}"
    );
}

#[test]
fn graph_level_follows_tritons_onnxruntime_backend() {
    let level = |text: &str| ModelConfig::parse("m", text).unwrap().graph_optimization;
    assert_eq!(level(""), None);
    assert_eq!(level("optimization { graph { level: 0 } }"), None);
    assert_eq!(
        level("optimization { graph { level: -1 } }"),
        Some(GraphOptimization::Basic)
    );
    assert_eq!(
        level("optimization { graph { level: 1 } }"),
        Some(GraphOptimization::Extended)
    );
    let c = ModelConfig::parse(
        "m",
        "optimization { graph { level: 2 } execution_accelerators { gpu_execution_accelerator { name: \"cuda\" } } }",
    )
    .unwrap();
    assert_eq!(c.graph_optimization, Some(GraphOptimization::All));
    assert_eq!(c.gpu_accelerators.len(), 1);
    let j = c.to_json(&BTreeMap::new());
    assert_eq!(j["optimization"]["graph"]["level"], 2);
    assert_eq!(
        j["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]["name"],
        "cuda"
    );
}

#[test]
fn version_policy_selects() {
    let available = [3, 1, 2];
    assert_eq!(VersionPolicy::Latest(1).select(&available), [3]);
    assert_eq!(VersionPolicy::Latest(5).select(&available), [1, 2, 3]);
    assert_eq!(VersionPolicy::All.select(&available), [1, 2, 3]);
    assert_eq!(VersionPolicy::Specific(vec![2, 9]).select(&available), [2]);
}

//! A model's configuration and statistics as the protobuf messages of `ModelConfig` and
//! `ModelStatistics`.

use std::collections::HashMap;

use super::pb;
use crate::repository::config::{DynamicBatching, InstanceKind, ModelConfig, VersionPolicy};

/// The model configuration as the protobuf schema.
pub(super) fn config_proto(
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
        instance_group: instance_groups_proto(c),
        default_model_filename: c.default_model_filename.clone(),
        scheduling_choice: c.dynamic_batching.as_ref().map(dynamic_batching_proto),
        optimization: (!c.gpu_accelerators.is_empty()).then(|| optimization_proto(c)),
        parameters,
    }
}

fn instance_groups_proto(c: &ModelConfig) -> Vec<pb::ModelInstanceGroup> {
    c.instance_groups
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
        .collect()
}

fn dynamic_batching_proto(d: &DynamicBatching) -> pb::model_config::SchedulingChoice {
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
}

fn optimization_proto(c: &ModelConfig) -> pb::ModelOptimizationPolicy {
    pb::ModelOptimizationPolicy {
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
    }
}

/// A model's statistics (the JSON form `ModelServer` reports) as the protobuf schema.
pub(super) fn stats_proto(j: &serde_json::Value) -> pb::ModelStatistics {
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

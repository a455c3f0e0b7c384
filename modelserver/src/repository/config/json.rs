//! Triton's JSON form of a [`ModelConfig`], as `GET /v2/models/{m}/config` answers it.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::{BACKEND, ModelConfig, PLATFORM, TensorConfig, VersionPolicy};
use crate::config::GraphOptimization;

impl ModelConfig {
    /// Triton's JSON form of this configuration.
    pub fn to_json(&self, extra_parameters: &BTreeMap<String, String>) -> Json {
        let tensor = |t: &TensorConfig| json!({"name": t.name, "data_type": t.datatype.config_name(), "dims": t.dims});
        let policy = match &self.version_policy {
            VersionPolicy::Latest(n) => json!({"latest": {"num_versions": n}}),
            VersionPolicy::All => json!({"all": {}}),
            VersionPolicy::Specific(v) => json!({"specific": {"versions": v}}),
        };
        let groups: Vec<Json> = self
            .instance_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                json!({
                    "name": g.name.clone().unwrap_or_else(|| format!("{}_{i}", self.name)),
                    "kind": g.kind.as_str(),
                    "count": g.count,
                    "gpus": g.gpus,
                })
            })
            .collect();
        let mut parameters = serde_json::Map::new();
        for (k, v) in self.parameters.iter().chain(extra_parameters) {
            parameters.insert(k.clone(), json!({"string_value": v}));
        }
        let mut out = json!({
            "name": self.name,
            "platform": PLATFORM,
            "backend": BACKEND,
            "version_policy": policy,
            "max_batch_size": self.max_batch_size,
            "input": self.inputs.iter().map(tensor).collect::<Vec<_>>(),
            "output": self.outputs.iter().map(tensor).collect::<Vec<_>>(),
            "instance_group": groups,
            "default_model_filename": self.default_model_filename,
            "parameters": parameters,
        });
        if let Some(d) = &self.dynamic_batching {
            out["dynamic_batching"] = json!({
                "preferred_batch_size": d.preferred_batch_size,
                "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
                "preserve_ordering": d.preserve_ordering,
                "default_queue_policy": {
                    "max_queue_size": d.max_queue_size.unwrap_or(0),
                    "default_timeout_microseconds": d.default_timeout_microseconds,
                    "allow_timeout_override": d.allow_timeout_override,
                },
            });
        }
        if !self.gpu_accelerators.is_empty() {
            let accs: Vec<Json> = self
                .gpu_accelerators
                .iter()
                .map(|a| json!({"name": a.name, "parameters": a.parameters}))
                .collect();
            out["optimization"] =
                json!({"execution_accelerators": {"gpu_execution_accelerator": accs}});
        }
        if let Some(level) = self.graph_optimization.and_then(graph_level_number) {
            out["optimization"]["graph"] = json!({ "level": level });
        }
        out
    }
}

/// The number `parse::graph_level` reads back to `level`, for the JSON form.
fn graph_level_number(level: GraphOptimization) -> Option<i64> {
    match level {
        GraphOptimization::Basic => Some(-1),
        GraphOptimization::Extended => Some(1),
        GraphOptimization::All => Some(2),
        GraphOptimization::Disable | GraphOptimization::Layout => None,
    }
}

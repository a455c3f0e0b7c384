//! modelserver: a KServe v2 / Triton Open Inference Protocol server on ONNX Runtime.
//!
//! A request is followed top to bottom through [`http`] or [`grpc`] (protocol decoding; the
//! model it names checked against the gateway's decision by [`access`], its tensors against the
//! model's metadata by [`server`]) -> [`batcher`] (admission to the model's bounded
//! queue) -> [`runtime`] (a session from the model's pool runs on ONNX Runtime, CUDA or CPU) and
//! back through [`tensor`] (OIP datatypes <-> ONNX values). [`repository`] owns the models: Triton's
//! directory layout, the `config.pbtxt` subset, version policies, load and unload. [`error`] is the
//! one place errors become HTTP statuses and gRPC codes; [`stats`] holds the counters behind both
//! the statistics extension and the `nv_inference_*` metrics; [`gpu`] reads GPU memory and
//! utilisation through NVML, when the driver's library is there, for the `nv_gpu_*` metrics.
//! [`trace`] records each request's spans (queue, batch, compute) in the caller's trace when
//! OTLP export is configured.
//!
//! [`serve`] ([`lifecycle`]) is the one way to start and stop the three servers (REST, gRPC,
//! metrics): given bound listeners and a shutdown future, it serves, then drains in order:
//! readiness off first (REST and [`health`]'s gRPC statuses, from the one function
//! [`ModelServer::ready`]), listeners closed after a grace, in-flight work abandoned after a
//! deadline.
//!
//! What it does not guarantee: a request's `timeout` bounds only its time in the queue, not its
//! execution (a started run is never interrupted); BYTES tensors must be UTF-8 (ONNX Runtime string tensors are); one ONNX Runtime environment serves the whole process, so the library
//! path chosen first wins.

pub mod access;
pub mod batcher;
pub mod config;
pub mod error;
pub mod gpu;
pub mod grpc;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod repository;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tensor;
pub mod trace;

pub use config::Config;
pub use error::ServerError;
pub use lifecycle::{Listeners, ServeError, Stopped, serve};
pub use server::ModelServer;

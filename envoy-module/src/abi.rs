//! The part of Envoy's dynamic-module C ABI this filter uses, declared by hand.
//!
//! Written from the ABI header `source/extensions/dynamic_modules/abi/abi.h` of Envoy 1.40
//! (ABI version [`ABI_VERSION`]); only the HTTP-filter hooks Envoy requires and the callbacks
//! [`crate::host::EnvoyHost`] calls are declared. The official Rust SDK is not on crates.io, so
//! this is the project's own minimal binding. Every name here exists in the bootstrapped Envoy:
//! callbacks in its dynamic symbol table (`nm -D`), hooks among the names it looks up; the
//! `envoy-module/tests/envoy.rs` test loads the module into that Envoy.
//!
//! Conventions of the ABI: buffers are (pointer, length) pairs passed by value; a buffer Envoy
//! returns stays valid until the hook that obtained it returns; enums are C `int`s.

use std::ffi::{c_char, c_void};

/// The ABI version this module is written against, returned from `on_program_init`. Envoy 1.40
/// logs "Dynamic module ABI version v0.2.0 matched." for it (a mismatch is only a warning there,
/// which is why the end-to-end test checks for the match).
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// Envoy's `DynamicModuleHttpFilterConfig`: passed to `config_new`.
pub type ConfigEnvoyPtr = *mut c_void;
/// Our filter config, owned by the module until `config_destroy`.
pub type ConfigModulePtr = *const c_void;
/// Envoy's per-stream `DynamicModuleHttpFilter`: valid until `filter_destroy`.
pub type FilterEnvoyPtr = *mut c_void;
/// Our per-stream filter, owned by the module until `filter_destroy`.
pub type FilterModulePtr = *const c_void;
/// A scheduler Envoy allocated for one stream; the module deletes it.
pub type SchedulerPtr = *mut c_void;
/// Envoy's tracing span of a stream (borrowed, during a hook).
pub type SpanPtr = *mut c_void;

/// Bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, copied.
    ///
    /// # Safety
    /// `ptr` must point at `length` readable bytes (or be null).
    pub unsafe fn to_vec(self) -> Vec<u8> {
        if self.ptr.is_null() || self.length == 0 {
            return Vec::new();
        }
        // SAFETY: the caller vouches for the pointer and length (Envoy's contract for buffers it
        // hands out during a hook).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }.to_vec()
    }
}

/// Bytes owned by the module, lent to Envoy for the duration of one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    /// Borrows `bytes` for one call.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// The null buffer: `set_header` with it removes the header.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// A header Envoy owns (name, value).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// A header the module owns (name, value), for local replies.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// Which header map a header callback works on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // The trailer maps are part of the enum; this filter never touches them.
pub enum HeaderType {
    RequestHeader = 0,
    RequestTrailer = 1,
    ResponseHeader = 2,
    ResponseTrailer = 3,
}

/// Which body a body callback reads.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // Declared in full for the ABI's sake; the filter reads the received body.
pub enum BodyType {
    ReceivedRequestBody = 0,
    BufferedRequestBody = 1,
    ReceivedResponseBody = 2,
    BufferedResponseBody = 3,
}

/// Stream attributes (Envoy's attribute vocabulary), by their position in the ABI's enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `source.address`: "ip:port" of the downstream peer.
    SourceAddress = 24,
    /// `connection.uri_san_peer_certificate`: the verified client certificate's URI SAN.
    ConnectionUriSanPeerCertificate = 37,
}

/// What `on_request_headers` tells Envoy (`FilterHeadersStatus`).
pub mod headers_status {
    pub const CONTINUE: i32 = 0;
    /// Hold the headers, but keep delivering body frames to this filter.
    pub const STOP_ITERATION: i32 = 1;
    /// Hold headers and body (bounded by the watermarks) until `continue_decoding`.
    pub const STOP_ALL_ITERATION_AND_WATERMARK: i32 = 4;
}

/// What `on_request_body` tells Envoy (`FilterDataStatus`).
pub mod body_status {
    pub const CONTINUE: i32 = 0;
    /// Keep the data, applying flow control (not a 413) when it grows past the buffer limit.
    pub const STOP_ITERATION_AND_WATERMARK: i32 = 2;
}

/// What `on_request_trailers` tells Envoy (`FilterTrailersStatus`).
pub mod trailers_status {
    pub const STOP_ITERATION: i32 = 1;
}

/// `FilterTrailersStatus::Continue`, and the "continue" of every other status enum.
pub const CONTINUE: i32 = 0;

#[cfg(not(test))]
unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        result: *mut EnvoyHeader,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body_type: BodyType,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute: i32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    /// Null when the stream is not traced (tracing off: Envoy's null span).
    pub fn envoy_dynamic_module_callback_http_get_active_span(filter: FilterEnvoyPtr) -> SpanPtr;
    /// The ids are written to a thread-local string of Envoy's, valid until the next tracing
    /// callback on the thread.
    pub fn envoy_dynamic_module_callback_http_span_get_trace_id(
        span: SpanPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_span_get_span_id(
        span: SpanPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
}

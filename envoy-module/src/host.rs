//! What the filter needs from Envoy for one stream, as a trait: [`EnvoyHost`] calls the ABI,
//! tests use a fake. Every method runs on the stream's worker thread, inside a hook.

use std::sync::Arc;

/// One stream's view of Envoy.
pub trait Host {
    /// The request headers as received (pseudo-headers included), raw bytes.
    fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// The request body frame(s) delivered to the current `on_request_body`.
    fn received_body(&self) -> Vec<u8>;
    /// `source.address` ("ip:port").
    fn source_address(&self) -> Option<String>;
    /// The verified client certificate's URI SAN (SPIFFE id), on mTLS connections.
    fn peer_uri_san(&self) -> Option<String>;
    /// The trace and span ids (lowercase hex) of Envoy's span for this request, when Envoy
    /// traces it.
    fn active_span(&self) -> Option<(String, String)>;
    /// Sets (replacing any copies) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Removes every copy of a request header.
    fn remove_request_header(&mut self, name: &str);
    /// Sets (replacing any copies) a response header.
    fn set_response_header(&mut self, name: &str, value: &str);
    /// Answers the client locally; the request never goes upstream.
    fn send_response(&mut self, status: u32, headers: &[(String, String)], body: &str);
    /// Resumes a request paused in `on_request_headers` / `on_request_body`.
    fn continue_decoding(&mut self);
    /// A handle that wakes this stream's worker thread from any thread (see [`Wake`]).
    fn scheduler(&mut self) -> Arc<dyn Wake>;
}

/// Wakes a stream on its worker thread: `on_scheduled` runs there later, if the stream still
/// exists then. Callable from any thread, also after the stream is gone (then nothing happens).
pub trait Wake: Send + Sync {
    /// Schedules `on_scheduled(event_id)` on the stream's worker thread.
    fn wake(&self, event_id: u64);
}

#[cfg(not(test))]
pub use envoy::EnvoyHost;

#[cfg(not(test))]
mod envoy {
    use std::sync::Arc;

    use super::{Host, Wake};
    use crate::abi::{self, Attribute, BodyType, EnvoyBuffer, HeaderType, ModuleBuffer};

    /// The real host: Envoy's `DynamicModuleHttpFilter` of one stream.
    pub struct EnvoyHost {
        /// Valid from `filter_new` until `filter_destroy`, on the stream's worker thread; only the
        /// hooks of that stream use it.
        ptr: abi::FilterEnvoyPtr,
    }

    impl EnvoyHost {
        /// # Safety
        /// `ptr` must be the filter pointer Envoy passed to the current hook.
        pub unsafe fn new(ptr: abi::FilterEnvoyPtr) -> Self {
            EnvoyHost { ptr }
        }

        fn attribute(&self, id: Attribute) -> Option<String> {
            let mut out = EnvoyBuffer::EMPTY;
            // SAFETY: `ptr` is live during the hook; Envoy writes a buffer valid until it returns,
            // which is copied at once.
            let found = unsafe {
                abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                    self.ptr, id as i32, &mut out,
                )
            };
            let bytes = if found {
                // SAFETY: as above.
                unsafe { out.to_vec() }
            } else {
                Vec::new()
            };
            String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
        }

        fn set(&mut self, map: HeaderType, name: &str, value: ModuleBuffer) {
            // SAFETY: `ptr` is live during the hook; the buffers outlive the call.
            unsafe {
                abi::envoy_dynamic_module_callback_http_set_header(
                    self.ptr,
                    map,
                    ModuleBuffer::of(name.as_bytes()),
                    value,
                );
            }
        }
    }

    impl Host for EnvoyHost {
        fn request_headers(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            let map = HeaderType::RequestHeader;
            // SAFETY: `ptr` is live during the hook; `raw` has room for `n` headers, and the
            // buffers Envoy writes are copied before the hook returns.
            unsafe {
                let n = abi::envoy_dynamic_module_callback_http_get_headers_size(self.ptr, map);
                let mut raw = vec![
                    abi::EnvoyHeader {
                        key_ptr: std::ptr::null(),
                        key_length: 0,
                        value_ptr: std::ptr::null(),
                        value_length: 0,
                    };
                    n
                ];
                if n == 0
                    || !abi::envoy_dynamic_module_callback_http_get_headers(
                        self.ptr,
                        map,
                        raw.as_mut_ptr(),
                    )
                {
                    return Vec::new();
                }
                raw.iter()
                    .map(|h| {
                        let key = EnvoyBuffer {
                            ptr: h.key_ptr,
                            length: h.key_length,
                        };
                        let value = EnvoyBuffer {
                            ptr: h.value_ptr,
                            length: h.value_length,
                        };
                        (key.to_vec(), value.to_vec())
                    })
                    .collect()
            }
        }

        fn received_body(&self) -> Vec<u8> {
            let body = BodyType::ReceivedRequestBody;
            // SAFETY: as in `request_headers`, for the body's chunks.
            unsafe {
                let n =
                    abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, body);
                let mut chunks = vec![EnvoyBuffer::EMPTY; n];
                if n == 0
                    || !abi::envoy_dynamic_module_callback_http_get_body_chunks(
                        self.ptr,
                        body,
                        chunks.as_mut_ptr(),
                    )
                {
                    return Vec::new();
                }
                chunks.iter().flat_map(|c| c.to_vec()).collect()
            }
        }

        fn source_address(&self) -> Option<String> {
            self.attribute(Attribute::SourceAddress)
        }

        fn peer_uri_san(&self) -> Option<String> {
            self.attribute(Attribute::ConnectionUriSanPeerCertificate)
        }

        fn active_span(&self) -> Option<(String, String)> {
            type GetId = unsafe extern "C" fn(abi::SpanPtr, *mut EnvoyBuffer) -> bool;
            // SAFETY: `ptr` is live during the hook, and so is the span Envoy returns for it; each
            // id is copied before the next tracing callback overwrites Envoy's buffer.
            unsafe {
                let span = abi::envoy_dynamic_module_callback_http_get_active_span(self.ptr);
                if span.is_null() {
                    return None;
                }
                let id = |get: GetId| {
                    let mut out = EnvoyBuffer::EMPTY;
                    get(span, &mut out)
                        .then(|| String::from_utf8(out.to_vec()).ok())
                        .flatten()
                        .filter(|s| !s.is_empty())
                };
                let trace = id(abi::envoy_dynamic_module_callback_http_span_get_trace_id)?;
                let span_id = id(abi::envoy_dynamic_module_callback_http_span_get_span_id)?;
                Some((trace, span_id))
            }
        }

        fn set_request_header(&mut self, name: &str, value: &str) {
            self.set(
                HeaderType::RequestHeader,
                name,
                ModuleBuffer::of(value.as_bytes()),
            );
        }

        fn remove_request_header(&mut self, name: &str) {
            self.set(HeaderType::RequestHeader, name, ModuleBuffer::NULL);
        }

        fn set_response_header(&mut self, name: &str, value: &str) {
            self.set(
                HeaderType::ResponseHeader,
                name,
                ModuleBuffer::of(value.as_bytes()),
            );
        }

        fn send_response(&mut self, status: u32, headers: &[(String, String)], body: &str) {
            let mut raw: Vec<abi::ModuleHeader> = headers
                .iter()
                .map(|(k, v)| abi::ModuleHeader {
                    key_ptr: k.as_ptr().cast(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr().cast(),
                    value_length: v.len(),
                })
                .collect();
            // The response code details Envoy logs (`%RESPONSE_CODE_DETAILS%`).
            let details = b"authz_denied";
            // SAFETY: `ptr` is live during the hook; every buffer outlives the call.
            unsafe {
                abi::envoy_dynamic_module_callback_http_send_response(
                    self.ptr,
                    status,
                    raw.as_mut_ptr(),
                    raw.len(),
                    ModuleBuffer::of(body.as_bytes()),
                    ModuleBuffer::of(details),
                );
            }
        }

        fn continue_decoding(&mut self) {
            // SAFETY: `ptr` is live during the hook.
            unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
        }

        fn scheduler(&mut self) -> Arc<dyn Wake> {
            // SAFETY: `ptr` is live during the hook; the scheduler Envoy returns is ours to delete.
            let ptr =
                unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(self.ptr) };
            Arc::new(Scheduler { ptr })
        }
    }

    /// Envoy's scheduler for one stream. It holds only a weak reference to the stream and the
    /// worker's dispatcher, so committing after the stream is gone is safe (Envoy drops the
    /// event); it is deleted when the last holder (filter or decision task) lets go.
    struct Scheduler {
        ptr: abi::SchedulerPtr,
    }

    // SAFETY: Envoy's scheduler is meant to be committed from any thread (that is its purpose:
    // posting to the worker's dispatcher is thread-safe), and it is deleted exactly once, by Drop.
    unsafe impl Send for Scheduler {}
    // SAFETY: as for Send; `commit` takes no lock on module state.
    unsafe impl Sync for Scheduler {}

    impl Wake for Scheduler {
        fn wake(&self, event_id: u64) {
            // SAFETY: `ptr` stays valid until Drop.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.ptr, event_id);
            }
        }
    }

    impl Drop for Scheduler {
        fn drop(&mut self) {
            if !self.ptr.is_null() {
                // SAFETY: created by `scheduler_new`, deleted once, here.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.ptr) }
            }
        }
    }
}

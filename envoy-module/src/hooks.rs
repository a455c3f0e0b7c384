//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`), each a thin, panic-proof wrapper.
//!
//! Every hook catches panics: unwinding into Envoy's C++ is undefined behaviour. A panic while a
//! request is undecided answers it 503 (never lets it through); a panic elsewhere is contained
//! and the stream goes on as Envoy would without the module's part in it.
//!
//! Envoy requires the filter to export every hook below, also those for features this filter does
//! not use (HTTP callouts, streams, watermarks): those are no-ops.

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::abi::{
    self, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, FilterEnvoyPtr, FilterModulePtr,
};
use crate::engine::{Checker, FilterConfig};
use crate::filter::Filter;
use crate::host::EnvoyHost;

/// Runs `f` on the stream's filter; on a panic answers 503 if the request is still undecided and
/// returns `on_panic`.
///
/// # Safety
/// `envoy` and `filter` must be the pointers Envoy passed to the current hook; `filter` one this
/// module returned from `on_http_filter_new` and not yet destroyed.
unsafe fn with_filter<T>(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    on_panic: T,
    f: impl FnOnce(&mut Filter, &mut EnvoyHost) -> T,
) -> T {
    if filter.is_null() {
        return on_panic;
    }
    // SAFETY: Envoy calls a stream's hooks one at a time on its worker thread, with the pointer
    // `on_http_filter_new` returned (a leaked `Box<Filter>`), until `on_http_filter_destroy`.
    let filter = unsafe { &mut *filter.cast_mut().cast::<Filter>() };
    // SAFETY: `envoy` is the live stream of this hook (the caller's contract).
    let mut host = unsafe { EnvoyHost::new(envoy) };
    match catch_unwind(AssertUnwindSafe(|| f(filter, &mut host))) {
        Ok(v) => v,
        Err(_) => {
            // Even the 503 may panic (it calls Envoy); then the stream stays paused until Envoy's
            // own timeouts end it, which is still not an allow.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                filter.fail(&mut host, "the authz module failed on this request");
            }));
            on_panic
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr()
}

/// Loads `authz.toml` (named by the filter config JSON) and starts the pipeline; null rejects the
/// configuration, with the reason on stderr.
///
/// # Safety
/// `config` must be a buffer Envoy passes, valid for this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy's buffer, valid for this call (copied here).
    let bytes = unsafe { config.to_vec() };
    let loaded = catch_unwind(|| FilterConfig::load(&bytes));
    match loaded {
        Ok(Ok(config)) => {
            let checker: Arc<dyn Checker> = Arc::new(config);
            Box::into_raw(Box::new(checker)).cast_const().cast()
        }
        Ok(Err(e)) => {
            eprintln!("authz module: {e}");
            std::ptr::null()
        }
        Err(_) => {
            eprintln!("authz module: loading the configuration panicked");
            std::ptr::null()
        }
    }
}

/// # Safety
/// `config` must come from `on_http_filter_config_new` and be destroyed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    if config.is_null() {
        return;
    }
    // SAFETY: the box leaked by `config_new`, given back exactly once.
    let config = unsafe { Box::from_raw(config.cast_mut().cast::<Arc<dyn Checker>>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(config)));
}

/// # Safety
/// `config` must come from `on_http_filter_config_new` and not be destroyed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    if config.is_null() {
        return std::ptr::null();
    }
    // SAFETY: Envoy keeps the config alive while it creates filters from it.
    let checker = unsafe { &*config.cast::<Arc<dyn Checker>>() };
    match catch_unwind(AssertUnwindSafe(|| {
        Box::new(Filter::new(Arc::clone(checker)))
    })) {
        Ok(filter) => Box::into_raw(filter).cast_const().cast(),
        // Null makes Envoy close the stream: no filter, no request.
        Err(_) => std::ptr::null(),
    }
}

/// # Safety
/// `filter` must come from `on_http_filter_new` and be destroyed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    if filter.is_null() {
        return;
    }
    // SAFETY: the box leaked by `filter_new`, given back exactly once. Dropping it marks a check
    // in flight as gone (see `crate::filter`).
    let filter = unsafe { Box::from_raw(filter.cast_mut().cast::<Filter>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(filter)));
}

/// # Safety
/// See [`with_filter`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> i32 {
    let stop = abi::headers_status::STOP_ALL_ITERATION_AND_WATERMARK;
    // SAFETY: the hook's own pointers.
    unsafe {
        with_filter(envoy, filter, stop, |f, host| {
            f.on_request_headers(host, end_of_stream)
        })
    }
}

/// # Safety
/// See [`with_filter`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> i32 {
    let stop = abi::body_status::STOP_ITERATION_AND_WATERMARK;
    // SAFETY: the hook's own pointers.
    unsafe {
        with_filter(envoy, filter, stop, |f, host| {
            f.on_request_body(host, end_of_stream)
        })
    }
}

/// # Safety
/// See [`with_filter`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> i32 {
    let stop = abi::trailers_status::STOP_ITERATION;
    // SAFETY: the hook's own pointers.
    unsafe { with_filter(envoy, filter, stop, |f, host| f.on_request_trailers(host)) }
}

/// # Safety
/// See [`with_filter`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> i32 {
    // SAFETY: the hook's own pointers.
    unsafe {
        with_filter(envoy, filter, abi::CONTINUE, |f, host| {
            f.on_response_headers(host)
        })
    }
}

/// # Safety
/// See [`with_filter`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    event_id: u64,
) {
    // SAFETY: the hook's own pointers.
    unsafe {
        with_filter(envoy, filter, (), |f, host| f.on_scheduled(host, event_id));
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _end_of_stream: bool,
) -> i32 {
    abi::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) -> i32 {
    abi::CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _callout_id: u64,
    _result: i32,
    _headers: *const abi::EnvoyHeader,
    _headers_size: usize,
    _body: *const EnvoyBuffer,
    _body_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _headers: *const abi::EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const abi::EnvoyHeader,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _reason: i32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) {
}

//! GPU memory and utilisation from NVML, for Triton's `nv_gpu_*` metric families.
//!
//! NVML (`libnvidia-ml.so.1`, shipped with the NVIDIA driver) is opened at run time, so the same
//! binary runs on machines without a GPU: there the library is absent, which is logged once at
//! info level and simply means no GPU series. Devices are enumerated at every scrape (a handful of
//! cheap driver calls), so nothing here holds device handles across calls.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::path::Path;

/// The library name the driver installs.
pub const DEFAULT_NVML_LIBRARY: &str = "libnvidia-ml.so.1";
/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`: room for any UUID string NVML writes.
const UUID_BUFFER: usize = 96;
/// `NVML_SUCCESS`.
const SUCCESS: c_int = 0;

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Default)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

type Device = *mut c_void;
type InitFn = unsafe extern "C" fn() -> c_int;
type CountFn = unsafe extern "C" fn(*mut c_uint) -> c_int;
type HandleFn = unsafe extern "C" fn(c_uint, *mut Device) -> c_int;
type UuidFn = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int;
type MemoryFn = unsafe extern "C" fn(Device, *mut Memory) -> c_int;
type UtilizationFn = unsafe extern "C" fn(Device, *mut Utilization) -> c_int;

/// One GPU's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// `GPU-...` identifier, Triton's `gpu_uuid` label.
    pub uuid: String,
    /// Memory in use, bytes.
    pub memory_used: u64,
    /// Memory on the device, bytes.
    pub memory_total: u64,
    /// Busy fraction over NVML's last sample period, 0.0 to 1.0; `None` when the device does not
    /// report it.
    pub utilization: Option<f64>,
}

/// An initialised NVML.
pub struct Nvml {
    /// Keeps the library mapped while the function pointers below are in use.
    _library: libloading::Library,
    count: CountFn,
    handle: HandleFn,
    uuid: UuidFn,
    memory: MemoryFn,
    utilization: UtilizationFn,
}

/// Why NVML is not available.
#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    /// The library could not be opened (no NVIDIA driver).
    #[error("opening {library}: {reason}")]
    Open {
        /// Library name or path.
        library: String,
        /// The loader's message.
        reason: String,
    },
    /// A function is missing: not an NVML library, or one too old.
    #[error("{library} has no {symbol}")]
    Symbol {
        /// Library name or path.
        library: String,
        /// The missing function.
        symbol: &'static str,
    },
    /// `nvmlInit_v2` failed (driver not loaded, no permission).
    #[error("nvmlInit_v2 returned {0}")]
    Init(c_int),
}

impl Nvml {
    /// Opens and initialises NVML from `library` (a name the dynamic loader resolves, or a path).
    ///
    /// # Errors
    /// [`NvmlError`] when the library is absent, is not NVML, or NVML cannot initialise.
    pub fn open(library: &Path) -> Result<Self, NvmlError> {
        let name = library.display().to_string();
        // SAFETY: loading the NVIDIA driver's library runs its initialisers, which are designed
        // to be loaded into any process; a path that is some other library fails the symbol
        // lookups below before anything from it is called.
        let lib = unsafe { libloading::Library::new(library) }.map_err(|e| NvmlError::Open {
            library: name.clone(),
            reason: e.to_string(),
        })?;
        macro_rules! symbol {
            ($ty:ty, $name:literal) => {
                // SAFETY: the type is the C prototype NVML's header declares for this symbol.
                *unsafe { lib.get::<$ty>(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                    NvmlError::Symbol {
                        library: name.clone(),
                        symbol: $name,
                    }
                })?
            };
        }
        let init: InitFn = symbol!(InitFn, "nvmlInit_v2");
        let nvml = Nvml {
            count: symbol!(CountFn, "nvmlDeviceGetCount_v2"),
            handle: symbol!(HandleFn, "nvmlDeviceGetHandleByIndex_v2"),
            uuid: symbol!(UuidFn, "nvmlDeviceGetUUID"),
            memory: symbol!(MemoryFn, "nvmlDeviceGetMemoryInfo"),
            utilization: symbol!(UtilizationFn, "nvmlDeviceGetUtilizationRates"),
            _library: lib,
        };
        // SAFETY: nvmlInit_v2 takes no arguments; it may be called more than once per process.
        let rc = unsafe { init() };
        if rc != SUCCESS {
            return Err(NvmlError::Init(rc));
        }
        Ok(nvml)
    }

    /// Opens NVML if it is there; its absence is normal on CPU machines and only logged at info.
    pub fn open_optional(library: &Path) -> Option<Self> {
        match Self::open(library) {
            Ok(nvml) => {
                tracing::info!(nvml.library = %library.display(), "NVML loaded: GPU metrics on");
                Some(nvml)
            }
            Err(e) => {
                tracing::info!(error = %e, "NVML not available: no GPU metrics");
                None
            }
        }
    }

    /// Reads every device; a device that fails a call is left out of this reading.
    pub fn sample(&self) -> Vec<GpuSample> {
        let mut count: c_uint = 0;
        // SAFETY: NVML is initialised; `count` is a valid out pointer.
        if unsafe { (self.count)(&mut count) } != SUCCESS {
            return Vec::new();
        }
        (0..count).filter_map(|i| self.device(i)).collect()
    }

    fn device(&self, index: c_uint) -> Option<GpuSample> {
        let mut device: Device = std::ptr::null_mut();
        let mut uuid = [0 as c_char; UUID_BUFFER];
        let mut memory = Memory::default();
        let mut utilization = Utilization::default();
        // SAFETY: NVML is initialised; every pointer is a valid out parameter of the declared type,
        // and the UUID buffer's length is passed with it.
        unsafe {
            if (self.handle)(index, &mut device) != SUCCESS
                || (self.uuid)(device, uuid.as_mut_ptr(), UUID_BUFFER as c_uint) != SUCCESS
                || (self.memory)(device, &mut memory) != SUCCESS
            {
                return None;
            }
        }
        // SAFETY: as above.
        let utilization = (unsafe { (self.utilization)(device, &mut utilization) } == SUCCESS)
            .then(|| f64::from(utilization.gpu.min(100)) / 100.0);
        let bytes: Vec<u8> = uuid
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Some(GpuSample {
            uuid: String::from_utf8_lossy(&bytes).into_owned(),
            memory_used: memory.used,
            memory_total: memory.total,
            utilization,
        })
    }
}

/// Appends Triton's GPU families for `samples` to a Prometheus text exposition. Nothing is written
/// without samples, so a CPU machine exposes no `nv_gpu_*` families at all.
pub fn render(samples: &[GpuSample], out: &mut String) {
    if samples.is_empty() {
        return;
    }
    family(
        out,
        "nv_gpu_utilization",
        "GPU utilization rate [0.0 - 1.0)",
        samples,
        |s| s.utilization.map(|u| u.to_string()),
    );
    family(
        out,
        "nv_gpu_memory_total_bytes",
        "GPU total memory, in bytes",
        samples,
        |s| Some(s.memory_total.to_string()),
    );
    family(
        out,
        "nv_gpu_memory_used_bytes",
        "GPU used memory, in bytes",
        samples,
        |s| Some(s.memory_used.to_string()),
    );
}

/// One gauge family: HELP, TYPE, and a `gpu_uuid` series per sample that has a value.
fn family(
    out: &mut String,
    name: &str,
    help: &str,
    samples: &[GpuSample],
    value: impl Fn(&GpuSample) -> Option<String>,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for s in samples {
        if let Some(v) = value(s) {
            let uuid = s.uuid.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{gpu_uuid=\"{uuid}\"}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_foreign_library_is_reported_not_fatal() {
        let e = Nvml::open(Path::new("/nonexistent/libnvidia-ml.so.1"))
            .err()
            .expect("absent");
        assert!(matches!(e, NvmlError::Open { .. }), "{e}");
        // A real shared library that is not NVML: refused at the first symbol.
        let e = Nvml::open(Path::new("libc.so.6")).err().expect("not NVML");
        assert!(e.to_string().ends_with("has no nvmlInit_v2"), "{e}");
        assert!(Nvml::open_optional(Path::new("/nonexistent/libnvidia-ml.so.1")).is_none());
    }

    #[test]
    fn renders_tritons_families() {
        let mut out = String::new();
        render(&[], &mut out);
        assert_eq!(out, "");
        render(
            &[GpuSample {
                uuid: "GPU-0a1b".into(),
                memory_used: 1024,
                memory_total: 4096,
                utilization: Some(0.25),
            }],
            &mut out,
        );
        assert!(
            out.contains("nv_gpu_utilization{gpu_uuid=\"GPU-0a1b\"} 0.25\n"),
            "{out}"
        );
        assert!(out.contains("nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-0a1b\"} 4096\n"));
        assert!(out.contains("nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-0a1b\"} 1024\n"));
        assert!(out.contains("# TYPE nv_gpu_memory_used_bytes gauge\n"));
    }
}

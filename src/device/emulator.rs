//! The emulated CUDA device (emulator/README.md). With `LPAF_EMULATED_GPU=1`
//! (or `=memcheck`, the AddressSanitizer build) the emulator's libcuda.so and
//! libcublas.so are loaded before cudarc looks for the driver: cudarc then
//! finds them by their sonames and everything above runs unchanged. Without
//! the variable nothing here is touched.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Which emulator build `LPAF_EMULATED_GPU` asks for, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    Fast,
    Memcheck,
}

/// What `LPAF_EMULATED_GPU` says (unset, empty or `0`: no emulation).
pub fn requested() -> Result<Option<Emulation>> {
    match std::env::var("LPAF_EMULATED_GPU").ok().as_deref() {
        None | Some("") | Some("0") => Ok(None),
        Some("1") | Some("fast") => Ok(Some(Emulation::Fast)),
        Some("memcheck") => Ok(Some(Emulation::Memcheck)),
        Some(other) => Err(Error::msg(format!(
            "LPAF_EMULATED_GPU={other}: expected 1 (the emulated GPU), memcheck (the same with \
             AddressSanitizer) or 0"
        ))),
    }
}

/// Counters of the emulated device, cumulative since it was loaded
/// (emulator/emu_runtime.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuCounters {
    pub kernel_launches: u64,
    pub library_calls: u64,
    pub host_syncs: u64,
    pub h2d_bytes: u64,
    pub d2h_bytes: u64,
    pub d2d_bytes: u64,
    pub memsets: u64,
    pub allocs: u64,
    pub frees: u64,
    pub device_bytes: u64,
    pub peak_device_bytes: u64,
}

impl EmuCounters {
    /// `self - earlier`, for the counts; the byte gauges are taken as they are now.
    pub fn since(&self, earlier: &EmuCounters) -> EmuCounters {
        EmuCounters {
            kernel_launches: self.kernel_launches - earlier.kernel_launches,
            library_calls: self.library_calls - earlier.library_calls,
            host_syncs: self.host_syncs - earlier.host_syncs,
            h2d_bytes: self.h2d_bytes - earlier.h2d_bytes,
            d2h_bytes: self.d2h_bytes - earlier.d2h_bytes,
            d2d_bytes: self.d2d_bytes - earlier.d2d_bytes,
            memsets: self.memsets - earlier.memsets,
            allocs: self.allocs - earlier.allocs,
            frees: self.frees - earlier.frees,
            device_bytes: self.device_bytes,
            peak_device_bytes: self.peak_device_bytes,
        }
    }
}

struct Loaded {
    cuda: libloading::Library,
    _cublas: libloading::Library,
    kind: Emulation,
}

static LOADED: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

fn dir(kind: Emulation) -> std::result::Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("LPAF_EMULATOR_DIR") {
        return Ok(PathBuf::from(d));
    }
    match crate::kernels::EMULATOR_DIRS {
        Some((fast, memcheck)) => Ok(PathBuf::from(match kind {
            Emulation::Fast => fast,
            Emulation::Memcheck => memcheck,
        })),
        None => Err(
            "this lpaf binary was built without the emulated CUDA device (it needs nvcc and g++ at \
             build time: scripts/install-nvcc.sh), and LPAF_EMULATOR_DIR is not set"
                .to_string(),
        ),
    }
}

fn asan_preloaded() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.contains("libasan"))
        .unwrap_or(false)
}

fn load(kind: Emulation) -> std::result::Result<Loaded, String> {
    let dir = dir(kind)?;
    if kind == Emulation::Memcheck && !asan_preloaded() {
        return Err(
            "LPAF_EMULATED_GPU=memcheck needs AddressSanitizer's runtime loaded first: run with \
             LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
             (scripts/test.sh does)"
                .to_string(),
        );
    }
    let open = |name: &str| {
        let path = dir.join(name);
        // RTLD_GLOBAL: cudarc's later dlopen("libcuda.so") must find this
        // object by its soname instead of searching the library path.
        // SAFETY: the emulator's libraries run no code at load time beyond
        // registering their kernels.
        unsafe {
            libloading::os::unix::Library::open(
                Some(&path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        }
        .map(libloading::Library::from)
        .map_err(|e| format!("loading the emulated {name} from {}: {e}", dir.display()))
    };
    let cuda = open("libcuda.so")?;
    let cublas = open("libcublas.so")?;
    Ok(Loaded {
        cuda,
        _cublas: cublas,
        kind,
    })
}

/// Loads the emulator when `LPAF_EMULATED_GPU` asks for it (once); `Ok(None)`
/// when it does not. Called before anything asks cudarc for the driver.
pub fn ensure_loaded() -> Result<Option<Emulation>> {
    let Some(kind) = requested()? else {
        return Ok(None);
    };
    match LOADED.get_or_init(|| load(kind)) {
        Ok(l) => Ok(Some(l.kind)),
        Err(e) => Err(Error::cuda("emulated GPU", e.clone())),
    }
}

/// True when the emulated device is the CUDA device of this process.
pub fn active() -> bool {
    matches!(LOADED.get(), Some(Ok(_)))
}

/// The emulated device's counters, when it is loaded.
pub fn counters() -> Option<EmuCounters> {
    let Some(Ok(l)) = LOADED.get() else {
        return None;
    };
    // SAFETY: the symbol is the emulator's `void lpaf_emu_counters(LpafEmuCounters*)`,
    // whose struct EmuCounters mirrors field by field.
    unsafe {
        let f: libloading::Symbol<unsafe extern "C" fn(*mut EmuCounters)> =
            l.cuda.get(b"lpaf_emu_counters\0").ok()?;
        let mut c = EmuCounters::default();
        f(&mut c);
        Some(c)
    }
}

/// Restarts the emulated device's peak-memory gauge at what is allocated now.
pub fn reset_peak() {
    let Some(Ok(l)) = LOADED.get() else {
        return;
    };
    // SAFETY: the emulator's `void lpaf_emu_reset_peak(void)`.
    unsafe {
        if let Ok(f) = l
            .cuda
            .get::<unsafe extern "C" fn()>(b"lpaf_emu_reset_peak\0")
        {
            f();
        }
    }
}

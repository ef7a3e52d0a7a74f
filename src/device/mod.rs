//! Device probing (the backends are made from a `--device` choice in
//! `crate::backend::select`, above this module). CUDA is probed without panicking: cudarc panics when
//! libcuda is missing, so the driver library's presence is checked first and
//! every later failure becomes an [`Error`] naming what failed.

pub mod emulator;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            _ => Err(Error::msg(format!(
                "unknown device '{s}' (expected auto, cpu or cuda)"
            ))),
        }
    }
}

/// What the probe found about the first CUDA device.
#[derive(Clone, Debug)]
pub struct CudaInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_mem: usize,
    pub device_count: usize,
}

/// Checks that the CUDA driver library loads, initialises and sees a device.
/// Never panics.
pub fn probe_cuda() -> Result<CudaInfo> {
    emulator::ensure_loaded()?;
    // SAFETY: only tries to dlopen the driver library.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return Err(Error::cuda(
            "probe",
            format!(
                "the NVIDIA driver library (libcuda.so) was not found: no NVIDIA driver is \
                 installed on this machine (this build's GPU runs need a driver supporting CUDA \
                 {}.0 or newer: {} or later)",
                BUILD_CUDA_VERSION / 1000,
                driver_branch_for(BUILD_CUDA_VERSION)
            ),
        ));
    }
    cudarc::driver::result::init().map_err(|e| Error::cuda("cuInit", e))?;
    check_driver_version()?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| Error::cuda("cuDeviceGetCount", e))?;
    if count <= 0 {
        return Err(Error::cuda(
            "probe",
            "the NVIDIA driver is installed but reports no CUDA device",
        ));
    }
    let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| Error::cuda("cuCtxCreate(0)", e))?;
    Ok(CudaInfo {
        name: ctx.name().map_err(|e| Error::cuda("cuDeviceGetName", e))?,
        compute_capability: ctx
            .compute_capability()
            .map_err(|e| Error::cuda("compute capability", e))?,
        total_mem: ctx
            .total_mem()
            .map_err(|e| Error::cuda("cuDeviceTotalMem", e))?,
        device_count: count as usize,
    })
}

/// The CUDA version this build's kernels and cuBLAS need, in the driver's
/// encoding (1000 · major + 10 · minor): the default build, nvcc 13.0 cubins
/// and cuBLAS 13; the `cuda12` feature, CUDA 12.0 cubins / PTX and cuBLAS 12.
#[cfg(not(feature = "cuda12"))]
pub const BUILD_CUDA_VERSION: i32 = 13000;
#[cfg(feature = "cuda12")]
pub const BUILD_CUDA_VERSION: i32 = 12000;

/// The oldest driver branch that runs a build (README "CUDA 12 or 13").
pub const fn driver_branch_for(cuda_version: i32) -> &'static str {
    if cuda_version >= 13000 {
        "R580"
    } else {
        "R525"
    }
}

/// A driver older than the build says so in words, instead of failing
/// later with a loader or "unsupported PTX" error.
fn check_driver_version() -> Result<()> {
    let mut v = 0i32;
    // SAFETY: writes one int; the driver library is loaded and initialised.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::cuda("cuDriverGetVersion", format!("{r:?}")));
    }
    driver_version_ok(v)
}

/// The CUDA version the loaded driver supports (`None` without a driver).
pub fn driver_cuda_version() -> Option<i32> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut v = 0i32;
    // SAFETY: writes one int; cuDriverGetVersion needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}

/// `Ok` when a driver reporting CUDA version `v` can run this build.
pub fn driver_version_ok(v: i32) -> Result<()> {
    if v >= BUILD_CUDA_VERSION {
        return Ok(());
    }
    let f = |x: i32| format!("{}.{}", x / 1000, (x % 1000) / 10);
    let other = if v >= 12000 && BUILD_CUDA_VERSION > 12000 {
        "; or use lpaf's CUDA 12 build, which runs on R525 and newer drivers: \
         scripts/install-nvcc.sh 12, then cargo build --release --no-default-features \
         --features cuda12 (README \"CUDA 12 or 13\")"
    } else {
        ""
    };
    Err(Error::cuda(
        "driver check",
        format!(
            "the NVIDIA driver supports CUDA up to {}, but this lpaf build needs CUDA {} (its kernels \
             are built for CUDA {} and it loads cuBLAS {}): install an {} or newer driver{other}",
            f(v),
            f(BUILD_CUDA_VERSION),
            f(BUILD_CUDA_VERSION),
            BUILD_CUDA_VERSION / 1000,
            driver_branch_for(BUILD_CUDA_VERSION),
        ),
    ))
}

/// True when a CUDA device is usable (driver, device and the embedded kernels).
pub fn cuda_available() -> bool {
    crate::kernels::NVCC_VERSION.is_some() && probe_cuda().is_ok()
}

//! A backend from a `--device` choice, and the GPU-test rule. Here, above
//! `crate::device` (which only probes), so that the device layer never
//! imports the backends it is probed for.

use std::sync::Arc;

use crate::backend::{BackendRef, CpuBackend};
use crate::device::DeviceChoice;
use crate::error::Result;

/// The backend for a `--device` choice. `Auto` takes the GPU when it works and
/// says why not otherwise (through `note`).
pub fn select_backend(choice: DeviceChoice, note: &mut dyn FnMut(&str)) -> Result<BackendRef> {
    match choice {
        DeviceChoice::Cpu => Ok(Arc::new(CpuBackend::new())),
        DeviceChoice::Cuda => Ok(Arc::new(crate::backend::cuda::CudaBackend::new(0)?)),
        DeviceChoice::Auto => match crate::backend::cuda::CudaBackend::new(0) {
            Ok(b) => Ok(Arc::new(b)),
            Err(e) => {
                note(&format!("no usable GPU ({e}); running on the CPU"));
                Ok(Arc::new(CpuBackend::new()))
            }
        },
    }
}

/// For GPU tests: `Some(backend)` when CUDA works; `None` with a printed
/// "skipped: no CUDA device" otherwise, or a panic when `LPAF_REQUIRE_GPU=1`.
pub fn gpu_for_test(test: &str) -> Option<BackendRef> {
    match crate::backend::cuda::CudaBackend::new(0) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            if std::env::var("LPAF_REQUIRE_GPU")
                .map(|v| v == "1")
                .unwrap_or(false)
            {
                panic!("{test}: LPAF_REQUIRE_GPU=1 but no CUDA device is usable: {e}");
            }
            eprintln!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

//! The CUDA kernels compiled by build.rs from `kernels/*.cu`, embedded as
//! fatbins (sm_80 and sm_90 machine code, compute_80 PTX).

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// The fatbin of `kernels/<name>.cu`, if nvcc was found at build time.
pub fn fatbin(name: &str) -> Option<&'static [u8]> {
    FATBINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Why the CUDA backend cannot run, when the kernels were not compiled.
pub const NVCC_MISSING: &str = "this lpaf binary was built without nvcc, so it contains no CUDA \
kernels; install the pinned CUDA 13.0 nvcc with scripts/install-nvcc.sh and rebuild \
(or set NVCC / CUDA_HOME)";

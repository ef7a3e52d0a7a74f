//! The CUDA kernels compiled by build.rs from `kernels/*.cu`, embedded as
//! fatbins (sm_80 and sm_90 machine code, compute_80 PTX).

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// The fatbin of `kernels/<name>.cu`, if nvcc was found at build time.
pub fn fatbin(name: &str) -> Option<&'static [u8]> {
    FATBINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// `Ok` when this binary carries kernels (`nvcc_version` is [`NVCC_VERSION`]),
/// else the error that says how to get them.
pub fn require_kernels(nvcc_version: Option<&str>) -> crate::Result<()> {
    match nvcc_version {
        Some(_) => Ok(()),
        None => Err(crate::Error::cuda("CudaBackend::new", NVCC_MISSING)),
    }
}

/// Why the CUDA backend cannot run, when the kernels were not compiled.
pub const NVCC_MISSING: &str = "this lpaf binary was built without nvcc, so it contains no CUDA \
kernels; install the pinned CUDA 13.0 nvcc with scripts/install-nvcc.sh (the CUDA 12 build: \
scripts/install-nvcc.sh 12) and rebuild (or set NVCC / CUDA_HOME)";

#[cfg(test)]
mod tests {
    #[test]
    fn a_binary_without_kernels_says_how_to_get_them() {
        let e = super::require_kernels(None).unwrap_err().to_string();
        assert!(
            e.contains("without nvcc") && e.contains("scripts/install-nvcc.sh"),
            "{e}"
        );
        assert!(super::require_kernels(Some("release 13.0")).is_ok());
    }
}

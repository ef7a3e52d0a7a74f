//! Benchmarks behind `lpaf bench`: [`kernels`] measures the compression
//! kernels of SPEC §6 against the device's measured ceilings.

pub mod kernels;

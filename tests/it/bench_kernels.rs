//! `lpaf bench kernels` on the CPU at a small scale: every workload runs and
//! reports its FLOPs and bytes (each operation's workload is in its folder,
//! src/backend/ops/<operation>/bench.rs).

use crate::common::*;

#[test]
fn kernel_bench_report_runs_small_on_cpu() {
    use lpaf::bench::kernels::{run, KernelBenchOptions};
    let be = cpu();
    let report = run(&be, &KernelBenchOptions::quick(0.005)).unwrap();
    assert!(report.copy_bytes_per_s > 0.0);
    assert!(report.gemm_flops_per_s.iter().all(|(_, r)| *r > 0.0));
    // 15 compression rows, then gemm 3, elementwise 8, layernorm 2,
    // attention 3, embedding 2, reduce 2, grads 1, cross_entropy 1, adamw 1.
    assert_eq!(report.rows.len(), 38);
    assert!(report.row("layer_norm_backward").is_some());
    assert!(report.row("gemm linear bf16").is_some());
    assert!(report
        .row("grad_norm_clip + scale (all gradients)")
        .is_some());
    for r in &report.rows {
        assert!(r.error.is_none(), "{}: {:?}", r.kernel, r.error);
        assert!(r.seconds.unwrap() > 0.0);
    }
    let text = report.to_string();
    assert!(text.contains("| kernel | size | time (ms) |"));
    assert!(text.contains("global top-k threshold"));
    assert!(text.contains("weighted SVD"));
}

/// Prints the kernel report on the CPU: `LPAF_BENCH_SCALE=0.1 cargo test --release
/// --test it print_kernel_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_kernel_bench() {
    use lpaf::bench::kernels::{run, KernelBenchOptions};
    let scale = std::env::var("LPAF_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.05);
    let opts = KernelBenchOptions {
        scale,
        warmup: 1,
        repeats: 5,
        min_sample_s: 0.05,
        seed: 0,
    };
    println!("{}", run(&cpu(), &opts).unwrap());
}

/// Every workload of `lpaf bench kernels` runs on the CUDA device (the
/// emulated one in CI) at a tiny scale: each row has a time and no error.
#[test]
fn gpu_kernel_bench_report_runs_tiny() {
    use lpaf::bench::kernels::{run, KernelBenchOptions};
    let Some(g) = lpaf::backend::gpu_for_test("gpu_kernel_bench_report_runs_tiny") else {
        return;
    };
    let report = run(&*g, &KernelBenchOptions::quick(1e-4)).unwrap();
    assert_eq!(report.rows.len(), 38);
    for r in &report.rows {
        assert!(r.error.is_none(), "{}: {:?}", r.kernel, r.error);
        assert!(r.seconds.unwrap() > 0.0, "{}", r.kernel);
    }
}

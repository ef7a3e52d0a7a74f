//! Criterion benchmarks of every operation's workload (the compression kernels
//! of docs/algorithms.md §6 and the basic operations), on the CPU at CI-friendly sizes and, when a CUDA
//! device is usable, on the GPU at BERT-base sizes. Memory-bound kernels report
//! bytes/s; for the others the "elements" of the throughput are FLOPs. The
//! workloads are those of `lpaf::bench::kernels` (`lpaf bench kernels` prints
//! the full report).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lpaf::backend::{Backend, CpuBackend, Precision};
use lpaf::bench::kernels::*;

/// Sizes: (flat tensor entries, top-k / SVD scale, layer scale, EM steps).
struct Sizes {
    n: usize,
    topk_scale: f64,
    svd_scale: f64,
    layer_scale: f64,
    steps: usize,
}

fn workloads(be: &dyn Backend, s: &Sizes) -> Vec<Box<dyn Workload>> {
    let mut w: Vec<Box<dyn Workload>> = Vec::new();
    let mut push = |r: lpaf::Result<Box<dyn Workload>>| match r {
        Ok(x) => w.push(x),
        Err(e) => eprintln!("skipping a workload: {e}"),
    };
    push(MovementGrads::new(be, s.n, 0).map(|x| Box::new(x) as _));
    push(Importance::new(be, s.n, false, 0).map(|x| Box::new(x) as _));
    push(Importance::new(be, s.n, true, 0).map(|x| Box::new(x) as _));
    push(Topk::new(be, s.topk_scale, 0.1, false, 0).map(|x| Box::new(x) as _));
    push(Topk::new(be, s.topk_scale, 0.1, true, 0).map(|x| Box::new(x) as _));
    push(WeightedSvd::new(be, s.svd_scale, s.steps, 0).map(|x| Box::new(x) as _));
    for kind in [LayerKind::Fused, LayerKind::TwoPath, LayerKind::Dense] {
        push(Layer::new(be, kind, Precision::F32, s.layer_scale, 0).map(|x| Box::new(x) as _));
    }
    match basic_workloads(be, s.layer_scale, 0) {
        Ok(b) => w.extend(b),
        Err(e) => eprintln!("skipping the basic operations' workloads: {e}"),
    }
    w
}

fn bench_backend(c: &mut Criterion, label: &str, be: &dyn Backend, sizes: &Sizes) {
    for mut w in workloads(be, sizes) {
        let mut group = c.benchmark_group(format!("{label}/{}", w.name()));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let (flops, bytes) = (w.flops() as u64, w.bytes() as u64);
        group.throughput(if flops > 0 {
            Throughput::ElementsAndBytes {
                elements: flops,
                bytes,
            }
        } else {
            Throughput::Bytes(bytes)
        });
        if let Err(e) = w.run(be).and_then(|_| be.synchronize()) {
            eprintln!("{label}/{}: {e}", w.name());
            group.finish();
            continue;
        }
        group.bench_function(w.size(), |b| {
            b.iter(|| {
                w.run(be).expect("kernel");
                be.synchronize().expect("synchronize");
            })
        });
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let cpu = CpuBackend::new();
    let small = Sizes {
        n: 1 << 22,
        topk_scale: 0.05,
        svd_scale: 0.01,
        layer_scale: 0.05,
        steps: 10,
    };
    bench_backend(c, "cpu", &cpu, &small);
    if lpaf::device::cuda_available() {
        match lpaf::backend::cuda::CudaBackend::new(0) {
            Ok(gpu) => {
                let full = Sizes {
                    n: 84_934_656,
                    topk_scale: 1.0,
                    svd_scale: 1.0,
                    layer_scale: 1.0,
                    steps: 10,
                };
                bench_backend(c, "cuda", &gpu, &full);
            }
            Err(e) => eprintln!("CUDA benchmarks skipped: {e}"),
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);

//! Every compression method for a few steps on the CUDA backend against the
//! CPU backend (the tiny fixture and the CSV task of compress.rs, 12 steps;
//! LPAF: stage 1, the factorization, 8 mixed-rank steps): the same kept
//! ratio and stored shapes (ranks, non-zeros), and the compressed model's
//! dense weights `U·V + S` close to the CPU run's.

use lpaf::compress::format::export_dense;
use lpaf::compress::pipeline::run_recipe;
use lpaf::model::io::read_safetensors;

use crate::common::{cpu, rel_err};
use crate::compress::{final_tensors, recipe, write_task};

fn compare_method(method: &str, tol: f64) {
    let Some(g) = lpaf::backend::gpu_for_test(&format!("gpu_compression_{method}_matches_cpu"))
    else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    write_task(d.path());
    let c = cpu();
    let oc = run_recipe(&c, &recipe(method, d.path(), "cpu", &[]), false, true).unwrap();
    let og = run_recipe(&*g, &recipe(method, d.path(), "gpu", &[]), false, true).unwrap();
    assert!(
        og.device.contains("emulated") || !lpaf::device::emulator::active(),
        "{}",
        og.device
    );
    assert_eq!(oc.steps, og.steps, "{method}: steps");
    assert!(
        (oc.kept_ratio - og.kept_ratio).abs() < 1e-12,
        "{method}: kept ratio {} (cpu) vs {} (gpu)",
        oc.kept_ratio,
        og.kept_ratio
    );
    // The same stored layout: every tensor name and shape.
    let (tc, tg) = (
        final_tensors(&d.path().join("cpu")),
        final_tensors(&d.path().join("gpu")),
    );
    assert_eq!(
        tc.keys().collect::<Vec<_>>(),
        tg.keys().collect::<Vec<_>>(),
        "{method}"
    );
    for (k, t) in &tc {
        assert_eq!(t.shape, tg[k].shape, "{method}: shape of {k}");
    }
    // The weights the compressed model computes with.
    for dev in ["cpu", "gpu"] {
        export_dense(
            &c,
            &d.path().join(dev).join("compressed"),
            &d.path().join(format!("{dev}-dense")),
        )
        .unwrap();
    }
    let dc = read_safetensors(&d.path().join("cpu-dense/model.safetensors")).unwrap();
    let dg = read_safetensors(&d.path().join("gpu-dense/model.safetensors")).unwrap();
    let mut worst = (0.0f64, String::new());
    for (k, t) in &dc {
        // Softmax ignores the key bias: its gradient is rounding noise on
        // either device, which AdamW turns into full-size steps.
        if k.ends_with("attention.self.key.bias") {
            continue;
        }
        let (Ok(a), Ok(b)) = (t.as_f32(k), dg[k].as_f32(k)) else {
            continue;
        };
        let e = rel_err(b, a);
        if e > worst.0 {
            worst = (e, k.clone());
        }
        assert!(
            e < tol,
            "{method}: {k} differs: rel err {e:.3e} > {tol:.0e}"
        );
    }
    eprintln!(
        "{method}: worst tensor rel err {:.2e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn gpu_compression_movement_matches_cpu() {
    compare_method("movement", 1e-4);
}

#[test]
fn gpu_compression_soft_movement_matches_cpu() {
    compare_method("soft_movement", 1e-4);
}

#[test]
fn gpu_compression_magnitude_matches_cpu() {
    compare_method("magnitude", 1e-4);
}

#[test]
fn gpu_compression_svd_matches_cpu() {
    compare_method("svd", 1e-4);
}

#[test]
fn gpu_compression_losparse_matches_cpu() {
    compare_method("losparse", 1e-4);
}

#[test]
fn gpu_compression_lpaf_matches_cpu() {
    compare_method("lpaf", 1e-4);
}

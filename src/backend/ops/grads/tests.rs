//! Operations over many tensors at once: the norm against an f64 naive sum,
//! the clip factor against `clip_factor`, the result equal bit for bit to
//! per-tensor `sum_squares` added in order (what the trainer used to do on the
//! host), the scaled gradients equal bit for bit to `scale`, and zeroing. Run
//! on the CPU and on the CUDA device (`test_device!`).
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

/// Sizes that cover a tensor of one element, the scalar tail (n % 4 ≠ 0),
/// one block, several, the 1024-block clamp, and an empty tensor.
const SIZES: [usize; 7] = [1, 7, 4096, 4097, 0, 300_001, 5_000_000];

fn grads(be: &dyn Backend, scale: f32) -> Vec<Tensor> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| tb(be, rand_vec(700 + i as u64, n, scale), &[n]))
        .collect()
}

fn walk_all(
    ts: &mut [Tensor],
) -> impl FnMut(&mut dyn FnMut(&mut Tensor) -> lpaf::Result<()>) -> lpaf::Result<()> + '_ {
    move |f| ts.iter_mut().try_for_each(|t| f(t))
}

fn grad_norm_clip_matches_per_tensor_sums(be: &dyn Backend) {
    for (scale, max_norm) in [(1e-3f32, 1.0f32), (1.0, 1.0), (1.0, 0.0), (1.0, 1e9)] {
        let mut ts = grads(be, scale);
        let naive: f64 = SIZES
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| rand_vec(700 + i as u64, n, scale))
            .map(|v| v as f64 * v as f64)
            .sum();
        let in_order: f64 = ts.iter().map(|t| be.sum_squares(t).unwrap()).sum();
        let mut stats = be.zeros(&[2], DType::F32).unwrap();
        be.grad_norm_clip(&mut walk_all(&mut ts), max_norm, &mut stats)
            .unwrap();
        let s = be.to_f32(&stats).unwrap();
        let what = format!("scale {scale}, max_norm {max_norm}");
        assert_eq!(
            s[0].to_bits(),
            (in_order.sqrt() as f32).to_bits(),
            "{what}: norm {} vs per-tensor sums {}",
            s[0],
            in_order.sqrt()
        );
        assert!(
            ((s[0] as f64 - naive.sqrt()) / naive.sqrt()).abs() < 1e-6,
            "{what}: norm {} vs naive {}",
            s[0],
            naive.sqrt()
        );
        assert_eq!(
            s[1],
            clip_factor(in_order.sqrt(), max_norm),
            "{what}: factor"
        );
        if max_norm == 1.0 && scale == 1.0 {
            assert!(s[1] < 1.0, "{what}: this case must clip");
        }
        let want: Vec<Vec<f32>> = ts
            .iter()
            .map(|t| {
                let mut c = be.clone_tensor(t).unwrap();
                be.scale(&mut c, s[1]).unwrap();
                be.to_f32(&c).unwrap()
            })
            .collect();
        let before: Vec<Vec<f32>> = ts.iter().map(|t| be.to_f32(t).unwrap()).collect();
        be.scale_by_clip_factor(&mut walk_all(&mut ts), &stats)
            .unwrap();
        for (i, t) in ts.iter().enumerate() {
            let got = be.to_f32(t).unwrap();
            assert!(same_bits(&got, &want[i]), "{what}: tensor {i} scaled");
            if s[1] == 1.0 {
                assert!(
                    same_bits(&got, &before[i]),
                    "{what}: factor 1 changed tensor {i}"
                );
            }
        }
    }
}

/// A NaN gradient gives a NaN norm (the divergence check's cue) and factor 1;
/// no tensors give norm 0; a stats tensor of the wrong size is an error.
fn grad_norm_clip_edge_cases(be: &dyn Backend) {
    let mut ts = vec![tb(be, vec![1.0, f32::NAN, 2.0], &[3])];
    let mut stats = be.zeros(&[2], DType::F32).unwrap();
    be.grad_norm_clip(&mut walk_all(&mut ts), 1.0, &mut stats)
        .unwrap();
    let s = be.to_f32(&stats).unwrap();
    assert!(s[0].is_nan() && s[1] == 1.0, "{s:?}");
    let mut none: Vec<Tensor> = Vec::new();
    be.grad_norm_clip(&mut walk_all(&mut none), 1.0, &mut stats)
        .unwrap();
    assert_eq!(be.to_f32(&stats).unwrap(), vec![0.0, 1.0]);
    let mut bad = be.zeros(&[3], DType::F32).unwrap();
    let e = be
        .grad_norm_clip(&mut walk_all(&mut ts), 1.0, &mut bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("grad_norm_clip") && e.contains("stats"), "{e}");
}

/// Every visited tensor becomes zero (NaN and infinities too); others stay.
fn zero_all_zeroes_every_visited_tensor(be: &dyn Backend) {
    let mut ts = grads(be, 1.0);
    ts.push(tb(be, vec![f32::NAN, f32::INFINITY, -0.0, 5.0, 1.0], &[5]));
    let keep = tb(be, vec![3.0; 9], &[9]);
    be.zero_all(&mut walk_all(&mut ts)).unwrap();
    for (i, t) in ts.iter().enumerate() {
        let v = be.to_f32(t).unwrap();
        assert!(v.iter().all(|x| x.to_bits() == 0), "tensor {i} not zeroed");
    }
    assert_eq!(be.to_f32(&keep).unwrap(), vec![3.0; 9]);
}

test_device!(
    grad_norm_clip_matches_per_tensor_sums,
    grad_norm_clip_edge_cases,
    zero_all_zeroes_every_visited_tensor
);

//! The device cross-entropy against the host loss `model::loss::cross_entropy`
//! (what every other loss is computed beside): the same gradient to f64
//! rounding, the loss to f32 rounding, accumulation over micro-batches, and
//! the host's error for a label out of range. Run on the CPU and on the CUDA
//! device (`test_device!`).
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

fn cross_entropy_matches_the_host_loss(be: &dyn Backend) {
    for (rows, classes) in [(32usize, 2usize), (7, 3), (1, 1), (300, 5)] {
        let x = rand_vec(900 + rows as u64, rows * classes, 6.0);
        let y: Vec<u32> = (0..rows).map(|r| ((r * 7 + 3) % classes) as u32).collect();
        let yi: Vec<i32> = y.iter().map(|&v| v as i32).collect();
        let scale = 0.5f32;
        let want = lpaf::model::loss::cross_entropy(&x, &y, classes, scale).unwrap();
        let xt = tb(be, x.clone(), &[rows, classes]);
        let yt = be.from_i32(&yi, &[rows]).unwrap();
        let mut d = be
            .from_f32(&vec![f32::NAN; rows * classes], &[rows, classes])
            .unwrap();
        let mut loss = be.zeros(&[1], DType::F32).unwrap();
        be.cross_entropy(&xt, &yt, scale, &mut d, &mut loss, false)
            .unwrap();
        let what = format!("{rows}×{classes}");
        let got = be.to_f32(&d).unwrap();
        for (i, (a, b)) in got.iter().zip(&want.dlogits).enumerate() {
            assert!(
                (a - b).abs() <= 1e-7 * b.abs().max(1e-3),
                "{what}: dlogits[{i}] {a} vs {b}"
            );
        }
        let l = be.to_f32(&loss).unwrap()[0] as f64;
        let w = scale as f64 * want.loss;
        assert!(
            (l - w).abs() <= 1e-6 * w.abs().max(1e-6),
            "{what}: loss {l} vs {w}"
        );
        // A second micro-batch adds to the loss; the gradient is overwritten.
        be.cross_entropy(&xt, &yt, scale, &mut d, &mut loss, true)
            .unwrap();
        let l2 = be.to_f32(&loss).unwrap()[0];
        assert_eq!(l2, (l as f32) + (l as f32), "{what}: accumulated loss");
        assert!(
            same_bits(&be.to_f32(&d).unwrap(), &got),
            "{what}: second gradient"
        );
    }
}

fn cross_entropy_rejects_bad_labels_and_shapes(be: &dyn Backend) {
    let xt = tb(be, vec![0.0; 6], &[3, 2]);
    let mut d = be.zeros(&[3, 2], DType::F32).unwrap();
    let mut loss = be.zeros(&[1], DType::F32).unwrap();
    for bad in [[0, 2, 5], [0, -1, 1]] {
        let yt = be.from_i32(&bad, &[3]).unwrap();
        let e = be
            .cross_entropy(&xt, &yt, 1.0, &mut d, &mut loss, false)
            .unwrap_err()
            .to_string();
        let first = bad.iter().find(|&&l| !(0..2).contains(&l)).unwrap();
        assert!(
            e.contains(&format!(
                "label {first} is out of range for a head with 2 outputs"
            )),
            "{e}"
        );
    }
    let yt = be.from_i32(&[0, 1, 0, 1], &[4]).unwrap();
    let e = be
        .cross_entropy(&xt, &yt, 1.0, &mut d, &mut loss, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("6 logits for 4 labels"),
        "{e}"
    );
}

test_device!(
    cross_entropy_matches_the_host_loss,
    cross_entropy_rejects_bad_labels_and_shapes
);

//! Head permutations and the masked softmax (forward, backward): CUDA against the CPU.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::Error;

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

/// A [B, S] key mask with a random valid length per sequence; sequence 1 is
/// fully masked (its rows must come out all zero).
fn key_mask(seed: u64, b: usize, s: usize) -> Vec<u8> {
    let u = rand_pos(seed, b, 0.0, 1.0);
    let mut m = vec![0u8; b * s];
    for bi in 0..b {
        let len = if bi == 1 {
            0
        } else {
            1 + (u[bi] * s as f32) as usize % s
        };
        m[bi * s..bi * s + len].iter_mut().for_each(|v| *v = 1);
    }
    m
}

#[test]
fn gpu_split_and_merge_heads() {
    let g = gpu_or_skip!("gpu_split_and_merge_heads");
    let c = cpu();
    // d = 64 (float4 path) and d = 7 (scalar path).
    for (b, s, h, d) in [(BATCH, SEQ, HEADS, 64), (2, 5, 3, 7)] {
        let n = b * s * h * d;
        let x = rand_vec(70, n, 1.0);
        let mut sg = poisoned(&*g, &[b, h, s, d]);
        let mut sc = c.zeros(&[b, h, s, d], DType::F32).unwrap();
        g.split_heads(&put(&*g, &x, &[b * s, h * d]), &mut sg, b, s, h)
            .unwrap();
        c.split_heads(&put(&c, &x, &[b * s, h * d]), &mut sc, b, s, h)
            .unwrap();
        assert_bits(
            &format!("split_heads d={d}"),
            &host(&*g, &sg),
            &host(&c, &sc),
        );
        let mut mg = poisoned(&*g, &[b * s, h * d]);
        let mut mc = c.zeros(&[b * s, h * d], DType::F32).unwrap();
        g.merge_heads(&sg, &mut mg, b, s, h).unwrap();
        c.merge_heads(&sc, &mut mc, b, s, h).unwrap();
        assert_bits(
            &format!("merge_heads d={d}"),
            &host(&*g, &mg),
            &host(&c, &mc),
        );
        assert_bits(&format!("merge(split(x)) d={d}"), &host(&*g, &mg), &x);
    }
    let mut out = g.zeros(&[10], DType::F32).unwrap();
    assert!(matches!(
        g.split_heads(&g.zeros(&[10], DType::F32).unwrap(), &mut out, 3, 1, 1),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_attention_softmax() {
    let g = gpu_or_skip!("gpu_attention_softmax");
    let c = cpu();
    // S = 128 / 384 / 1024: register-cached rows; 130 and 1030: generic.
    for (b, h, s) in [
        (BATCH, HEADS, SEQ),
        (2, HEADS, 384),
        (2, 2, 1024),
        (3, 2, 130),
        (2, 1, 1030),
    ] {
        let n = b * h * s * s;
        let scores = rand_vec(80, n, 8.0);
        let mask = key_mask(81, b, s);
        let scale = 1.0 / 8.0;
        let mut pg = put(&*g, &scores, &[b, h, s, s]);
        let mut pc = put(&c, &scores, &[b, h, s, s]);
        g.attention_softmax(&mut pg, &g.from_u8(&mask, &[b, s]).unwrap(), h, scale)
            .unwrap();
        c.attention_softmax(&mut pc, &c.from_u8(&mask, &[b, s]).unwrap(), h, scale)
            .unwrap();
        let (got, want) = (host(&*g, &pg), host(&c, &pc));
        let what = format!("attention_softmax [{b}, {h}, {s}, {s}]");
        assert_close(&what, &got, &want, F32_TOL);
        for (i, v) in got.iter().enumerate() {
            let (row, j) = (i / s, i % s);
            let bi = row / (h * s);
            if mask[bi * s + j] == 0 {
                assert_eq!(
                    v.to_bits(),
                    0,
                    "{what}: masked key {j} of row {row} has probability {v}"
                );
            }
        }
    }
    let mut bad = g.zeros(&[2, 3, 4, 5], DType::F32).unwrap();
    let m = g.from_u8(&[1; 8], &[2, 4]).unwrap();
    assert!(matches!(
        g.attention_softmax(&mut bad, &m, 3, 1.0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_softmax_backward() {
    let g = gpu_or_skip!("gpu_softmax_backward");
    let c = cpu();
    for (b, h, s) in [(BATCH, HEADS, SEQ), (2, HEADS, 512), (3, 2, 130)] {
        let n = b * h * s * s;
        let mut pc = put(&c, &rand_vec(90, n, 8.0), &[b, h, s, s]);
        c.attention_softmax(
            &mut pc,
            &c.from_u8(&key_mask(91, b, s), &[b, s]).unwrap(),
            h,
            0.125,
        )
        .unwrap();
        let probs = host(&c, &pc);
        let d = rand_vec(92, n, 1.0);
        let mut dg = put(&*g, &d, &[b, h, s, s]);
        let mut dc = put(&c, &d, &[b, h, s, s]);
        g.softmax_backward(&put(&*g, &probs, &[b, h, s, s]), &mut dg, 0.125)
            .unwrap();
        c.softmax_backward(&pc, &mut dc, 0.125).unwrap();
        assert_close(
            &format!("softmax_backward s={s}"),
            &host(&*g, &dg),
            &host(&c, &dc),
            F32_TOL,
        );
    }
}

/// split_heads / merge_heads by index, the masked softmax and its backward
/// against f64 loops.
fn attention_matches_naive(be: &dyn Backend) {
    let (b, h, s, d) = (2, 3, 20, 8);
    let x = rand_vec(1, b * s * h * d, 1.0);
    let mut split = tb(be, vec![f32::NAN; x.len()], &[b, h, s, d]);
    be.split_heads(&tb(be, x.clone(), &[b * s, h * d]), &mut split, b, s, h)
        .unwrap();
    let got = be.to_f32(&split).unwrap();
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                for di in 0..d {
                    let want = x[(bi * s + si) * h * d + hi * d + di];
                    assert_eq!(got[((bi * h + hi) * s + si) * d + di], want);
                }
            }
        }
    }
    let mut merged = tb(be, vec![f32::NAN; x.len()], &[b * s, h * d]);
    be.merge_heads(&split, &mut merged, b, s, h).unwrap();
    assert_eq!(be.to_f32(&merged).unwrap(), x);
    // Softmax over keys, the last 5 keys of the second sequence masked.
    let sc = rand_vec(2, b * h * s * s, 3.0);
    let km: Vec<u8> = (0..b * s)
        .map(|i| !(i >= s && i % s >= s - 5) as u8)
        .collect();
    let scale = 0.37f32;
    let mut probs = tb(be, sc.clone(), &[b, h, s, s]);
    be.attention_softmax(&mut probs, &tu8b(be, km.clone(), &[b, s]), h, scale)
        .unwrap();
    let mut want = vec![0.0f64; sc.len()];
    for row in 0..b * h * s {
        let bi = row / (h * s);
        let keys = |j: usize| km[bi * s + j] != 0;
        let mx = (0..s)
            .filter(|&j| keys(j))
            .map(|j| scale as f64 * sc[row * s + j] as f64)
            .fold(f64::MIN, f64::max);
        let z: f64 = (0..s)
            .filter(|&j| keys(j))
            .map(|j| (scale as f64 * sc[row * s + j] as f64 - mx).exp())
            .sum();
        for j in 0..s {
            want[row * s + j] = if keys(j) {
                (scale as f64 * sc[row * s + j] as f64 - mx).exp() / z
            } else {
                0.0
            };
        }
    }
    let pv = be.to_f32(&probs).unwrap();
    let e = rel64(&pv, &want);
    assert!(e < 1e-6, "softmax: {e:e}");
    let dp = rand_vec(3, sc.len(), 1.0);
    let mut dpt = tb(be, dp.clone(), &[b, h, s, s]);
    be.softmax_backward(&probs, &mut dpt, scale).unwrap();
    let mut wd = vec![0.0f64; sc.len()];
    for row in 0..b * h * s {
        let dot: f64 = (0..s)
            .map(|j| pv[row * s + j] as f64 * dp[row * s + j] as f64)
            .sum();
        for j in 0..s {
            let i = row * s + j;
            wd[i] = scale as f64 * pv[i] as f64 * (dp[i] as f64 - dot);
        }
    }
    let e = rel64(&be.to_f32(&dpt).unwrap(), &wd);
    assert!(e < 1e-5, "softmax_backward: {e:e}");
}

test_device!(attention_matches_naive);

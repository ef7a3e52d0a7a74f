//! Elementwise operations, bias, activations, dropout and row copies: CUDA against the CPU.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::Error;

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

/// A CPU tensor's values uploaded to the GPU.
fn yc_to(g: &dyn Backend, c: &CpuBackend, t: &Tensor) -> Tensor {
    put(g, &host(c, t), t.shape())
}

#[test]
fn gpu_axpby_scale_mul_mask() {
    let g = gpu_or_skip!("gpu_axpby_scale_mul_mask");
    let c = cpu();
    let n = TOKENS * HIDDEN + 1;
    let x = rand_vec(1, n, 2.0);
    let y = rand_vec(2, n, 2.0);
    // y = 0.3·x − 1.7·y
    let mut yg = put(&*g, &y, &[n]);
    let mut yc = put(&c, &y, &[n]);
    g.axpby(0.3, &put(&*g, &x, &[n]), -1.7, &mut yg).unwrap();
    c.axpby(0.3, &put(&c, &x, &[n]), -1.7, &mut yc).unwrap();
    assert_close("axpby", &host(&*g, &yg), &host(&c, &yc), F32_TOL);
    // beta = 0 must not read y (NaN there must not leak through 0·NaN).
    let mut yg = poisoned(&*g, &[n]);
    let mut yc = c.zeros(&[n], DType::F32).unwrap();
    g.axpby(-2.5, &put(&*g, &x, &[n]), 0.0, &mut yg).unwrap();
    c.axpby(-2.5, &put(&c, &x, &[n]), 0.0, &mut yc).unwrap();
    assert_bits("axpby beta=0", &host(&*g, &yg), &host(&c, &yc));

    let mut tg = put(&*g, &x, &[n]);
    let mut tc = put(&c, &x, &[n]);
    g.scale(&mut tg, 0.37).unwrap();
    c.scale(&mut tc, 0.37).unwrap();
    assert_bits("scale", &host(&*g, &tg), &host(&c, &tc));

    let mask = rand_mask(3, n, 0.6);
    let mut x_nan = x.clone();
    x_nan[17] = f32::NAN; // masked or not, the select must keep exact semantics
    let mut og = poisoned(&*g, &[n]);
    let mut oc = c.zeros(&[n], DType::F32).unwrap();
    // assert_bits compares NaN payloads too (rel_err would reject the NaN).
    g.mul_mask(
        &put(&*g, &x_nan, &[n]),
        &g.from_u8(&mask, &[n]).unwrap(),
        &mut og,
    )
    .unwrap();
    c.mul_mask(
        &put(&c, &x_nan, &[n]),
        &c.from_u8(&mask, &[n]).unwrap(),
        &mut oc,
    )
    .unwrap();
    assert_bits("mul_mask", &host(&*g, &og), &host(&c, &oc));

    // out += mask ⊙ x, and out += x without a mask; bit for bit, odd length.
    for with_mask in [true, false] {
        let base = rand_vec(4, n, 1.0);
        let mut og = put(&*g, &base, &[n]);
        let mut oc = put(&c, &base, &[n]);
        let (mg, mc) = (
            g.from_u8(&mask, &[n]).unwrap(),
            c.from_u8(&mask, &[n]).unwrap(),
        );
        g.masked_add(&put(&*g, &x, &[n]), with_mask.then_some(&mg), &mut og)
            .unwrap();
        c.masked_add(&put(&c, &x, &[n]), with_mask.then_some(&mc), &mut oc)
            .unwrap();
        let want: Vec<f32> = (0..n)
            .map(|i| {
                if !with_mask || mask[i] != 0 {
                    base[i] + x[i]
                } else {
                    base[i]
                }
            })
            .collect();
        assert_bits("masked_add (cpu)", &host(&c, &oc), &want);
        assert_bits("masked_add", &host(&*g, &og), &host(&c, &oc));
    }

    // Errors: length mismatch, host tensor, wrong dtype.
    let mut short = g.zeros(&[n - 1], DType::F32).unwrap();
    assert!(matches!(
        g.axpby(1.0, &put(&*g, &x, &[n]), 1.0, &mut short),
        Err(Error::Shape { .. })
    ));
    let mut on_gpu = put(&*g, &y, &[n]);
    assert!(matches!(
        g.axpby(1.0, &put(&c, &x, &[n]), 1.0, &mut on_gpu),
        Err(Error::Shape { .. })
    ));
    let mut og = g.zeros(&[n], DType::F32).unwrap();
    assert!(matches!(
        g.mul_mask(&put(&*g, &x, &[n]), &put(&*g, &x, &[n]), &mut og),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_add_row_bias() {
    let g = gpu_or_skip!("gpu_add_row_bias");
    let c = cpu();
    for (rows, cols) in [(TOKENS, HIDDEN), (TOKENS, INTER), (37, 13), (5, 1)] {
        let y = rand_vec(10, rows * cols, 1.0);
        let b = rand_vec(11, cols, 1.0);
        let mut yg = put(&*g, &y, &[rows, cols]);
        let mut yc = put(&c, &y, &[rows, cols]);
        g.add_row_bias(&mut yg, &put(&*g, &b, &[cols])).unwrap();
        c.add_row_bias(&mut yc, &put(&c, &b, &[cols])).unwrap();
        assert_bits(
            &format!("add_row_bias {rows}x{cols}"),
            &host(&*g, &yg),
            &host(&c, &yc),
        );
    }
    let mut y = g.zeros(&[10, 7], DType::F32).unwrap();
    assert!(matches!(
        g.add_row_bias(&mut y, &g.zeros(&[3], DType::F32).unwrap()),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn gpu_gelu_and_tanh() {
    let g = gpu_or_skip!("gpu_gelu_and_tanh");
    let c = cpu();
    let n = TOKENS * INTER + 3;
    let x = rand_vec(30, n, 6.0);
    let dy = rand_vec(31, n, 1.0);
    let (xg, xc) = (put(&*g, &x, &[n]), put(&c, &x, &[n]));
    let (dyg, dyc) = (put(&*g, &dy, &[n]), put(&c, &dy, &[n]));

    let mut yg = poisoned(&*g, &[n]);
    let mut yc = c.zeros(&[n], DType::F32).unwrap();
    g.gelu(&xg, &mut yg).unwrap();
    c.gelu(&xc, &mut yc).unwrap();
    assert_close("gelu", &host(&*g, &yg), &host(&c, &yc), F32_TOL);

    let mut dxg = poisoned(&*g, &[n]);
    let mut dxc = c.zeros(&[n], DType::F32).unwrap();
    g.gelu_backward(&xg, &dyg, &mut dxg).unwrap();
    c.gelu_backward(&xc, &dyc, &mut dxc).unwrap();
    assert_close("gelu_backward", &host(&*g, &dxg), &host(&c, &dxc), F32_TOL);

    // tanh: the pooler, [32, 768].
    let m = BATCH * HIDDEN + 1;
    let (tg, tc) = (put(&*g, &x[..m], &[m]), put(&c, &x[..m], &[m]));
    let mut yg = poisoned(&*g, &[m]);
    let mut yc = c.zeros(&[m], DType::F32).unwrap();
    g.tanh(&tg, &mut yg).unwrap();
    c.tanh(&tc, &mut yc).unwrap();
    assert_close("tanh", &host(&*g, &yg), &host(&c, &yc), F32_TOL);

    let mut dxg = poisoned(&*g, &[m]);
    let mut dxc = c.zeros(&[m], DType::F32).unwrap();
    g.tanh_backward(&yc_to(&*g, &c, &yc), &put(&*g, &dy[..m], &[m]), &mut dxg)
        .unwrap();
    c.tanh_backward(&yc, &put(&c, &dy[..m], &[m]), &mut dxc)
        .unwrap();
    assert_close("tanh_backward", &host(&*g, &dxg), &host(&c, &dxc), F32_TOL);
}

#[test]
fn gpu_dropout_masks_are_bit_identical() {
    let g = gpu_or_skip!("gpu_dropout_masks_are_bit_identical");
    let c = cpu();
    for (n, p, seed, stream) in [
        (TOKENS * HIDDEN, 0.1f32, 42u64, 7u64),
        (BATCH * HEADS * SEQ * SEQ, 0.1, 1234, 3),
        (1001, 0.5, 0xDEAD_BEEF_1234_5678, (1u64 << 33) + 5),
        (4096 + 3, 0.9, u64::MAX, u64::MAX),
    ] {
        let x = rand_vec(40, n, 1.0);
        let mut yg = poisoned(&*g, &[n]);
        let mut yc = c.zeros(&[n], DType::F32).unwrap();
        g.dropout(&put(&*g, &x, &[n]), &mut yg, p, seed, stream)
            .unwrap();
        c.dropout(&put(&c, &x, &[n]), &mut yc, p, seed, stream)
            .unwrap();
        assert_bits(
            &format!("dropout n={n} p={p} seed={seed:#x} stream={stream:#x}"),
            &host(&*g, &yg),
            &host(&c, &yc),
        );
    }
    // p = 0 copies; p outside [0, 1) is an error.
    let x = rand_vec(41, 999, 1.0);
    let mut yg = poisoned(&*g, &[999]);
    g.dropout(&put(&*g, &x, &[999]), &mut yg, 0.0, 1, 1)
        .unwrap();
    assert_bits("dropout p=0", &host(&*g, &yg), &x);
    assert!(g
        .dropout(&put(&*g, &x, &[999]), &mut yg, 1.0, 1, 1)
        .is_err());
}

#[test]
fn gpu_copy_rows() {
    let g = gpu_or_skip!("gpu_copy_rows");
    let c = cpu();
    // The K block of a fused QKV projection [4096, 2304] into [4096, 768]
    // (float4 path), then an unaligned block (scalar path), then accumulate.
    let qkv = rand_vec(120, TOKENS * 3 * HIDDEN, 1.0);
    let specs = [
        RowCopy {
            rows: TOKENS,
            cols: HIDDEN,
            src_offset: HIDDEN,
            src_stride: 3 * HIDDEN,
            dst_offset: 0,
            dst_stride: HIDDEN,
            accumulate: false,
        },
        RowCopy {
            rows: TOKENS - 1,
            cols: HIDDEN - 1,
            src_offset: 1,
            src_stride: 3 * HIDDEN,
            dst_offset: 5,
            dst_stride: HIDDEN,
            accumulate: false,
        },
        RowCopy {
            rows: TOKENS,
            cols: HIDDEN,
            src_offset: 2 * HIDDEN,
            src_stride: 3 * HIDDEN,
            dst_offset: 0,
            dst_stride: HIDDEN,
            accumulate: true,
        },
        RowCopy {
            rows: 70_000,
            cols: 1,
            src_offset: 3,
            src_stride: 4,
            dst_offset: 0,
            dst_stride: 1,
            accumulate: true,
        },
    ];
    for spec in specs {
        let dst_len =
            (spec.dst_offset + (spec.rows - 1) * spec.dst_stride + spec.cols).max(TOKENS * HIDDEN);
        let src_len = qkv
            .len()
            .max(spec.src_offset + (spec.rows - 1) * spec.src_stride + spec.cols);
        let src: Vec<f32> = (0..src_len).map(|i| qkv[i % qkv.len()]).collect();
        let d0 = rand_vec(121, dst_len, 1.0);
        let mut dg = put(&*g, &d0, &[dst_len]);
        let mut dc = put(&c, &d0, &[dst_len]);
        g.copy_rows(&put(&*g, &src, &[src_len]), &mut dg, &spec)
            .unwrap();
        c.copy_rows(&put(&c, &src, &[src_len]), &mut dc, &spec)
            .unwrap();
        assert_bits(
            &format!("copy_rows {spec:?}"),
            &host(&*g, &dg),
            &host(&c, &dc),
        );
    }
    // A full overwrite leaves no poison behind.
    let spec = specs[0];
    let mut dg = poisoned(&*g, &[TOKENS, HIDDEN]);
    g.copy_rows(&put(&*g, &qkv, &[TOKENS, 3 * HIDDEN]), &mut dg, &spec)
        .unwrap();
    let got = host(&*g, &dg);
    assert!(got.iter().all(|v| v.is_finite()));
    // Out of bounds is an error.
    let bad = RowCopy {
        rows: 2,
        cols: 4,
        src_offset: 0,
        src_stride: 4,
        dst_offset: 5,
        dst_stride: 4,
        accumulate: false,
    };
    let mut small = g.zeros(&[12], DType::F32).unwrap();
    assert!(matches!(
        g.copy_rows(&g.zeros(&[8], DType::F32).unwrap(), &mut small, &bad),
        Err(Error::Shape { .. })
    ));
}

/// axpby, scale, mul, mul_mask, masked_add, add_row_bias, gelu (+ backward),
/// tanh (+ backward), dropout and copy_rows against plain loops.
fn elementwise_matches_naive(be: &dyn Backend) {
    let (rows, cols) = (33, 70);
    let n = rows * cols;
    let x = rand_vec(1, n, 3.0);
    let y0 = rand_vec(2, n, 1.0);
    let mask = rand_mask(3, n, 0.5);
    let close = |what: &str, got: &Tensor, want: &[f64], tol: f64| {
        let e = rel64(&be.to_f32(got).unwrap(), want);
        assert!(e < tol, "{what}: {e:e}");
    };
    let xt = tb(be, x.clone(), &[rows, cols]);
    let mt = tu8b(be, mask.clone(), &[rows, cols]);
    let mut y = tb(be, y0.clone(), &[rows, cols]);
    be.axpby(0.5, &xt, -2.0, &mut y).unwrap();
    let want: Vec<f64> = (0..n)
        .map(|i| 0.5 * x[i] as f64 - 2.0 * y0[i] as f64)
        .collect();
    close("axpby", &y, &want, 1e-6);
    be.scale(&mut y, 3.0).unwrap();
    close(
        "scale",
        &y,
        &want.iter().map(|v| 3.0 * v).collect::<Vec<_>>(),
        1e-6,
    );
    let mut out = tb(be, vec![f32::NAN; n], &[rows, cols]);
    be.mul(&xt, &tb(be, y0.clone(), &[rows, cols]), &mut out)
        .unwrap();
    close(
        "mul",
        &out,
        &(0..n)
            .map(|i| x[i] as f64 * y0[i] as f64)
            .collect::<Vec<_>>(),
        1e-6,
    );
    be.mul_mask(&xt, &mt, &mut out).unwrap();
    close(
        "mul_mask",
        &out,
        &(0..n)
            .map(|i| x[i] as f64 * mask[i] as f64)
            .collect::<Vec<_>>(),
        1e-6,
    );
    let mut acc = tb(be, y0.clone(), &[rows, cols]);
    be.masked_add(&xt, Some(&mt), &mut acc).unwrap();
    close(
        "masked_add",
        &acc,
        &(0..n)
            .map(|i| y0[i] as f64 + if mask[i] != 0 { x[i] as f64 } else { 0.0 })
            .collect::<Vec<_>>(),
        1e-6,
    );
    let bias = rand_vec(4, cols, 1.0);
    let mut yb = tb(be, y0.clone(), &[rows, cols]);
    be.add_row_bias(&mut yb, &tb(be, bias.clone(), &[cols]))
        .unwrap();
    close(
        "add_row_bias",
        &yb,
        &(0..n)
            .map(|i| y0[i] as f64 + bias[i % cols] as f64)
            .collect::<Vec<_>>(),
        1e-6,
    );
    be.gelu(&xt, &mut out).unwrap();
    close(
        "gelu",
        &out,
        &x.iter()
            .map(|&v| lpaf::backend::cpu::gelu_f32(v) as f64)
            .collect::<Vec<_>>(),
        1e-6,
    );
    let dy = tb(be, y0.clone(), &[rows, cols]);
    be.gelu_backward(&xt, &dy, &mut out).unwrap();
    close(
        "gelu_backward",
        &out,
        &(0..n)
            .map(|i| y0[i] as f64 * lpaf::backend::cpu::gelu_grad_f32(x[i]) as f64)
            .collect::<Vec<_>>(),
        1e-6,
    );
    be.tanh(&xt, &mut out).unwrap();
    let th: Vec<f64> = x.iter().map(|&v| (v as f64).tanh()).collect();
    close("tanh", &out, &th, 1e-6);
    let tht = be.clone_tensor(&out).unwrap();
    let thv = be.to_f32(&tht).unwrap();
    be.tanh_backward(&tht, &dy, &mut out).unwrap();
    close(
        "tanh_backward",
        &out,
        &(0..n)
            .map(|i| y0[i] as f64 * (1.0 - (thv[i] as f64).powi(2)))
            .collect::<Vec<_>>(),
        1e-6,
    );
    let p = 0.3f32;
    be.dropout(&xt, &mut out, p, 99, 7).unwrap();
    let got = be.to_f32(&out).unwrap();
    for i in 0..n {
        let keep = lpaf::backend::philox::uniform(99, 7, i as u64) >= p;
        // The scale 1/(1−p) is computed once, then multiplied (as PyTorch does).
        let want = if keep { x[i] * (1.0 / (1.0 - p)) } else { 0.0 };
        assert_eq!(got[i].to_bits(), want.to_bits(), "dropout {i}");
    }
    let spec = RowCopy {
        rows: 4,
        cols: 9,
        src_offset: 5,
        src_stride: 17,
        dst_offset: 2,
        dst_stride: 11,
        accumulate: true,
    };
    let mut dst = tb(be, y0[..60].to_vec(), &[60]);
    be.copy_rows(&xt, &mut dst, &spec).unwrap();
    let mut want: Vec<f64> = f64s(&y0[..60]);
    for r in 0..4 {
        for c in 0..9 {
            want[2 + r * 11 + c] += x[5 + r * 17 + c] as f64;
        }
    }
    close("copy_rows", &dst, &want, 1e-7);
}

test_device!(elementwise_matches_naive);

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

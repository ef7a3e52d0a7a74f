//! The CUDA backend's basic operations against the CPU reference, on BERT-base
//! shapes (4096 tokens × 768 hidden, 3072 intermediate, attention
//! [32, 12, 128, 128] with padded keys, a 30522-row vocabulary).
//!
//! Each test asks `gpu_for_test` first and returns (passing, after printing
//! "skipped: no CUDA device") when there is no GPU. Outputs the operation
//! overwrites are poisoned with NaN before the GPU run so that an unwritten
//! element fails the comparison (`rel_err` rejects non-finite values).
//! Bounds (‖gpu − cpu‖ / ‖cpu‖): fp32 1e-5, TF32 2e-3, bf16 1e-2; masks,
//! copies, u8 / i32 results and dropout bit for bit; the deterministic
//! reductions are run twice and must agree bit for bit.

use lpaf::backend::prelude::*;

use lpaf::backend::cuda::CudaBackend;
use lpaf::backend::select_backend;
use lpaf::backend::DType;
use lpaf::device::{cuda_available, DeviceChoice};
use lpaf::Error;

use crate::common::{cpu, host, rand_vec};
use crate::ops_support::*;

// ---- device probing (these run everywhere) --------------------------------------

#[test]
fn cuda_backend_new_fails_cleanly_without_a_gpu() {
    match CudaBackend::new(0) {
        Ok(b) => {
            assert!(cuda_available());
            assert!(!b.name().is_empty());
        }
        Err(e) => {
            assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("driver") || msg.contains("nvcc") || msg.contains("device"),
                "the error should say what is missing: {msg}"
            );
            assert!(!cuda_available());
        }
    }
}

#[test]
fn cuda_backend_rejects_a_missing_ordinal() {
    let e = CudaBackend::new(1 << 20).expect_err("no machine has 2^20 GPUs");
    assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
}

#[test]
fn auto_device_falls_back_to_the_cpu() {
    let mut notes = Vec::new();
    let be = select_backend(DeviceChoice::Auto, &mut |n| notes.push(n.to_string()))
        .expect("auto never fails");
    if CudaBackend::new(0).is_ok() {
        assert_eq!(be.kind(), lpaf::backend::DeviceKind::Cuda);
    } else {
        assert_eq!(be.kind(), lpaf::backend::DeviceKind::Cpu);
        assert!(
            notes.iter().any(|n| n.contains("no usable GPU")),
            "{notes:?}"
        );
    }
}

// ---- memory: fill and cast ------------------------------------------------------

#[test]
fn gpu_fill_all_dtypes() {
    let g = gpu_or_skip!("gpu_fill_all_dtypes");
    let c = cpu();
    // Odd lengths exercise the scalar tails of the 16-byte stores.
    for (dtype, n, value) in [
        (DType::F32, TOKENS * HIDDEN + 3, -2.75f32),
        (DType::F32, 5, f32::NAN),
        (DType::Bf16, 1003, 1.0f32 + 1.0 / 256.0),
        (DType::Bf16, 16, -3.3),
        (DType::U8, 1000 + 13, 300.0),
        (DType::U8, 7, 1.9),
        (DType::I32, 4099, -7.8),
        (DType::I32, 4, 3.0e10),
    ] {
        let mut tg = g.zeros(&[n], dtype).unwrap();
        let mut tc = c.zeros(&[n], dtype).unwrap();
        g.fill(&mut tg, value).unwrap();
        c.fill(&mut tc, value).unwrap();
        let what = format!("fill {dtype:?} n={n} value={value}");
        match dtype {
            DType::F32 | DType::Bf16 => {
                assert_bits(&what, &g.to_f32(&tg).unwrap(), &c.to_f32(&tc).unwrap())
            }
            DType::U8 => assert_eq!(g.to_u8(&tg).unwrap(), c.to_u8(&tc).unwrap(), "{what}"),
            DType::I32 => assert_eq!(g.to_i32(&tg).unwrap(), c.to_i32(&tc).unwrap(), "{what}"),
        }
    }
}

#[test]
fn gpu_cast_matches_cpu_bit_for_bit() {
    let g = gpu_or_skip!("gpu_cast_matches_cpu_bit_for_bit");
    let c = cpu();
    let mut x = rand_vec(11, TOKENS * HIDDEN + 2, 4.0);
    // Rounding corner cases: exact ties (even and odd kept part), values just
    // above a tie, signed zeros, infinities, NaN, subnormals, overflow to inf.
    let specials = [
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        f32::from_bits(0x3f80_8001),
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fa0_0001),
        f32::from_bits(0x0000_8000),
        f32::from_bits(0x0001_8000),
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
    ];
    x[..specials.len()].copy_from_slice(&specials);
    let n = x.len();
    let xg = put(&*g, &x, &[n]);
    let xc = put(&c, &x, &[n]);
    let mut bg = g.zeros(&[n], DType::Bf16).unwrap();
    let mut bc = c.zeros(&[n], DType::Bf16).unwrap();
    g.cast(&xg, &mut bg).unwrap();
    c.cast(&xc, &mut bc).unwrap();
    assert_bits(
        "cast f32 -> bf16",
        &g.to_f32(&bg).unwrap(),
        &c.to_f32(&bc).unwrap(),
    );

    let mut back_g = poisoned(&*g, &[n]);
    let mut back_c = c.zeros(&[n], DType::F32).unwrap();
    g.cast(&bg, &mut back_g).unwrap();
    c.cast(&bc, &mut back_c).unwrap();
    assert_bits(
        "cast bf16 -> f32",
        &g.to_f32(&back_g).unwrap(),
        &c.to_f32(&back_c).unwrap(),
    );

    let m: Vec<u8> = (0..100_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mg = g.from_u8(&m, &[m.len()]).unwrap();
    let mc = c.from_u8(&m, &[m.len()]).unwrap();
    let mut fg = poisoned(&*g, &[m.len()]);
    let mut fc = c.zeros(&[m.len()], DType::F32).unwrap();
    g.cast(&mg, &mut fg).unwrap();
    c.cast(&mc, &mut fc).unwrap();
    assert_bits(
        "cast u8 -> f32",
        &g.to_f32(&fg).unwrap(),
        &c.to_f32(&fc).unwrap(),
    );

    // f32 -> f32 is a copy; anything else is refused.
    let mut same = poisoned(&*g, &[n]);
    g.cast(&xg, &mut same).unwrap();
    assert_bits("cast f32 -> f32", &g.to_f32(&same).unwrap(), &x);
    let mut bad = g.zeros(&[n], DType::I32).unwrap();
    assert!(matches!(g.cast(&xg, &mut bad), Err(Error::Shape { .. })));
}

// ---- gemm -----------------------------------------------------------------------

// ---- elementwise ----------------------------------------------------------------

// ---- LayerNorm --------------------------------------------------------------------

// ---- attention --------------------------------------------------------------------

// ---- embeddings -------------------------------------------------------------------

// ---- reductions and the optimizer -------------------------------------------------------

/// copy (every dtype), clone_tensor and mul, on a BERT-base activation with
/// an odd tail, against the CPU.
#[test]
fn gpu_copy_clone_and_mul() {
    let g = gpu_or_skip!("gpu_copy_clone_and_mul");
    let c = cpu();
    let n = TOKENS * HIDDEN + 3;
    let a = rand_vec(140, n, 2.0);
    let b = rand_vec(141, n, 2.0);
    let (ag, bg) = (put(&*g, &a, &[n]), put(&*g, &b, &[n]));
    let mut og = poisoned(&*g, &[n]);
    g.mul(&ag, &bg, &mut og).unwrap();
    let mut oc = c.zeros(&[n], DType::F32).unwrap();
    c.mul(&put(&c, &a, &[n]), &put(&c, &b, &[n]), &mut oc)
        .unwrap();
    assert_bits("mul", &host(&*g, &og), &host(&c, &oc));
    let mut cg = poisoned(&*g, &[n]);
    g.copy(&ag, &mut cg).unwrap();
    assert_bits("copy f32", &host(&*g, &cg), &a);
    assert_bits(
        "clone_tensor",
        &host(&*g, &g.clone_tensor(&ag).unwrap()),
        &a,
    );
    let m: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let mg = g.from_u8(&m, &[n]).unwrap();
    let mut mg2 = g.from_u8(&vec![0; n], &[n]).unwrap();
    g.copy(&mg, &mut mg2).unwrap();
    assert_eq!(g.to_u8(&mg2).unwrap(), m, "copy u8");
    let ids: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(-7919)).collect();
    let ig = g.from_i32(&ids, &[n]).unwrap();
    assert_eq!(
        g.to_i32(&g.clone_tensor(&ig).unwrap()).unwrap(),
        ids,
        "clone i32"
    );
    // Mismatched lengths are an error, not a partial copy.
    let mut short = g.zeros(&[n - 1], DType::F32).unwrap();
    assert!(g.copy(&ag, &mut short).is_err());
}

/// The buffer pool: a dropped tensor's buffer serves the next allocation of
/// the same type and size (so a step that repeats its sizes allocates
/// nothing), and ids uploaded from the host are checked from their recorded
/// range, without a round trip; ids a kernel wrote are checked on the device.
#[test]
fn gpu_pool_reuses_buffers_and_uploaded_ids_need_no_round_trip() {
    let g = gpu_or_skip!("gpu_pool_reuses_buffers_and_uploaded_ids_need_no_round_trip");
    let count = |f: &mut dyn FnMut()| {
        let a = g.engine_counters().unwrap();
        f();
        let b = g.engine_counters().unwrap();
        (b.allocs - a.allocs, b.syncs - a.syncs)
    };
    drop(g.zeros(&[1000], DType::F32).unwrap());
    let (allocs, _) = count(&mut || {
        let a = g.zeros(&[1000], DType::F32).unwrap();
        assert_eq!(host(&*g, &a), vec![0.0; 1000], "a reused buffer is zeroed");
    });
    assert_eq!(allocs, 0, "the dropped buffer was not reused");
    let (allocs, _) = count(&mut || drop(g.zeros(&[1001], DType::F32).unwrap()));
    assert_eq!(allocs, 1, "another size allocates");
    let (allocs, _) = count(&mut || drop(g.zeros(&[1000], DType::Bf16).unwrap()));
    assert_eq!(allocs, 1, "another type allocates");
    assert!(g.release_cached() >= 4000, "the pool kept nothing");
    let (allocs, _) = count(&mut || drop(g.zeros(&[1000], DType::F32).unwrap()));
    assert_eq!(allocs, 1, "released buffers were reused");

    let table: Vec<f32> = (0..40).map(|i| i as f32 * 0.5).collect();
    let tg = put(&*g, &table, &[10, 4]);
    let ids = [0, 9, 3];
    let ig = g.from_i32(&ids, &[3]).unwrap();
    let mut out = poisoned(&*g, &[3, 4]);
    let (_, syncs) = count(&mut || g.gather_rows(&tg, &ig, &mut out, false).unwrap());
    assert_eq!(syncs, 0, "uploaded in-range ids were read back");
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| table[i as usize * 4..i as usize * 4 + 4].to_vec())
        .collect();
    assert_bits("gather", &host(&*g, &out), &want);
    let bad = g.from_i32(&[0, 10, 3], &[3]).unwrap();
    let e = g
        .gather_rows(&tg, &bad, &mut out, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("id 10 at position 1"), "{e}");
    // A copy carries the range; a kernel's write clears it.
    let mut dst = g.from_i32(&[1, 2, 3], &[3]).unwrap();
    g.copy(&bad, &mut dst).unwrap();
    let e = g
        .gather_rows(&tg, &dst, &mut out, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("id 10 at position 1"), "{e}");
    let mut written = g.from_i32(&[1, 2, 3], &[3]).unwrap();
    g.fill(&mut written, 12.0).unwrap();
    let e = g
        .gather_rows(&tg, &written, &mut out, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("id 12 at position 0"), "{e}");
    let mut d = g.zeros(&[10, 4], DType::F32).unwrap();
    let e = g
        .scatter_add_rows(&out, &written, &mut d)
        .unwrap_err()
        .to_string();
    assert!(e.contains("id 12 at position 0"), "{e}");
}

/// bf16 GEMMs convert an unchanged F32 operand once (a weight, an activation
/// the backward uses again), and convert it anew once it changes: through a
/// kernel, a copy into it, or an upload into its recycled buffer.
#[test]
fn gpu_bf16_copies_are_reused_until_the_tensor_changes() {
    use lpaf::backend::{Gemm, Precision};
    let g = gpu_or_skip!("gpu_bf16_copies_are_reused_until_the_tensor_changes");
    let c = cpu();
    let (m, n, k) = (64usize, 48usize, 32usize);
    let a = rand_vec(300, m * k, 1.0);
    let b = rand_vec(301, n * k, 1.0);
    let gemm = Gemm::nt(m, n, k).precision(Precision::Bf16);
    let launches = |f: &mut dyn FnMut()| {
        let x = g.engine_counters().unwrap().launches;
        f();
        g.engine_counters().unwrap().launches - x
    };
    let want = |a: &[f32], b: &[f32]| {
        let mut o = c.zeros(&[m, n], DType::F32).unwrap();
        c.gemm(&gemm, &put(&c, a, &[m, k]), &put(&c, b, &[n, k]), &mut o)
            .unwrap();
        host(&c, &o)
    };
    let ag = put(&*g, &a, &[m, k]);
    let mut bg = put(&*g, &b, &[n, k]);
    let mut og = poisoned(&*g, &[m, n]);
    assert_eq!(
        launches(&mut || g.gemm(&gemm, &ag, &bg, &mut og).unwrap()),
        2,
        "first: two casts"
    );
    assert_eq!(
        launches(&mut || g.gemm(&gemm, &ag, &bg, &mut og).unwrap()),
        0,
        "again: no cast"
    );
    assert_close(
        "bf16 gemm, reused copies",
        &host(&*g, &og),
        &want(&a, &b),
        1e-2,
    );
    // A kernel writes b: converted again, and the product follows.
    g.scale(&mut bg, 0.5).unwrap();
    let b2: Vec<f32> = b.iter().map(|x| x * 0.5).collect();
    assert_eq!(
        launches(&mut || g.gemm(&gemm, &ag, &bg, &mut og).unwrap()),
        1,
        "after a write"
    );
    assert_close(
        "bf16 gemm after scale",
        &host(&*g, &og),
        &want(&a, &b2),
        1e-2,
    );
    // A copy into b.
    let b3 = rand_vec(302, n * k, 1.0);
    g.copy(&put(&*g, &b3, &[n, k]), &mut bg).unwrap();
    g.gemm(&gemm, &ag, &bg, &mut og).unwrap();
    assert_close(
        "bf16 gemm after copy",
        &host(&*g, &og),
        &want(&a, &b3),
        1e-2,
    );
    // b dropped, and its buffer recycled by an upload of other values.
    drop(bg);
    let b4 = rand_vec(303, n * k, 1.0);
    let bg = put(&*g, &b4, &[n, k]);
    g.gemm(&gemm, &ag, &bg, &mut og).unwrap();
    assert_close(
        "bf16 gemm after recycling",
        &host(&*g, &og),
        &want(&a, &b4),
        1e-2,
    );
}

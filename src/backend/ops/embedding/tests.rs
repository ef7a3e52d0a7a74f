//! Row gather and the deterministic scatter-add: CUDA against the CPU.
//!
//! Part of the integration-test crate (`tests/it/main.rs` includes it).

use lpaf::backend::prelude::*;
use lpaf::backend::*;

use crate::common::*;
use crate::ops_support::*;

const VOCAB: usize = 30522;

/// Token ids the way a padded BERT batch has them: many padding zeros, one
/// [CLS] (101, or 101 mod a small vocabulary) per sequence, the rest
/// spread over the vocabulary.
fn bert_ids(seed: u64, n: usize, vocab: usize) -> Vec<i32> {
    let u = rand_pos(seed, n, 0.0, 1.0);
    (0..n)
        .map(|i| {
            if i % SEQ == 0 {
                (101 % vocab) as i32
            } else if u[i] < 0.35 {
                0
            } else {
                ((u[i] as f64 * 1e6) as usize % vocab) as i32
            }
        })
        .collect()
}

#[test]
fn gpu_gather_rows() {
    let g = gpu_or_skip!("gpu_gather_rows");
    let c = cpu();
    for (rows, cols) in [(VOCAB, HIDDEN), (100, 7)] {
        let table = rand_vec(100, rows * cols, 1.0);
        let ids = bert_ids(101, TOKENS, rows);
        let (tg, tc) = (
            put(&*g, &table, &[rows, cols]),
            put(&c, &table, &[rows, cols]),
        );
        let (ig, ic) = (
            g.from_i32(&ids, &[TOKENS]).unwrap(),
            c.from_i32(&ids, &[TOKENS]).unwrap(),
        );
        let mut og = poisoned(&*g, &[TOKENS, cols]);
        let mut oc = c.zeros(&[TOKENS, cols], DType::F32).unwrap();
        g.gather_rows(&tg, &ig, &mut og, false).unwrap();
        c.gather_rows(&tc, &ic, &mut oc, false).unwrap();
        assert_bits(
            &format!("gather_rows {rows}x{cols}"),
            &host(&*g, &og),
            &host(&c, &oc),
        );
        // Accumulate (token + position + type embeddings add up).
        g.gather_rows(&tg, &ig, &mut og, true).unwrap();
        c.gather_rows(&tc, &ic, &mut oc, true).unwrap();
        assert_bits(
            &format!("gather_rows accumulate {rows}x{cols}"),
            &host(&*g, &og),
            &host(&c, &oc),
        );
    }
    // An out-of-range id is an error naming it and its position.
    let table = g.zeros(&[10, 4], DType::F32).unwrap();
    let mut out = g.zeros(&[3, 4], DType::F32).unwrap();
    for (bad, want) in [
        ([1, 10, 2], "id 10 at position 1"),
        ([1, 2, -1], "id -1 at position 2"),
    ] {
        let e = g
            .gather_rows(&table, &g.from_i32(&bad, &[3]).unwrap(), &mut out, false)
            .expect_err("bad id");
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains("outside the table's 10 rows"),
            "{msg}"
        );
    }
}

#[test]
fn gpu_scatter_add_rows_is_close_and_deterministic() {
    let g = gpu_or_skip!("gpu_scatter_add_rows_is_close_and_deterministic");
    let c = cpu();
    let word = bert_ids(110, TOKENS, VOCAB);
    let position: Vec<i32> = (0..TOKENS).map(|i| (i % SEQ) as i32).collect();
    // Token types: one long run of 0 then 1 per sequence, so segments span many pieces.
    let types: Vec<i32> = (0..TOKENS).map(|i| (i % SEQ >= 40) as i32).collect();
    let all_same = vec![3i32; 1000];
    let odd: Vec<i32> = bert_ids(111, 1000, 50);
    for (what, rows, cols, ids) in [
        ("word", VOCAB, HIDDEN, &word),
        ("position", 512, HIDDEN, &position),
        ("token type", 2, HIDDEN, &types),
        ("one id", 5, 13, &all_same),
        ("odd sizes", 50, 13, &odd),
    ] {
        let n = ids.len();
        let d = rand_vec(112, n * cols, 1.0);
        let t0 = rand_vec(113, rows * cols, 0.5);
        let (dg, ig) = (put(&*g, &d, &[n, cols]), g.from_i32(ids, &[n]).unwrap());
        let run = || {
            let mut tg = put(&*g, &t0, &[rows, cols]);
            g.scatter_add_rows(&dg, &ig, &mut tg).unwrap();
            host(&*g, &tg)
        };
        let first = run();
        let second = run();
        assert!(
            same_bits(&first, &second),
            "scatter_add_rows {what}: two runs differ"
        );
        let mut tc = put(&c, &t0, &[rows, cols]);
        c.scatter_add_rows(
            &put(&c, &d, &[n, cols]),
            &c.from_i32(ids, &[n]).unwrap(),
            &mut tc,
        )
        .unwrap();
        assert_close(
            &format!("scatter_add_rows {what}"),
            &first,
            &host(&c, &tc),
            F32_TOL,
        );
    }
    let mut t = g.zeros(&[4, 2], DType::F32).unwrap();
    let e = g
        .scatter_add_rows(
            &g.zeros(&[2, 2], DType::F32).unwrap(),
            &g.from_i32(&[0, 4], &[2]).unwrap(),
            &mut t,
        )
        .expect_err("id 4 of 4 rows");
    assert!(e.to_string().contains("id 4 at position 1"), "{e}");
}

/// gather_rows (overwrite and accumulate) and scatter_add_rows with repeated
/// ids against plain loops; an id outside the table is an error.
fn embedding_matches_naive(be: &dyn Backend) {
    let (rows, d, n) = (50, 24, 300);
    let table = rand_vec(1, rows * d, 1.0);
    let ids: Vec<i32> = (0..n).map(|i| ((i * 7919 + 13) % rows) as i32).collect();
    let tt = tb(be, table.clone(), &[rows, d]);
    let it = be.from_i32(&ids, &[n]).unwrap();
    let base = rand_vec(2, n * d, 1.0);
    let mut out = tb(be, base.clone(), &[n, d]);
    be.gather_rows(&tt, &it, &mut out, true).unwrap();
    let want: Vec<f64> = (0..n * d)
        .map(|i| base[i] as f64 + table[ids[i / d] as usize * d + i % d] as f64)
        .collect();
    assert!(rel64(&be.to_f32(&out).unwrap(), &want) < 1e-7);
    be.gather_rows(&tt, &it, &mut out, false).unwrap();
    let want: Vec<f32> = (0..n * d)
        .map(|i| table[ids[i / d] as usize * d + i % d])
        .collect();
    assert_eq!(be.to_f32(&out).unwrap(), want);
    let dv = rand_vec(3, n * d, 1.0);
    let g0 = rand_vec(4, rows * d, 0.1);
    let mut grad = tb(be, g0.clone(), &[rows, d]);
    be.scatter_add_rows(&tb(be, dv.clone(), &[n, d]), &it, &mut grad)
        .unwrap();
    let mut wg = f64s(&g0);
    for i in 0..n {
        for c in 0..d {
            wg[ids[i] as usize * d + c] += dv[i * d + c] as f64;
        }
    }
    assert!(rel64(&be.to_f32(&grad).unwrap(), &wg) < 1e-6);
    let bad = be.from_i32(&[0, rows as i32], &[2]).unwrap();
    let mut o2 = tb(be, vec![0.0; 2 * d], &[2, d]);
    assert!(be.gather_rows(&tt, &bad, &mut o2, false).is_err());
}

test_device!(embedding_matches_naive);

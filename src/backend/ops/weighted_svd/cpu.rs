//! The CPU reference of `WeightedSvdOps`: the sparsity-aware (weighted) SVD, docs/algorithms.md §4.2: EM
//! (Srebro & Jaakkola 2003) around a warm-started subspace iteration, in f64.
//! The algorithm is spelled out on [`WeightedSvdOptions`].
//!
//! Products use the `gemm` crate (which never splits the inner dimension, so
//! results do not depend on the thread count); `orth` is a Householder QR and
//! the final small SVD is faer's, both sequential (`Par::Seq`) inside one
//! problem, while rayon runs the problems in parallel. Same seed, same bits.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::qr::no_pivoting::factor as qr;
use faer::{Mat, Par};
use rayon::prelude::*;

use crate::backend::cpu::{f32s, u8s, CHUNK};
use crate::backend::*;
use crate::error::{Error, Result};

impl WeightedSvdOps for CpuBackend {
    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>> {
        let op = "weighted_svd";
        let mut dims = Vec::with_capacity(problems.len());
        for (i, p) in problems.iter().enumerate() {
            let d = check_svd_problem(op, i, p)?;
            f32s(op, &format!("problem {i}: w"), p.w)?;
            u8s(op, &format!("problem {i}: mask"), p.mask)?;
            dims.push(d);
        }
        problems
            .par_iter()
            .enumerate()
            .map(|(i, p)| solve(op, i, p, dims[i], opts))
            .collect()
    }
}

/// `C = op(A)·op(B) (+ C when accumulate)`, row-major f64 (`C` is `m × n`).
#[allow(clippy::too_many_arguments)]
fn gemm64(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    trans_a: bool,
    b: &[f64],
    trans_b: bool,
    c: &mut [f64],
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let (a_rs, a_cs) = if trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the asserts above bound every index the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

/// An orthonormal basis (`m × r`, row-major) of the columns of `y` (`m × r`,
/// row-major, `m ≥ r`): the thin Q of a Householder QR.
fn orth(y: &[f64], m: usize, r: usize) -> Vec<f64> {
    let mut a = Mat::<f64>::from_fn(m, r, |i, j| y[i * r + j]);
    let bs = qr::recommended_block_size::<f64>(m, r);
    let mut coeff = Mat::<f64>::zeros(bs, r);
    qr::qr_in_place(
        a.as_mut(),
        coeff.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(qr::qr_in_place_scratch::<f64>(
            m,
            r,
            bs,
            Par::Seq,
            Default::default(),
        ))),
        Default::default(),
    );
    // The Householder basis: the strictly lower part with a unit diagonal.
    for j in 0..r {
        for i in 0..=j {
            *a.get_mut(i, j) = if i == j { 1.0 } else { 0.0 };
        }
    }
    let mut q = Mat::<f64>::identity(m, r);
    faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
        a.as_ref(),
        coeff.as_ref(),
        faer::Conj::No,
        q.as_mut(),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(
            faer::linalg::householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(m, bs, r),
        )),
    );
    let mut out = vec![0.0; m * r];
    for i in 0..m {
        for j in 0..r {
            out[i * r + j] = *q.get(i, j);
        }
    }
    out
}

/// `(U, σ, V)` of a thin SVD, row-major.
pub(crate) type SvdParts = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Thin SVD of `a` (`m × n`, row-major, f64), sequential: `(U, σ, V)` with `U`
/// `m × k`, `V` `n × k` (row-major, `k = min(m, n)`) and `σ` descending.
pub(crate) fn thin_svd_seq(a: &[f64], m: usize, n: usize) -> std::result::Result<SvdParts, String> {
    let k = m.min(n);
    let am = Mat::<f64>::from_fn(m, n, |i, j| a[i * n + j]);
    let mut u = Mat::<f64>::zeros(m, k);
    let mut v = Mat::<f64>::zeros(n, k);
    let mut sv = faer::diag::Diag::<f64>::zeros(k);
    let thin = faer::linalg::svd::ComputeSvdVectors::Thin;
    let scratch =
        faer::linalg::svd::svd_scratch::<f64>(m, n, thin, thin, Par::Seq, Default::default());
    faer::linalg::svd::svd(
        am.as_ref(),
        sv.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|e| format!("small SVD did not converge ({e:?})"))?;
    let rows = |x: &Mat<f64>, r: usize| -> Vec<f64> {
        let mut out = vec![0.0; r * k];
        for i in 0..r {
            for j in 0..k {
                out[i * k + j] = *x.get(i, j);
            }
        }
        out
    };
    let s: Vec<f64> = (0..k).map(|i| sv.column_vector()[i]).collect();
    Ok((rows(&u, m), s, rows(&v, n)))
}

/// `Σ Ω (W − A)²` in f64, in a fixed order.
fn objective(w: &[f32], mask: &[u8], omega: f64, a: &[f64]) -> f64 {
    let parts: Vec<f64> = w
        .par_chunks(CHUNK)
        .zip(mask.par_chunks(CHUNK))
        .zip(a.par_chunks(CHUNK))
        .map(|((w, m), a)| {
            let mut s = 0.0f64;
            for ((&w, &m), &a) in w.iter().zip(m).zip(a) {
                let d = w as f64 - a;
                s += if m != 0 { d * d } else { omega * d * d };
            }
            s
        })
        .collect();
    parts.iter().sum()
}

/// One problem's state: `Q` (`out × r`) and `B = Qᵀ·X` (`r × in`).
struct Approx {
    q: Vec<f64>,
    b: Vec<f64>,
}

/// One sweep of subspace iteration from the row basis `p` (`in × r`).
fn sweep(x: &[f64], o: usize, n: usize, r: usize, p: &[f64]) -> Approx {
    let mut y = vec![0.0; o * r];
    gemm64(o, r, n, x, false, p, false, &mut y);
    let q = orth(&y, o, r);
    let mut b = vec![0.0; r * n];
    gemm64(r, n, o, &q, true, x, false, &mut b);
    Approx { q, b }
}

/// `orth(Bᵀ)`: a basis of the row space of the current approximation.
fn row_basis(b: &[f64], n: usize, r: usize) -> Vec<f64> {
    let mut bt = vec![0.0; n * r];
    for i in 0..r {
        for j in 0..n {
            bt[j * r + i] = b[i * n + j];
        }
    }
    orth(&bt, n, r)
}

fn solve(
    op: &str,
    index: usize,
    p: &WeightedSvdProblem<'_>,
    (o, n): (usize, usize),
    opts: &WeightedSvdOptions,
) -> Result<WeightedSvdResult> {
    let w = f32s(op, "w", p.w)?;
    let mask = u8s(op, "mask", p.mask)?;
    let r = p.rank;
    let omega = p.omega as f64;
    if r == 0 {
        let zeros = vec![0.0f64; o * n];
        return Ok(WeightedSvdResult {
            u: Tensor::cpu_f32(Vec::new(), &[o, 0])?,
            v: Tensor::cpu_f32(Vec::new(), &[0, n])?,
            singular_values: Vec::new(),
            objective: vec![objective(w, mask, omega, &zeros)],
        });
    }
    let mut x: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let p0: Vec<f64> = svd_random_start(opts.seed, index, n * r)
        .into_iter()
        .map(|v| v as f64)
        .collect();
    let mut cur = sweep(&x, o, n, r, &p0);
    for _ in 1..opts.init_power_iters.max(1) {
        let pb = row_basis(&cur.b, n, r);
        cur = sweep(&x, o, n, r, &pb);
    }
    let mut a = vec![0.0; o * n];
    gemm64(o, n, r, &cur.q, false, &cur.b, false, &mut a);
    let mut obj = vec![objective(w, mask, omega, &a)];
    for _ in 0..opts.max_steps {
        // E step: fill the down-weighted entries from the current approximation.
        x.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(ci, (x, a))| {
                let s = ci * CHUNK;
                for (i, (x, &a)) in x.iter_mut().zip(a).enumerate() {
                    let wv = w[s + i] as f64;
                    *x = if mask[s + i] != 0 {
                        wv
                    } else {
                        omega * wv + (1.0 - omega) * a
                    };
                }
            });
        for _ in 0..opts.power_iters.max(1) {
            let pb = row_basis(&cur.b, n, r);
            cur = sweep(&x, o, n, r, &pb);
        }
        gemm64(o, n, r, &cur.q, false, &cur.b, false, &mut a);
        let f = objective(w, mask, omega, &a);
        let prev = *obj.last().unwrap();
        obj.push(f);
        if em_converged(prev, f, opts.rel_tol) {
            break;
        }
    }
    // Split B = U_b·Σ·V_bᵀ: U = Q·U_b·√Σ, V = √Σ·V_bᵀ.
    let (ub, sv, vb) = thin_svd_seq(&cur.b, r, n)
        .map_err(|e| Error::msg(format!("{op}: problem {index}: {e}")))?;
    let sigma: Vec<f64> = sv.iter().map(|s| s.max(0.0)).collect();
    let root: Vec<f64> = sigma.iter().map(|s| s.sqrt()).collect();
    let mut ubs = vec![0.0; r * r];
    for i in 0..r {
        for j in 0..r {
            ubs[i * r + j] = ub[i * r + j] * root[j];
        }
    }
    let mut u = vec![0.0; o * r];
    gemm64(o, r, r, &cur.q, false, &ubs, false, &mut u);
    let mut v = vec![0.0f32; r * n];
    for i in 0..r {
        for j in 0..n {
            v[i * n + j] = (root[i] * vb[j * r + i]) as f32;
        }
    }
    Ok(WeightedSvdResult {
        u: Tensor::cpu_f32(u.iter().map(|&x| x as f32).collect(), &[o, r])?,
        v: Tensor::cpu_f32(v, &[r, n])?,
        singular_values: sigma.iter().map(|&s| s as f32).collect(),
        objective: obj,
    })
}

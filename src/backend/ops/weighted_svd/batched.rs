//! The batched weighted-SVD EM driver, written once above the device: it
//! needs only the backend's GEMMs and the few primitives of [`SvdDevice`].
//! The CUDA backend implements them with `kernels/weighted_svd.cu` (`cuda.rs`);
//! the tests below implement them on the CPU, so the driver runs without a
//! GPU. The f64 reference the driver is tested against is `cpu.rs`.
//!
//! Problems are grouped by (out, in, rank, ω) into strided batches; cuBLAS
//! strided-batched f32 GEMMs; `orth` by CholeskyQR2 (first pass shifted)
//! with the r×r Cholesky + triangular inverse in one kernel per batch
//! (shared memory, r ≤ 110; larger r on the host in f64); the EM blend fused
//! with the objective (fixed-order f64 reduction); the final r×r SVD on the
//! host with faer (`R` of the last CholeskyQR2 of `Bᵀ`).

use super::cpu::thin_svd_seq;
use crate::backend::*;
use crate::error::{Error, Result};

/// What the EM driver needs besides the backend's GEMMs. The CUDA backend
/// implements it with the kernels of weighted_svd.cu; the unit tests below
/// implement it on the CPU (same f32 algorithm, host Cholesky) so that the
/// driver — buffer shapes, transposes, the factor split — runs without a GPU.
pub(crate) trait SvdDevice {
    fn be(&self) -> &dyn Backend;
    /// An uninitialised tensor.
    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor>;
    /// `dst[dst_off..][..n] = src[src_off..][..n]` (elements; F32 or U8, same dtype).
    fn copy_part(
        &self,
        src: &Tensor,
        src_off: usize,
        dst: &mut Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()>;
    /// Overwrites the first `data.len()` elements of an F32 tensor.
    fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()>;
    /// CholeskyQR's r×r step for a batch of `nb` Gram matrices: `rinv = R⁻¹`
    /// (and `rr = R`) with `G (+ shift) = RᵀR`; see `svd_chol_inv`.
    fn chol(
        &self,
        gram: &Tensor,
        r: usize,
        nb: usize,
        shift: bool,
        rinv: &mut Tensor,
        rr: Option<&mut Tensor>,
    ) -> Result<()>;
    /// `X = Ω⊙W + (1−Ω)⊙A` in place of `A` in `g.xa` (when `write_x`), and the
    /// objective `Σ Ω (W − A)²` of every matrix, as f64 bits in `g.obj`.
    fn blend(&self, g: &mut Group, write_x: bool) -> Result<()>;
}

/// `svd_chol_inv` on the host (f64) for every matrix of the batch.
pub(crate) fn chol_on_host(
    dev: &dyn SvdDevice,
    gram: &Tensor,
    r: usize,
    shift: bool,
    rinv: &mut Tensor,
    rr: Option<&mut Tensor>,
) -> Result<()> {
    let g = dev.be().to_f32(gram)?;
    let mut ri = Vec::with_capacity(g.len());
    let mut rf = Vec::with_capacity(g.len());
    for gm in g.chunks_exact(r * r) {
        let (a, b) = chol_inv_host(gm, r, shift);
        ri.extend(a);
        rf.extend(b);
    }
    dev.write(rinv, &ri)?;
    if let Some(t) = rr {
        dev.write(t, &rf)?;
    }
    Ok(())
}

/// One batch of problems of equal (out, in, rank, ω), in strided buffers.
pub(crate) struct Group {
    pub(crate) o: usize,
    pub(crate) n: usize,
    pub(crate) r: usize,
    pub(crate) omega: f32,
    /// Indices of the problems, in call order.
    pub(crate) members: Vec<usize>,
    pub(crate) w: Tensor,
    pub(crate) m: Tensor,
    /// The current approximation `A = Q·B`, overwritten by the blend with `X`.
    pub(crate) xa: Tensor,
    /// `Y`, then `Q` (`o × r` each).
    pub(crate) y1: Tensor,
    pub(crate) y2: Tensor,
    /// `B = Qᵀ·X` (`r × n`).
    pub(crate) b: Tensor,
    /// `P = orth(Bᵀ)` in p2 (`n × r`), p1 scratch.
    pub(crate) p1: Tensor,
    pub(crate) p2: Tensor,
    pub(crate) gram: Tensor,
    pub(crate) ri1: Tensor,
    pub(crate) ri2: Tensor,
    pub(crate) rr1: Tensor,
    pub(crate) rr2: Tensor,
    pub(crate) qfin: Tensor,
    pub(crate) bfin: Tensor,
    /// The objective of each matrix, f64 bits in I32 storage (`2·nb` words).
    pub(crate) obj: Tensor,
}

impl Group {
    pub(crate) fn nb(&self) -> usize {
        self.members.len()
    }
}

fn new_group(
    dev: &dyn SvdDevice,
    problems: &[WeightedSvdProblem<'_>],
    (o, n, r): (usize, usize, usize),
    omega: f32,
    members: Vec<usize>,
) -> Result<Group> {
    let nb = members.len();
    let numel = o * n;
    let f = |shape: &[usize]| dev.alloc(shape, DType::F32);
    let mut g = Group {
        o,
        n,
        r,
        omega,
        w: f(&[nb, o, n])?,
        m: dev.alloc(&[nb, o, n], DType::U8)?,
        xa: f(&[nb, o, n])?,
        y1: f(&[nb, o, r])?,
        y2: f(&[nb, o, r])?,
        b: f(&[nb, r, n])?,
        p1: f(&[nb, n, r])?,
        p2: f(&[nb, n, r])?,
        gram: f(&[nb, r, r])?,
        ri1: f(&[nb, r, r])?,
        ri2: f(&[nb, r, r])?,
        rr1: f(&[nb, r, r])?,
        rr2: f(&[nb, r, r])?,
        qfin: f(&[nb, o, r])?,
        bfin: f(&[nb, r, n])?,
        obj: dev.alloc(&[2 * nb], DType::I32)?,
        members,
    };
    for (slot, &i) in g.members.iter().enumerate() {
        let p = &problems[i];
        dev.copy_part(p.w, 0, &mut g.w, slot * numel, numel)?;
        dev.copy_part(p.mask, 0, &mut g.m, slot * numel, numel)?;
    }
    Ok(g)
}

/// Host version of `svd_chol_inv` (f64) for ranks whose Gram matrix does not fit
/// in shared memory: the same shift, pivot rule and outputs.
fn chol_inv_host(g: &[f32], r: usize, shift: bool) -> (Vec<f32>, Vec<f32>) {
    let mut a: Vec<f64> = (0..r * r)
        .map(|idx| {
            if idx % r <= idx / r {
                g[idx] as f64
            } else {
                0.0
            }
        })
        .collect();
    let maxd = (0..r).map(|i| a[i * r + i]).fold(0.0f64, f64::max);
    if shift {
        let s = r as f64 * 2f64.powi(-20) * maxd;
        (0..r).for_each(|i| a[i * r + i] += s);
    }
    let tol = r as f64 * 2f64.powi(-22) * maxd;
    for j in 0..r {
        let d = a[j * r + j];
        let ok = d > tol;
        let ljj = if ok { d.sqrt() } else { 0.0 };
        let inv = if ok { 1.0 / ljj } else { 0.0 };
        for i in j + 1..r {
            a[i * r + j] *= inv;
        }
        a[j * r + j] = ljj;
        for ii in j + 1..r {
            for kk in j + 1..=ii {
                a[ii * r + kk] -= a[ii * r + j] * a[kk * r + j];
            }
        }
    }
    let mut rr = vec![0.0f32; r * r];
    let mut rinv = vec![0.0f32; r * r];
    for i in 0..r {
        for j in i..r {
            rr[i * r + j] = a[j * r + i] as f32;
        }
    }
    for c in 0..r {
        let mut x = vec![0.0f64; r];
        for i in c..r {
            let mut acc = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                acc -= a[i * r + k] * x[k];
            }
            let lii = a[i * r + i];
            x[i] = if lii != 0.0 { acc / lii } else { 0.0 };
        }
        for i in c..r {
            rinv[c * r + i] = x[i] as f32;
        }
    }
    (rinv, rr)
}

/// CholeskyQR's r×r step on `gram`: `R⁻¹` into ri1/ri2 (pass 1/2, the first
/// shifted), `R` into rr1/rr2 when `keep_r`.
fn chol(dev: &dyn SvdDevice, g: &mut Group, pass: u8, keep_r: bool) -> Result<()> {
    let (r, nb) = (g.r, g.nb());
    let (ri, rr) = if pass == 1 {
        (&mut g.ri1, &mut g.rr1)
    } else {
        (&mut g.ri2, &mut g.rr2)
    };
    dev.chol(
        &g.gram,
        r,
        nb,
        pass == 1,
        ri,
        if keep_r { Some(rr) } else { None },
    )
}

/// `Q = orth(Y)` by CholeskyQR2, in place in y1 (y2 scratch).
fn orth_y(dev: &dyn SvdDevice, g: &mut Group) -> Result<()> {
    let be = dev.be();
    let (o, r, nb) = (g.o, g.r, g.nb());
    be.gemm(&Gemm::tn(r, r, o).batched(nb), &g.y1, &g.y1, &mut g.gram)?;
    chol(dev, g, 1, false)?;
    be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.y1, &g.ri1, &mut g.y2)?;
    be.gemm(&Gemm::tn(r, r, o).batched(nb), &g.y2, &g.y2, &mut g.gram)?;
    chol(dev, g, 2, false)?;
    be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.y2, &g.ri2, &mut g.y1)
}

/// `P = orth(Bᵀ)` by CholeskyQR2 into p2 (`Bᵀ = P·R`, `R = rr2·rr1` when `keep_r`).
fn orth_bt(dev: &dyn SvdDevice, g: &mut Group, keep_r: bool) -> Result<()> {
    let be = dev.be();
    let (n, r, nb) = (g.n, g.r, g.nb());
    be.gemm(&Gemm::nt(r, r, n).batched(nb), &g.b, &g.b, &mut g.gram)?;
    chol(dev, g, 1, keep_r)?;
    be.gemm(&Gemm::tn(n, r, r).batched(nb), &g.b, &g.ri1, &mut g.p1)?;
    be.gemm(&Gemm::tn(r, r, n).batched(nb), &g.p1, &g.p1, &mut g.gram)?;
    chol(dev, g, 2, keep_r)?;
    be.gemm(&Gemm::nn(n, r, r).batched(nb), &g.p1, &g.ri2, &mut g.p2)
}

/// One sweep of subspace iteration from p2 on `X` (W or the blended X).
fn sweep(dev: &dyn SvdDevice, g: &mut Group, on_w: bool) -> Result<()> {
    let be = dev.be();
    let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
    let gy = Gemm::nn(o, r, n).batched(nb);
    if on_w {
        be.gemm(&gy, &g.w, &g.p2, &mut g.y1)?;
    } else {
        be.gemm(&gy, &g.xa, &g.p2, &mut g.y1)?;
    }
    orth_y(dev, g)?;
    let gb = Gemm::tn(r, n, o).batched(nb);
    if on_w {
        be.gemm(&gb, &g.y1, &g.w, &mut g.b)
    } else {
        be.gemm(&gb, &g.y1, &g.xa, &mut g.b)
    }
}

/// `A = Q·B` into xa, then the blend (when `write_x`) and the objectives of A.
fn blend(dev: &dyn SvdDevice, g: &mut Group, write_x: bool) -> Result<()> {
    let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
    dev.be()
        .gemm(&Gemm::nn(o, n, r).batched(nb), &g.y1, &g.b, &mut g.xa)?;
    dev.blend(g, write_x)
}

/// The objectives written by the last [`blend`] (waits for the device).
fn objectives(dev: &dyn SvdDevice, g: &Group) -> Result<Vec<f64>> {
    let w = dev.be().to_i32(&g.obj)?;
    Ok(w.chunks_exact(2)
        .map(|p| f64::from_bits(p[0] as u32 as u64 | ((p[1] as u32 as u64) << 32)))
        .collect())
}

/// The batched EM driver (see [`WeightedSvdOptions`] for the algorithm).
pub(crate) fn svd_driver(
    dev: &dyn SvdDevice,
    problems: &[WeightedSvdProblem<'_>],
    opts: &WeightedSvdOptions,
) -> Result<Vec<WeightedSvdResult>> {
    let op = "weighted_svd";
    let be = dev.be();
    let mut dims = Vec::with_capacity(problems.len());
    for (i, p) in problems.iter().enumerate() {
        dims.push(check_svd_problem(op, i, p)?);
    }
    let mut results: Vec<Option<WeightedSvdResult>> = (0..problems.len()).map(|_| None).collect();
    // Group by shape, rank and ω, in order of first appearance.
    let mut keys: Vec<(usize, usize, usize, u32)> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let (o, n) = dims[i];
        if p.rank == 0 {
            let w = be.to_f32(p.w)?;
            let m = be.to_u8(p.mask)?;
            let om = p.omega as f64;
            let obj: f64 = w
                .iter()
                .zip(&m)
                .map(|(&w, &m)| if m != 0 { 1.0 } else { om } * (w as f64) * (w as f64))
                .sum();
            results[i] = Some(WeightedSvdResult {
                u: dev.alloc(&[o, 0], DType::F32)?,
                v: dev.alloc(&[0, n], DType::F32)?,
                singular_values: Vec::new(),
                objective: vec![obj],
            });
            continue;
        }
        let key = (o, n, p.rank, p.omega.to_bits());
        match keys.iter().position(|k| *k == key) {
            Some(gi) => members[gi].push(i),
            None => {
                keys.push(key);
                members.push(vec![i]);
            }
        }
    }
    let mut groups = Vec::with_capacity(keys.len());
    for (key, mem) in keys.iter().zip(members) {
        groups.push(new_group(
            dev,
            problems,
            (key.0, key.1, key.2),
            f32::from_bits(key.3),
            mem,
        )?);
    }
    // Random starts and the initial sweeps on X₀ = W_s.
    for g in groups.iter_mut() {
        let mut start = Vec::with_capacity(g.nb() * g.n * g.r);
        for &i in &g.members {
            start.extend(svd_random_start(opts.seed, i, g.n * g.r));
        }
        dev.write(&mut g.p2, &start)?;
        sweep(dev, g, true)?;
        for _ in 1..opts.init_power_iters.max(1) {
            orth_bt(dev, g, false)?;
            sweep(dev, g, true)?;
        }
    }
    // EM: objective of A_k and stop test, then blend and warm-started sweeps.
    let mut objective: Vec<Vec<f64>> = vec![Vec::new(); problems.len()];
    let mut active: Vec<Vec<bool>> = groups.iter().map(|g| vec![true; g.nb()]).collect();
    for step in 0..=opts.max_steps {
        let last = step == opts.max_steps;
        // Queue every group's blend, then read the objectives (one wait).
        for (g, act) in groups.iter_mut().zip(&active) {
            if act.iter().any(|&a| a) {
                blend(dev, g, !last)?;
            }
        }
        for (g, act) in groups.iter_mut().zip(active.iter_mut()) {
            if !act.iter().any(|&a| a) {
                continue;
            }
            let obj = objectives(dev, g)?;
            for s in 0..g.nb() {
                if !act[s] {
                    continue;
                }
                let hist = &mut objective[g.members[s]];
                hist.push(obj[s]);
                let k = hist.len();
                if last || (k >= 2 && em_converged(hist[k - 2], hist[k - 1], opts.rel_tol)) {
                    // This problem's result is the current Q, B.
                    dev.copy_part(&g.y1, s * g.o * g.r, &mut g.qfin, s * g.o * g.r, g.o * g.r)?;
                    dev.copy_part(&g.b, s * g.r * g.n, &mut g.bfin, s * g.r * g.n, g.r * g.n)?;
                    act[s] = false;
                }
            }
        }
        if last {
            break;
        }
        for (g, act) in groups.iter_mut().zip(&active) {
            if act.iter().any(|&a| a) {
                for _ in 0..opts.power_iters.max(1) {
                    orth_bt(dev, g, false)?;
                    sweep(dev, g, false)?;
                }
            }
        }
    }
    // Factors: Bᵀ = P·R (CholeskyQR2), R = U_r·Σ·V_rᵀ on the host, so
    // B = V_r·Σ·(P·U_r)ᵀ: U = Q·(V_r·√Σ), V = (√Σ·U_rᵀ)·Pᵀ.
    for g in groups.iter_mut() {
        let (o, n, r, nb) = (g.o, g.n, g.r, g.nb());
        dev.copy_part(&g.bfin, 0, &mut g.b, 0, nb * r * n)?;
        orth_bt(dev, g, true)?;
        let rr1 = be.to_f32(&g.rr1)?;
        let rr2 = be.to_f32(&g.rr2)?;
        let mut mu = vec![0.0f32; nb * r * r];
        let mut mv = vec![0.0f32; nb * r * r];
        let mut sigmas = Vec::with_capacity(nb);
        for s in 0..nb {
            let (a2, a1) = (
                &rr2[s * r * r..(s + 1) * r * r],
                &rr1[s * r * r..(s + 1) * r * r],
            );
            // R = rr2·rr1 (both upper triangular), in f64.
            let mut rm = vec![0.0f64; r * r];
            for i in 0..r {
                for k in i..r {
                    let x = a2[i * r + k] as f64;
                    if x != 0.0 {
                        for j in k..r {
                            rm[i * r + j] += x * a1[k * r + j] as f64;
                        }
                    }
                }
            }
            let i = g.members[s];
            let (ur, sv, vr) = thin_svd_seq(&rm, r, r)
                .map_err(|e| Error::msg(format!("{op}: problem {i}: {e}")))?;
            let root: Vec<f64> = sv.iter().map(|x| x.max(0.0).sqrt()).collect();
            for a in 0..r {
                for b in 0..r {
                    mu[s * r * r + a * r + b] = (vr[a * r + b] * root[b]) as f32;
                    mv[s * r * r + a * r + b] = (root[a] * ur[b * r + a]) as f32;
                }
            }
            sigmas.push(sv.iter().map(|&x| x.max(0.0) as f32).collect::<Vec<_>>());
        }
        dev.write(&mut g.ri1, &mu)?;
        dev.write(&mut g.ri2, &mv)?;
        be.gemm(&Gemm::nn(o, r, r).batched(nb), &g.qfin, &g.ri1, &mut g.y2)?;
        be.gemm(&Gemm::nt(r, n, r).batched(nb), &g.ri2, &g.p2, &mut g.b)?;
        for (s, sv) in sigmas.into_iter().enumerate() {
            let i = g.members[s];
            let mut u = dev.alloc(&[o, r], DType::F32)?;
            let mut v = dev.alloc(&[r, n], DType::F32)?;
            dev.copy_part(&g.y2, s * o * r, &mut u, 0, o * r)?;
            dev.copy_part(&g.b, s * r * n, &mut v, 0, r * n)?;
            results[i] = Some(WeightedSvdResult {
                u,
                v,
                singular_values: sv,
                objective: std::mem::take(&mut objective[i]),
            });
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every problem solved"))
        .collect())
}

#[cfg(test)]
mod tests {
    //! The batched weighted-SVD driver run on the CPU through [`SvdDevice`]
    //! (f32 products, host Cholesky): checks everything but the kernels
    //! themselves against the f64 CPU reference.
    use super::*;
    use crate::backend::cpu::CpuBackend;

    struct CpuDev(CpuBackend);

    impl SvdDevice for CpuDev {
        fn be(&self) -> &dyn Backend {
            &self.0
        }
        fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
            // NaN-poisoned, so that a read of an unwritten element shows.
            let mut t = self.0.zeros(shape, dtype)?;
            if dtype == DType::F32 {
                self.0.fill(&mut t, f32::NAN)?;
            }
            Ok(t)
        }
        fn copy_part(
            &self,
            src: &Tensor,
            so: usize,
            dst: &mut Tensor,
            d0: usize,
            n: usize,
        ) -> Result<()> {
            match src.dtype() {
                DType::F32 => {
                    let s = src.host_f32()?[so..so + n].to_vec();
                    dst.host_f32_mut()?[d0..d0 + n].copy_from_slice(&s);
                }
                DType::U8 => {
                    let s = src.host_u8()?[so..so + n].to_vec();
                    dst.host_u8_mut()?[d0..d0 + n].copy_from_slice(&s);
                }
                _ => unreachable!(),
            }
            Ok(())
        }
        fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()> {
            t.host_f32_mut()?[..data.len()].copy_from_slice(data);
            Ok(())
        }
        fn chol(
            &self,
            gram: &Tensor,
            r: usize,
            _nb: usize,
            shift: bool,
            rinv: &mut Tensor,
            rr: Option<&mut Tensor>,
        ) -> Result<()> {
            chol_on_host(self, gram, r, shift, rinv, rr)
        }
        fn blend(&self, g: &mut Group, write_x: bool) -> Result<()> {
            let numel = g.o * g.n;
            let w = g.w.host_f32()?.to_vec();
            let m = g.m.host_u8()?.to_vec();
            let xa = g.xa.host_f32_mut()?;
            let mut obj = Vec::new();
            for b in 0..g.members.len() {
                let mut acc = 0.0f64;
                for i in b * numel..(b + 1) * numel {
                    let d = w[i] as f64 - xa[i] as f64;
                    acc += if m[i] != 0 {
                        d * d
                    } else {
                        g.omega as f64 * d * d
                    };
                    if write_x && m[i] == 0 {
                        xa[i] = g.omega * w[i] + (1.0 - g.omega) * xa[i];
                    } else if write_x {
                        xa[i] = w[i];
                    }
                }
                obj.push(acc);
            }
            let words: Vec<i32> = bytemuck::cast_slice(&obj).to_vec();
            g.obj.host_i32_mut()?.copy_from_slice(&words);
            Ok(())
        }
    }

    fn rand(seed: u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 2.0 * crate::backend::philox::uniform(seed, 1, i as u64) - 1.0)
            .collect()
    }

    fn product(r: &WeightedSvdResult) -> Vec<f64> {
        let (o, k) = (r.u.shape()[0], r.u.shape()[1]);
        let n = r.v.shape()[1];
        let (u, v) = (r.u.host_f32().unwrap(), r.v.host_f32().unwrap());
        let mut p = vec![0.0f64; o * n];
        for i in 0..o {
            for l in 0..k {
                for j in 0..n {
                    p[i * n + j] += u[i * k + l] as f64 * v[l * n + j] as f64;
                }
            }
        }
        p
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn batched_driver_matches_cpu_reference() {
        // Mixed shapes, two problems sharing a group, a rank-0 problem, and a
        // spectrum with a gap so that both solvers converge to the same answer.
        let shapes = [
            (40usize, 24usize, 5usize, 0.0f32),
            (24, 40, 4, 0.2),
            (40, 24, 5, 0.0),
            (17, 9, 0, 0.5),
            (30, 30, 30, 0.0),
        ];
        let mut ws = Vec::new();
        let mut ms = Vec::new();
        for (i, &(o, n, _, _)) in shapes.iter().enumerate() {
            let k = o.min(n);
            let a = rand(10 + i as u64, o * k);
            let b = rand(20 + i as u64, k * n);
            let mut w = vec![0.0f32; o * n];
            for l in 0..k {
                let s = 0.7f64.powi(l as i32);
                for x in 0..o {
                    for y in 0..n {
                        w[x * n + y] += (s * a[x * k + l] as f64 * b[l * n + y] as f64) as f32;
                    }
                }
            }
            let m: Vec<u8> = rand(30 + i as u64, o * n)
                .iter()
                .map(|&u| (u > -0.2) as u8)
                .collect();
            for (x, &mm) in w.iter_mut().zip(&m) {
                if mm == 0 {
                    *x = 0.0;
                }
            }
            ws.push(Tensor::cpu_f32(w, &[o, n]).unwrap());
            ms.push(Tensor::cpu_u8(m, &[o, n]).unwrap());
        }
        let problems: Vec<WeightedSvdProblem> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(_, _, r, omega))| WeightedSvdProblem {
                w: &ws[i],
                mask: &ms[i],
                omega,
                rank: r,
            })
            .collect();
        for opts in [
            WeightedSvdOptions {
                max_steps: 8,
                rel_tol: 0.0,
                seed: 3,
                ..Default::default()
            },
            WeightedSvdOptions {
                max_steps: 0,
                seed: 4,
                ..Default::default()
            },
        ] {
            let want = CpuBackend::new().weighted_svd(&problems, &opts).unwrap();
            let got = svd_driver(&CpuDev(CpuBackend::new()), &problems, &opts).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.u.shape(), w.u.shape(), "problem {i}");
                assert_eq!(g.v.shape(), w.v.shape(), "problem {i}");
                assert_eq!(g.objective.len(), w.objective.len(), "problem {i}");
                let scale: f64 = ws[i]
                    .host_f32()
                    .unwrap()
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum();
                for (a, b) in g.objective.iter().zip(&w.objective) {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs() + 1e-9 * scale,
                        "problem {i}: objective {a} vs {b}"
                    );
                }
                if shapes[i].2 == 0 {
                    continue;
                }
                let err = rel(&product(g), &product(w));
                assert!(err < 1e-4, "problem {i}: products differ by {err}");
                for (a, b) in g.singular_values.iter().zip(&w.singular_values) {
                    assert!(
                        (a - b).abs() <= 1e-4 * w.singular_values[0],
                        "problem {i}: σ {a} vs {b}"
                    );
                }
                // Balanced factors: UᵀU ≈ diag(σ).
                let (o, r) = (g.u.shape()[0], g.u.shape()[1]);
                let u = g.u.host_f32().unwrap();
                for a in 0..r {
                    for b in 0..r {
                        let d: f64 = (0..o)
                            .map(|x| u[x * r + a] as f64 * u[x * r + b] as f64)
                            .sum();
                        let want = if a == b {
                            g.singular_values[a] as f64
                        } else {
                            0.0
                        };
                        assert!(
                            (d - want).abs() < 1e-4 * g.singular_values[0] as f64,
                            "problem {i}: UᵀU[{a},{b}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cholesky_qr_step_handles_rank_deficiency() {
        // Y (20×4) whose third column repeats the first: Q must come out with
        // orthonormal columns plus one zero column, never NaN.
        let (m, r) = (20usize, 4usize);
        let mut y = rand(5, m * r);
        for i in 0..m {
            y[i * r + 2] = y[i * r];
        }
        let be = CpuBackend::new();
        let yt = Tensor::cpu_f32(y.clone(), &[m, r]).unwrap();
        let mut q = yt;
        for pass in [true, false] {
            let mut g = be.zeros(&[r, r], DType::F32).unwrap();
            be.gemm(&Gemm::tn(r, r, m), &q, &q, &mut g).unwrap();
            let (rinv, _) = chol_inv_host(g.host_f32().unwrap(), r, pass);
            let rinv = Tensor::cpu_f32(rinv, &[r, r]).unwrap();
            let mut next = be.zeros(&[m, r], DType::F32).unwrap();
            be.gemm(&Gemm::nn(m, r, r), &q, &rinv, &mut next).unwrap();
            q = next;
        }
        let qv = q.host_f32().unwrap();
        assert!(qv.iter().all(|x| x.is_finite()));
        let mut zero_cols = 0;
        for a in 0..r {
            for b in 0..r {
                let d: f64 = (0..m)
                    .map(|x| qv[x * r + a] as f64 * qv[x * r + b] as f64)
                    .sum();
                if a == b && d < 1e-6 {
                    zero_cols += 1;
                } else if a == b {
                    assert!((d - 1.0).abs() < 1e-5, "column {a}: norm² {d}");
                } else {
                    assert!(d.abs() < 1e-5, "columns {a}, {b}: {d}");
                }
            }
        }
        assert_eq!(zero_cols, 1);
        // Q spans Y: Y − Q·QᵀY ≈ 0.
        for c in 0..r {
            for x in 0..m {
                let mut proj = 0.0f64;
                for a in 0..r {
                    let dot: f64 = (0..m)
                        .map(|z| qv[z * r + a] as f64 * y[z * r + c] as f64)
                        .sum();
                    proj += qv[x * r + a] as f64 * dot;
                }
                assert!((proj - y[x * r + c] as f64).abs() < 1e-4);
            }
        }
    }
}

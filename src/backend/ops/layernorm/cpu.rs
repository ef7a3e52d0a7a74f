//! The CPU reference of `LayerNormOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl LayerNormOps for CpuBackend {
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
        y: &mut Tensor,
        mean: &mut Tensor,
        rstd: &mut Tensor,
    ) -> Result<()> {
        let op = "layer_norm";
        let xs = f32s(op, "x", x)?;
        let gs = f32s(op, "gamma", gamma)?;
        let bs = f32s(op, "beta", beta)?;
        let cols = gs.len();
        check_len(op, "beta", bs.len(), cols)?;
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        let ys = f32s_mut(op, "y", y)?;
        check_len(op, "y", ys.len(), xs.len())?;
        let mut stats = vec![(0.0f32, 0.0f32); rows];
        ys.par_chunks_mut(cols)
            .zip(stats.par_iter_mut())
            .enumerate()
            .for_each(|(r, (yr, st))| {
                let xr = &xs[r * cols..(r + 1) * cols];
                let mu = xr.iter().sum::<f32>() / cols as f32;
                let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / cols as f32;
                let rs = 1.0 / (var + eps).sqrt();
                for c in 0..cols {
                    yr[c] = (xr[c] - mu) * rs * gs[c] + bs[c];
                }
                *st = (mu, rs);
            });
        let ms = f32s_mut(op, "mean", mean)?;
        check_len(op, "mean", ms.len(), rows)?;
        ms.iter_mut().zip(&stats).for_each(|(m, s)| *m = s.0);
        let rss = f32s_mut(op, "rstd", rstd)?;
        check_len(op, "rstd", rss.len(), rows)?;
        rss.iter_mut().zip(&stats).for_each(|(m, s)| *m = s.1);
        Ok(())
    }

    fn layer_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dx: &mut Tensor,
        dgamma: &mut Tensor,
        dbeta: &mut Tensor,
    ) -> Result<()> {
        let op = "layer_norm_backward";
        let dys = f32s(op, "dy", dy)?;
        let xs = f32s(op, "x", x)?;
        let gs = f32s(op, "gamma", gamma)?;
        let ms = f32s(op, "mean", mean)?;
        let rs = f32s(op, "rstd", rstd)?;
        let cols = gs.len();
        if cols == 0 || xs.len() % cols != 0 {
            return Err(Error::shape(
                op,
                format!("x has {} elements, not a multiple of {cols}", xs.len()),
            ));
        }
        let rows = xs.len() / cols;
        check_len(op, "dy", dys.len(), xs.len())?;
        check_len(op, "mean", ms.len(), rows)?;
        check_len(op, "rstd", rs.len(), rows)?;
        let dxs = f32s_mut(op, "dx", dx)?;
        check_len(op, "dx", dxs.len(), xs.len())?;
        dxs.par_chunks_mut(cols).enumerate().for_each(|(r, dxr)| {
            let xr = &xs[r * cols..(r + 1) * cols];
            let dyr = &dys[r * cols..(r + 1) * cols];
            let (mu, rsd) = (ms[r], rs[r]);
            let mut sum_dyg = 0.0f32;
            let mut sum_dyg_xhat = 0.0f32;
            for c in 0..cols {
                let xhat = (xr[c] - mu) * rsd;
                let dyg = dyr[c] * gs[c];
                sum_dyg += dyg;
                sum_dyg_xhat += dyg * xhat;
            }
            let inv_n = 1.0 / cols as f32;
            for c in 0..cols {
                let xhat = (xr[c] - mu) * rsd;
                let dyg = dyr[c] * gs[c];
                dxr[c] = rsd * (dyg - inv_n * sum_dyg - xhat * inv_n * sum_dyg_xhat);
            }
        });
        let dgs = f32s_mut(op, "dgamma", dgamma)?;
        check_len(op, "dgamma", dgs.len(), cols)?;
        let mut dg_acc = vec![0.0f32; cols];
        let mut db_acc = vec![0.0f32; cols];
        dg_acc
            .par_chunks_mut(64)
            .zip(db_acc.par_chunks_mut(64))
            .enumerate()
            .for_each(|(bi, (dg, db))| {
                let c0 = bi * 64;
                for r in 0..rows {
                    for j in 0..dg.len() {
                        let c = c0 + j;
                        let xhat = (xs[r * cols + c] - ms[r]) * rs[r];
                        dg[j] += dys[r * cols + c] * xhat;
                        db[j] += dys[r * cols + c];
                    }
                }
            });
        dgs.iter_mut().zip(&dg_acc).for_each(|(d, a)| *d += a);
        let dbs = f32s_mut(op, "dbeta", dbeta)?;
        check_len(op, "dbeta", dbs.len(), cols)?;
        dbs.iter_mut().zip(&db_acc).for_each(|(d, a)| *d += a);
        Ok(())
    }
}

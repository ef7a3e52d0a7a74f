//! The CUDA launcher of `WeightedSvdOps`.

use super::batched::{chol_on_host, svd_driver, Group, SvdDevice};
use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl WeightedSvdOps for CudaBackend {
    fn weighted_svd(
        &self,
        problems: &[WeightedSvdProblem<'_>],
        opts: &WeightedSvdOptions,
    ) -> Result<Vec<WeightedSvdResult>> {
        let op = "weighted_svd";
        for (i, p) in problems.iter().enumerate() {
            self.ptr(op, &format!("problem {i}: w"), p.w, DType::F32)?;
            self.ptr(op, &format!("problem {i}: mask"), p.mask, DType::U8)?;
        }
        let res = svd_driver(self, problems, opts)?;
        self.synchronize()?;
        Ok(res)
    }
}

/// Largest rank whose r×r Cholesky runs in one block's 48 KB of shared memory.
const CHOL_MAX_RANK: usize = 110;

impl SvdDevice for CudaBackend {
    fn be(&self) -> &dyn Backend {
        self
    }

    fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        empty(self, shape, dtype)
    }

    fn copy_part(
        &self,
        src: &Tensor,
        src_off: usize,
        dst: &mut Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        let op = "weighted_svd";
        let dt = src.dtype();
        if dst.dtype() != dt || src_off + n > src.numel() || dst_off + n > dst.numel() {
            return Err(Error::shape(op, "copy_part out of bounds"));
        }
        let es = dt.size_bytes();
        let ps = self.ptr(op, "src", src, dt)?;
        let pd = self.ptr_mut(op, "dst", dst, dt)?;
        dtod(
            self,
            pd + (dst_off * es) as u64,
            ps + (src_off * es) as u64,
            n * es,
        )
    }

    fn write(&self, t: &mut Tensor, data: &[f32]) -> Result<()> {
        write_f32(self, t, data)
    }

    fn chol(
        &self,
        gram: &Tensor,
        r: usize,
        nb: usize,
        shift: bool,
        rinv: &mut Tensor,
        rr: Option<&mut Tensor>,
    ) -> Result<()> {
        let op = "weighted_svd";
        if r <= CHOL_MAX_RANK {
            let pg = self.ptr(op, "gram", gram, DType::F32)?;
            let pri = self.ptr_mut(op, "rinv", rinv, DType::F32)?;
            let prr = match rr {
                Some(t) => self.ptr_mut(op, "r", t, DType::F32)?,
                None => 0,
            };
            let threads = if r <= 64 { 64 } else { 128 };
            self.launch(
                "weighted_svd",
                "svd_chol_inv",
                cfg((nb as u32, 1, 1), threads, (r * r * 4) as u32),
                &[
                    KArg::Ptr(pg),
                    KArg::Ptr(pri),
                    KArg::Ptr(prr),
                    KArg::I32(r as i32),
                    KArg::I32(shift as i32),
                ],
            )
        } else {
            chol_on_host(self, gram, r, shift, rinv, rr)
        }
    }

    fn blend(&self, g: &mut Group, write_x: bool) -> Result<()> {
        let op = "weighted_svd";
        let (nb, numel) = (g.nb(), g.o * g.n);
        let nblk = (if numel % 4 == 0 { numel / 4 } else { numel })
            .div_ceil(BLOCK as usize * 4)
            .clamp(1, 256);
        let mut partial = empty(self, &[2 * nb * nblk], DType::I32)?;
        let pp = self.ptr_mut(op, "partial", &mut partial, DType::I32)?;
        let kernel = if numel % 4 == 0 {
            "svd_blend4"
        } else {
            "svd_blend1"
        };
        let args = [
            KArg::Ptr(self.ptr(op, "w", &g.w, DType::F32)?),
            KArg::Ptr(self.ptr(op, "mask", &g.m, DType::U8)?),
            KArg::Ptr(self.ptr_mut(op, "x", &mut g.xa, DType::F32)?),
            KArg::U64(numel as u64),
            KArg::F32(g.omega),
            KArg::I32(write_x as i32),
            KArg::Ptr(pp),
        ];
        self.launch(
            "weighted_svd",
            kernel,
            cfg((nblk as u32, nb as u32, 1), BLOCK, 0),
            &args,
        )?;
        let po = self.ptr_mut(op, "objective", &mut g.obj, DType::I32)?;
        self.launch(
            "weighted_svd",
            "svd_sum_partials",
            cfg((nb as u32, 1, 1), BLOCK, 0),
            &[KArg::Ptr(pp), KArg::I32(nblk as i32), KArg::Ptr(po)],
        )
    }
}

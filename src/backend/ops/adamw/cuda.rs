//! The CUDA launcher of `AdamWOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::Result;

impl AdamWOps for CudaBackend {
    fn adamw(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        hp: &AdamWStep,
    ) -> Result<()> {
        let op = "adamw";
        let pg = self.ptr(op, "grad", g, DType::F32)?;
        let n = g.numel();
        let pm = self.ptr_mut(op, "m", m, DType::F32)?;
        check_len(op, "m", m.numel(), n)?;
        let pv = self.ptr_mut(op, "v", v, DType::F32)?;
        check_len(op, "v", v.numel(), n)?;
        let pp = self.ptr_mut(op, "param", p, DType::F32)?;
        check_len(op, "param", p.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        // The scalars exactly as the CPU computes them (f32).
        let mut args = vec![
            KArg::Ptr(pp),
            KArg::Ptr(pg),
            KArg::Ptr(pm),
            KArg::Ptr(pv),
            KArg::U64(n as u64),
        ];
        args.extend(adamw_scalars(hp).map(KArg::F32));
        self.launch("adamw", "adamw_f32", self.stride_cfg(n.div_ceil(4)), &args)
    }

    fn adamw_many(&self, params: &mut AdamWWalk<'_>) -> Result<()> {
        let op = "adamw_many";
        // `AdamWEntry` of kernels/adamw.cu: four pointers, n, first_block,
        // blocks, the eight scalars (80 bytes).
        let mut bytes = Vec::new();
        let (mut count, mut blocks) = (0usize, 0usize);
        params(&mut |s| {
            let n = s.g.numel();
            let pg = self.ptr(op, "grad", s.g, DType::F32)?;
            check_len(op, "m", s.m.numel(), n)?;
            check_len(op, "v", s.v.numel(), n)?;
            check_len(op, "param", s.p.numel(), n)?;
            let pm = self.ptr_mut(op, "m", s.m, DType::F32)?;
            let pv = self.ptr_mut(op, "v", s.v, DType::F32)?;
            let pp = self.ptr_mut(op, "param", s.p, DType::F32)?;
            if n == 0 {
                return Ok(());
            }
            // About four elements per thread per pass; any grid gives the
            // same result (elementwise).
            let b = n.div_ceil(4 * BLOCK as usize).clamp(1, 1024);
            for w in [pp, pg, pm, pv, n as u64] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&(blocks as u32).to_le_bytes());
            bytes.extend_from_slice(&(b as u32).to_le_bytes());
            for f in adamw_scalars(&s.hp) {
                bytes.extend_from_slice(&f.to_le_bytes());
            }
            count += 1;
            blocks += b;
            if blocks > u32::MAX as usize {
                return Err(too_large(
                    op,
                    "blocks of all parameters",
                    blocks,
                    u32::MAX as usize,
                ));
            }
            Ok(())
        })?;
        if count == 0 {
            return Ok(());
        }
        let table = self.from_u8(&bytes, &[bytes.len()])?;
        let pt = self.ptr(op, "table", &table, DType::U8)?;
        self.launch(
            "adamw",
            "adamw_many_f32",
            cudarc::driver::LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            },
            &[KArg::Ptr(pt), KArg::U32(count as u32)],
        )
    }
}

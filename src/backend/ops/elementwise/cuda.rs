//! The CUDA launcher of `ElementwiseOps`.

use crate::backend::cuda::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl ElementwiseOps for CudaBackend {
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()> {
        let op = "axpby";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let n = x.numel();
        check_len(op, "y", y.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "axpby_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::U64(n as u64),
                KArg::F32(alpha),
                KArg::F32(beta),
                KArg::U32((beta != 0.0) as u32),
            ],
        )
    }

    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()> {
        let pt = self.ptr_mut("scale", "t", t, DType::F32)?;
        let n = t.numel();
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "scale_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[KArg::Ptr(pt), KArg::U64(n as u64), KArg::F32(alpha)],
        )
    }

    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        let op = "mul";
        let pa = self.ptr(op, "a", a, DType::F32)?;
        let pb = self.ptr(op, "b", b, DType::F32)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = a.numel();
        check_len(op, "b", b.numel(), n)?;
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "mul_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(pa),
                KArg::Ptr(pb),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()> {
        let op = "mul_mask";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pm = self.ptr(op, "mask", mask, DType::U8)?;
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        check_len(op, "mask", mask.numel(), n)?;
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "mul_mask_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(pm),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()> {
        let op = "masked_add";
        let px = self.ptr(op, "x", x, DType::F32)?;
        let pm = match mask {
            Some(m) => self.ptr(op, "mask", m, DType::U8)?,
            None => 0,
        };
        let po = self.ptr_mut(op, "out", out, DType::F32)?;
        let n = x.numel();
        if let Some(m) = mask {
            check_len(op, "mask", m.numel(), n)?;
        }
        check_len(op, "out", out.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "elementwise",
            "masked_add_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(pm),
                KArg::Ptr(po),
                KArg::U64(n as u64),
            ],
        )
    }

    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()> {
        let op = "add_row_bias";
        let pb = self.ptr(op, "bias", bias, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let cols = bias.numel();
        let n = y.numel();
        if cols == 0 || n % cols != 0 {
            return Err(Error::shape(
                op,
                format!("y has {n} elements, not a multiple of {cols}"),
            ));
        }
        if n == 0 {
            return Ok(());
        }
        let rows = n / cols;
        let (kernel, units) = if cols % 4 == 0 {
            ("add_row_bias_f32x4", cols / 4)
        } else {
            ("add_row_bias_f32", cols)
        };
        self.launch(
            "elementwise",
            kernel,
            Self::rows_2d_cfg(units, rows),
            &[
                KArg::Ptr(py),
                KArg::Ptr(pb),
                KArg::U64(rows as u64),
                KArg::U64(units as u64),
            ],
        )
    }

    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        self.unary("gelu", "gelu_f32", x, y)
    }

    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        self.binary(
            "gelu_backward",
            "gelu_backward_f32",
            "x",
            x,
            "dy",
            dy,
            "dx",
            dx,
        )
    }

    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        self.unary("tanh", "tanh_f32", x, y)
    }

    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        self.binary(
            "tanh_backward",
            "tanh_backward_f32",
            "y",
            y,
            "dy",
            dy,
            "dx",
            dx,
        )
    }

    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()> {
        let op = "dropout";
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!(
                "dropout: probability {p} outside [0, 1)"
            )));
        }
        let px = self.ptr(op, "x", x, DType::F32)?;
        let py = self.ptr_mut(op, "y", y, DType::F32)?;
        let n = x.numel();
        check_len(op, "y", y.numel(), n)?;
        if n == 0 {
            return Ok(());
        }
        if p == 0.0 {
            return self.copy(x, y);
        }
        let scale = 1.0 / (1.0 - p);
        self.launch(
            "elementwise",
            "dropout_f32",
            self.stride_cfg(n.div_ceil(4)),
            &[
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::U64(n as u64),
                KArg::F32(p),
                KArg::F32(scale),
                KArg::U64(seed),
                KArg::U64(stream),
            ],
        )
    }

    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()> {
        let op = "copy_rows";
        let ps = self.ptr(op, "src", src, DType::F32)?;
        let pd = self.ptr_mut(op, "dst", dst, DType::F32)?;
        if spec.rows == 0 || spec.cols == 0 {
            return Ok(());
        }
        let end = |off: usize, stride: usize| {
            (spec.rows - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(off))
                .and_then(|v| v.checked_add(spec.cols))
        };
        let fits = |e: Option<usize>, len: usize| matches!(e, Some(e) if e <= len);
        if !fits(end(spec.src_offset, spec.src_stride), src.numel())
            || !fits(end(spec.dst_offset, spec.dst_stride), dst.numel())
            || (spec.rows > 1 && spec.dst_stride < spec.cols)
        {
            return Err(Error::shape(
                op,
                format!(
                    "{spec:?} out of bounds (src {}, dst {})",
                    src.numel(),
                    dst.numel()
                ),
            ));
        }
        let aligned = [
            spec.cols,
            spec.src_offset,
            spec.src_stride,
            spec.dst_offset,
            spec.dst_stride,
        ]
        .iter()
        .all(|v| v % 4 == 0);
        let (kernel, q) = if aligned {
            ("copy_rows_f32x4", 4)
        } else {
            ("copy_rows_f32", 1)
        };
        let units = spec.cols / q;
        let cfg = Self::rows_2d_cfg(units, spec.rows);
        self.launch(
            "elementwise",
            kernel,
            cfg,
            &[
                KArg::Ptr(ps),
                KArg::Ptr(pd),
                KArg::U64(spec.rows as u64),
                KArg::U64(units as u64),
                KArg::U64((spec.src_offset / q) as u64),
                KArg::U64((spec.src_stride / q) as u64),
                KArg::U64((spec.dst_offset / q) as u64),
                KArg::U64((spec.dst_stride / q) as u64),
                KArg::U32(spec.accumulate as u32),
            ],
        )
    }
}

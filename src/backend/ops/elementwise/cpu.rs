//! The CPU reference of `ElementwiseOps`.

use rayon::prelude::*;

use crate::backend::cpu::*;
use crate::backend::*;
use crate::error::{Error, Result};

impl ElementwiseOps for CpuBackend {
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &mut Tensor) -> Result<()> {
        let xs = f32s("axpby", "x", x)?;
        let ys = f32s_mut("axpby", "y", y)?;
        check_len("axpby", "y", ys.len(), xs.len())?;
        par_chunks(ys, |start, ys| {
            let xs = &xs[start..start + ys.len()];
            if beta == 0.0 {
                ys.iter_mut().zip(xs).for_each(|(y, x)| *y = alpha * x);
            } else {
                ys.iter_mut()
                    .zip(xs)
                    .for_each(|(y, x)| *y = alpha * x + beta * *y);
            }
        });
        Ok(())
    }

    fn scale(&self, t: &mut Tensor, alpha: f32) -> Result<()> {
        let ts = f32s_mut("scale", "t", t)?;
        par_chunks(ts, |_, ts| ts.iter_mut().for_each(|x| *x *= alpha));
        Ok(())
    }

    fn mul(&self, a: &Tensor, b: &Tensor, out: &mut Tensor) -> Result<()> {
        let xs = f32s("mul", "a", a)?;
        let ys = f32s("mul", "b", b)?;
        let os = f32s_mut("mul", "out", out)?;
        check_len("mul", "b", ys.len(), xs.len())?;
        check_len("mul", "out", os.len(), xs.len())?;
        par_chunks(os, |s, os| {
            os.iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = xs[s + i] * ys[s + i])
        });
        Ok(())
    }

    fn mul_mask(&self, x: &Tensor, mask: &Tensor, out: &mut Tensor) -> Result<()> {
        let xs = f32s("mul_mask", "x", x)?;
        let ms = u8s("mul_mask", "mask", mask)?;
        let os = f32s_mut("mul_mask", "out", out)?;
        check_len("mul_mask", "mask", ms.len(), xs.len())?;
        check_len("mul_mask", "out", os.len(), xs.len())?;
        par_chunks(os, |s, os| {
            for (i, o) in os.iter_mut().enumerate() {
                *o = if ms[s + i] != 0 { xs[s + i] } else { 0.0 };
            }
        });
        Ok(())
    }

    fn masked_add(&self, x: &Tensor, mask: Option<&Tensor>, out: &mut Tensor) -> Result<()> {
        let op = "masked_add";
        let xs = f32s(op, "x", x)?;
        let ms = mask.map(|m| u8s(op, "mask", m)).transpose()?;
        let os = f32s_mut(op, "out", out)?;
        check_len(op, "out", os.len(), xs.len())?;
        if let Some(m) = ms {
            check_len(op, "mask", m.len(), xs.len())?;
        }
        par_chunks(os, |s, os| {
            for (i, o) in os.iter_mut().enumerate() {
                if ms.is_none_or(|m| m[s + i] != 0) {
                    *o += xs[s + i];
                }
            }
        });
        Ok(())
    }

    fn add_row_bias(&self, y: &mut Tensor, bias: &Tensor) -> Result<()> {
        let bs = f32s("add_row_bias", "bias", bias)?;
        let ys = f32s_mut("add_row_bias", "y", y)?;
        let cols = bs.len();
        if cols == 0 || ys.len() % cols != 0 {
            return Err(Error::shape(
                "add_row_bias",
                format!("y has {} elements, not a multiple of {cols}", ys.len()),
            ));
        }
        ys.par_chunks_mut(cols)
            .for_each(|row| row.iter_mut().zip(bs).for_each(|(y, b)| *y += b));
        Ok(())
    }

    fn gelu(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        let xs = f32s("gelu", "x", x)?;
        let ys = f32s_mut("gelu", "y", y)?;
        check_len("gelu", "y", ys.len(), xs.len())?;
        par_chunks(ys, |s, ys| {
            ys.iter_mut()
                .enumerate()
                .for_each(|(i, y)| *y = gelu_f32(xs[s + i]))
        });
        Ok(())
    }

    fn gelu_backward(&self, x: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        let xs = f32s("gelu_backward", "x", x)?;
        let dys = f32s("gelu_backward", "dy", dy)?;
        let dxs = f32s_mut("gelu_backward", "dx", dx)?;
        check_len("gelu_backward", "dy", dys.len(), xs.len())?;
        check_len("gelu_backward", "dx", dxs.len(), xs.len())?;
        par_chunks(dxs, |s, d| {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, d)| *d = dys[s + i] * gelu_grad_f32(xs[s + i]))
        });
        Ok(())
    }

    fn tanh(&self, x: &Tensor, y: &mut Tensor) -> Result<()> {
        let xs = f32s("tanh", "x", x)?;
        let ys = f32s_mut("tanh", "y", y)?;
        check_len("tanh", "y", ys.len(), xs.len())?;
        par_chunks(ys, |s, ys| {
            ys.iter_mut()
                .enumerate()
                .for_each(|(i, y)| *y = xs[s + i].tanh())
        });
        Ok(())
    }

    fn tanh_backward(&self, y: &Tensor, dy: &Tensor, dx: &mut Tensor) -> Result<()> {
        let ys = f32s("tanh_backward", "y", y)?;
        let dys = f32s("tanh_backward", "dy", dy)?;
        let dxs = f32s_mut("tanh_backward", "dx", dx)?;
        check_len("tanh_backward", "dy", dys.len(), ys.len())?;
        check_len("tanh_backward", "dx", dxs.len(), ys.len())?;
        par_chunks(dxs, |s, d| {
            d.iter_mut()
                .enumerate()
                .for_each(|(i, d)| *d = dys[s + i] * (1.0 - ys[s + i] * ys[s + i]))
        });
        Ok(())
    }

    fn dropout(&self, x: &Tensor, y: &mut Tensor, p: f32, seed: u64, stream: u64) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::msg(format!(
                "dropout: probability {p} outside [0, 1)"
            )));
        }
        let xs = f32s("dropout", "x", x)?;
        let ys = f32s_mut("dropout", "y", y)?;
        check_len("dropout", "y", ys.len(), xs.len())?;
        if p == 0.0 {
            ys.copy_from_slice(xs);
            return Ok(());
        }
        let scale = 1.0 / (1.0 - p);
        par_chunks(ys, |s, ys| {
            for (i, y) in ys.iter_mut().enumerate() {
                let keep = philox::uniform(seed, stream, (s + i) as u64) >= p;
                *y = if keep { xs[s + i] * scale } else { 0.0 };
            }
        });
        Ok(())
    }

    fn copy_rows(&self, src: &Tensor, dst: &mut Tensor, spec: &RowCopy) -> Result<()> {
        let op = "copy_rows";
        let ss = f32s(op, "src", src)?;
        let ds = f32s_mut(op, "dst", dst)?;
        if spec.rows == 0 || spec.cols == 0 {
            return Ok(());
        }
        let s_end = spec.src_offset + (spec.rows - 1) * spec.src_stride + spec.cols;
        let d_end = spec.dst_offset + (spec.rows - 1) * spec.dst_stride + spec.cols;
        if s_end > ss.len() || d_end > ds.len() || (spec.rows > 1 && spec.dst_stride < spec.cols) {
            return Err(Error::shape(
                op,
                format!(
                    "{spec:?} out of bounds (src {}, dst {})",
                    ss.len(),
                    ds.len()
                ),
            ));
        }
        for r in 0..spec.rows {
            let s = &ss[spec.src_offset + r * spec.src_stride..][..spec.cols];
            let d = &mut ds[spec.dst_offset + r * spec.dst_stride..][..spec.cols];
            if spec.accumulate {
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(s);
            }
        }
        Ok(())
    }
}

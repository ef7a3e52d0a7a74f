//! The benchmark workloads of this folder's operations for `lpaf bench kernels`
//! and `benches/kernels.rs`: their FLOPs and the fewest bytes they must move,
//! so each time is reported as a fraction of the ceiling measured in the same run.

use crate::backend::ops::workload::*;
use crate::backend::*;
use crate::error::Result;

/// The workloads of this folder's operations at BERT-base shapes (`scale`
/// as in [`scaled_dims`]).
pub fn workloads(be: &dyn Backend, scale: f64, seed: u64) -> Result<Vec<Box<dyn Workload>>> {
    let (b, heads, s) = attention_dims(scale);
    let (h, _) = scaled_dims(scale);
    let d = (h / heads).max(1);
    let scores_n = b * heads * s * s;
    let size = format!("[{b}, {heads}, {s}, {s}]");
    let sf = scores_n as f64;
    // Every sequence padded in its last eighth.
    let key_mask: Vec<u8> = (0..b * s).map(|i| (i % s < s - s / 8) as u8).collect();
    let mut out = Vec::new();
    {
        let mut scores = rand_tensor(be, seed, 30, &[b, heads, s, s], 4.0)?;
        let mask = be.from_u8(&key_mask, &[b, s])?;
        let scale_f = 1.0 / (d as f32).sqrt();
        // In place; the same input every run is not needed for the timing.
        out.push(OpWorkload::memory(
            "attention_softmax",
            size.clone(),
            5.0 * sf,
            8.0 * sf + (b * s) as f64,
            move |be| be.attention_softmax(&mut scores, &mask, heads, scale_f),
        ));
    }
    {
        let mut probs = rand_tensor(be, seed, 31, &[b, heads, s, s], 4.0)?;
        let mask = be.from_u8(&key_mask, &[b, s])?;
        be.attention_softmax(&mut probs, &mask, heads, 0.125)?;
        let mut dprobs = rand_tensor(be, seed, 32, &[b, heads, s, s], 1.0)?;
        out.push(OpWorkload::memory(
            "softmax_backward",
            size,
            4.0 * sf,
            12.0 * sf,
            move |be| be.softmax_backward(&probs, &mut dprobs, 0.125),
        ));
    }
    {
        let x = rand_tensor(be, seed, 33, &[b * s, heads * d], 1.0)?;
        let mut y = be.zeros(&[b, heads, s, d], DType::F32)?;
        let e = (b * s * heads * d) as f64;
        out.push(OpWorkload::memory(
            "split_heads",
            format!("{}×{}", b * s, heads * d),
            0.0,
            8.0 * e,
            move |be| be.split_heads(&x, &mut y, b, s, heads),
        ));
    }
    Ok(out)
}

//! BERT with explicit forward and backward passes (no autograd): embeddings,
//! post-LN encoder layers, pooler, and the three heads of docs/algorithms.md §1. Every
//! operation goes through the backend, so the same code runs on CPU and GPU.
//!
//! The forward pass keeps what the backward needs (`ForwardActs`); the
//! backward accumulates into each parameter's `grad`.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::backend::{Backend, DType, Gemm, RowCopy, Tensor};
use crate::data::{Batch, TaskKind};
use crate::error::{Error, Result};
use crate::model::config::BertConfig;
use crate::model::io::HostTensor;
use crate::model::linear::{DenseLinear, LinearOp, StepCtx};
use crate::model::param::{Param, ParamVisitor, StateVisitor};

/// The six compressible matrices of an encoder layer, in slot order, by their
/// Hugging Face module names relative to `encoder.layer.{i}`.
pub const SLOTS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];
pub const Q: usize = 0;
pub const K: usize = 1;
pub const V: usize = 2;
pub const ATTN_OUT: usize = 3;
pub const INTER: usize = 4;
pub const OUT: usize = 5;

// Dropout sites (part of the Philox stream id).
const SITE_EMB: u32 = 0;
const SITE_PROBS: u32 = 1;
const SITE_ATTN_OUT: u32 = 2;
const SITE_FFN_OUT: u32 = 3;
const SITE_CLASSIFIER: u32 = 4;

/// The Hugging Face name prefix of a matrix: `bert.encoder.layer.{i}.{slot}`.
pub fn linear_prefix(layer: usize, slot: usize) -> String {
    format!("bert.encoder.layer.{layer}.{}", SLOTS[slot])
}

pub struct LayerNormParams {
    pub gamma: Param,
    pub beta: Param,
}

pub struct Embeddings {
    pub word: Param,
    pub position: Param,
    pub token_type: Param,
    pub ln: LayerNormParams,
}

pub struct EncoderLayer {
    /// The six matrices in [`SLOTS`] order.
    pub linears: Vec<Box<dyn LinearOp>>,
    pub ln_attn: LayerNormParams,
    pub ln_out: LayerNormParams,
}

/// Which head sits on the encoder.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// `[CLS]` → pooler (dense + tanh) → dropout → classifier (C outputs; 1 for regression).
    Sequence {
        pooler: DenseLinear,
        classifier: DenseLinear,
    },
    /// Every token → `qa_outputs` (start, end).
    Span { qa_outputs: DenseLinear },
}

struct LayerActs {
    qh: Tensor,
    kh: Tensor,
    vh: Tensor,
    probs: Tensor,
    /// After attention dropout (None when dropout is off: same as `probs`).
    probs_d: Option<Tensor>,
    ctx: Tensor,
    ln1_in: Tensor,
    /// Output of the first LayerNorm (input of the intermediate matrix).
    h1: Tensor,
    ln1_mean: Tensor,
    ln1_rstd: Tensor,
    inter: Tensor,
    gelu: Tensor,
    ln2_in: Tensor,
    ln2_mean: Tensor,
    ln2_rstd: Tensor,
}

struct ForwardActs {
    ctx: StepCtx,
    batch: usize,
    seq: usize,
    ids: Tensor,
    positions: Tensor,
    types: Tensor,
    key_mask: Tensor,
    emb_sum: Tensor,
    emb_mean: Tensor,
    emb_rstd: Tensor,
    /// `hidden[0]`: embedding output; `hidden[i + 1]`: output of layer i.
    hidden: Vec<Tensor>,
    layers: Vec<LayerActs>,
    /// Sequence head: `[CLS]` rows, pooler pre-activation, pooled (tanh), pooled after dropout.
    cls: Option<(Tensor, Tensor, Tensor)>,
}

pub struct Bert {
    pub config: BertConfig,
    pub task: TaskKind,
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
    pub head: Head,
    acts: Option<ForwardActs>,
}

/// Builds the linear layer of a matrix from the tensors of a model file.
/// The default makes a [`DenseLinear`] from `<prefix>.weight` / `.bias`; the
/// compressed-model loader supplies one that reads factor tensors.
pub trait LinearFactory {
    fn build(
        &self,
        be: &dyn Backend,
        prefix: &str,
        out: usize,
        inp: usize,
        tensors: &mut BTreeMap<String, HostTensor>,
    ) -> Result<Box<dyn LinearOp>>;
}

/// Dense layers from `<prefix>.weight` and `<prefix>.bias`.
pub struct DenseFactory;

impl LinearFactory for DenseFactory {
    fn build(
        &self,
        be: &dyn Backend,
        prefix: &str,
        out: usize,
        inp: usize,
        tensors: &mut BTreeMap<String, HostTensor>,
    ) -> Result<Box<dyn LinearOp>> {
        let w = take(tensors, &format!("{prefix}.weight"), &[out, inp])?;
        let b = take(tensors, &format!("{prefix}.bias"), &[out])?;
        Ok(Box::new(DenseLinear::from_host(
            be, prefix, &w, &b, out, inp,
        )?))
    }
}

/// Removes a float tensor from the map, checking its shape; the error names it.
pub fn take(
    tensors: &mut BTreeMap<String, HostTensor>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| Error::msg(format!("tensor '{name}' is missing")))?;
    if t.shape != shape {
        return Err(Error::msg(format!(
            "tensor '{name}' has shape {:?} but the config implies {shape:?}",
            t.shape
        )));
    }
    match t.data {
        crate::model::io::HostData::F32(v) => Ok(v),
        _ => Err(Error::msg(format!("tensor '{name}' is not floating point"))),
    }
}

/// Seeded normal(0, std) initial values (the transformers init for new heads).
pub fn normal_init(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(0.0f32, std).expect("std is finite and positive");
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

impl Bert {
    /// Builds the model from tensors keyed by their Hugging Face names
    /// (`bert.` prefix included; see [`crate::model::weights`] for loading).
    /// Missing head tensors are created fresh (seeded) and listed in `created`.
    pub fn from_tensors(
        be: &dyn Backend,
        config: BertConfig,
        task: TaskKind,
        tensors: &mut BTreeMap<String, HostTensor>,
        factory: &dyn LinearFactory,
        seed: u64,
        created: &mut Vec<String>,
    ) -> Result<Bert> {
        config.validate()?;
        let h = config.hidden_size;
        let ln =
            |tensors: &mut BTreeMap<String, HostTensor>, prefix: &str| -> Result<LayerNormParams> {
                let g = take(tensors, &format!("{prefix}.weight"), &[h])?;
                let b = take(tensors, &format!("{prefix}.bias"), &[h])?;
                Ok(LayerNormParams {
                    gamma: Param::from_host(be, format!("{prefix}.weight"), &g, &[h], false)?,
                    beta: Param::from_host(be, format!("{prefix}.bias"), &b, &[h], false)?,
                })
            };
        let emb = |tensors: &mut BTreeMap<String, HostTensor>,
                   name: &str,
                   rows: usize|
         -> Result<Param> {
            let full = format!("bert.embeddings.{name}.weight");
            let v = take(tensors, &full, &[rows, h])?;
            Param::from_host(be, full, &v, &[rows, h], true)
        };
        let embeddings = Embeddings {
            word: emb(tensors, "word_embeddings", config.vocab_size)?,
            position: emb(
                tensors,
                "position_embeddings",
                config.max_position_embeddings,
            )?,
            token_type: emb(tensors, "token_type_embeddings", config.type_vocab_size)?,
            ln: ln(tensors, "bert.embeddings.LayerNorm")?,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let mut linears = Vec::with_capacity(6);
            for slot in 0..6 {
                let (out, inp) = slot_shape(&config, slot);
                linears.push(factory.build(be, &linear_prefix(i, slot), out, inp, tensors)?);
            }
            layers.push(EncoderLayer {
                linears,
                ln_attn: ln(
                    tensors,
                    &format!("bert.encoder.layer.{i}.attention.output.LayerNorm"),
                )?,
                ln_out: ln(tensors, &format!("bert.encoder.layer.{i}.output.LayerNorm"))?,
            });
        }
        let std = config.initializer_range;
        let mut dense_or_new = |tensors: &mut BTreeMap<String, HostTensor>,
                                prefix: &str,
                                out: usize,
                                inp: usize,
                                salt: u64|
         -> Result<DenseLinear> {
            let wn = format!("{prefix}.weight");
            let bn = format!("{prefix}.bias");
            let have = tensors
                .get(&wn)
                .map(|t| t.shape == [out, inp])
                .unwrap_or(false)
                && tensors.get(&bn).map(|t| t.shape == [out]).unwrap_or(false);
            if have {
                let w = take(tensors, &wn, &[out, inp])?;
                let b = take(tensors, &bn, &[out])?;
                DenseLinear::from_host(be, prefix, &w, &b, out, inp)
            } else {
                if let Some(t) = tensors.get(&wn) {
                    created.push(format!(
                        "{prefix} (checkpoint has shape {:?}, task needs [{out}, {inp}])",
                        t.shape
                    ));
                } else {
                    created.push(prefix.to_string());
                }
                tensors.remove(&wn);
                tensors.remove(&bn);
                let w = normal_init(seed ^ salt, out * inp, std);
                DenseLinear::from_host(be, prefix, &w, &vec![0.0; out], out, inp)
            }
        };
        let head = match &task {
            TaskKind::Classification { num_labels } => Head::Sequence {
                pooler: dense_or_new(tensors, "bert.pooler.dense", h, h, 0x9001)?,
                classifier: dense_or_new(tensors, "classifier", *num_labels, h, 0x9002)?,
            },
            TaskKind::Regression => Head::Sequence {
                pooler: dense_or_new(tensors, "bert.pooler.dense", h, h, 0x9001)?,
                classifier: dense_or_new(tensors, "classifier", 1, h, 0x9002)?,
            },
            TaskKind::QuestionAnswering => {
                // BertForQuestionAnswering has no pooler.
                tensors.remove("bert.pooler.dense.weight");
                tensors.remove("bert.pooler.dense.bias");
                Head::Span {
                    qa_outputs: dense_or_new(tensors, "qa_outputs", 2, h, 0x9003)?,
                }
            }
        };
        Ok(Bert {
            config,
            task,
            embeddings,
            layers,
            head,
            acts: None,
        })
    }

    /// A randomly initialised model (benchmarks; BERT-base-sized work).
    pub fn random(be: &dyn Backend, config: BertConfig, task: TaskKind, seed: u64) -> Result<Bert> {
        let mut tensors = random_tensors(&config, seed);
        let mut created = Vec::new();
        Bert::from_tensors(
            be,
            config,
            task,
            &mut tensors,
            &DenseFactory,
            seed,
            &mut created,
        )
    }

    pub fn num_labels(&self) -> usize {
        match &self.task {
            TaskKind::Classification { num_labels } => *num_labels,
            TaskKind::Regression => 1,
            TaskKind::QuestionAnswering => 2,
        }
    }

    /// Visits every parameter (embeddings, layers, head).
    pub fn visit_params(&mut self, f: &mut ParamVisitor<'_>) -> Result<()> {
        let e = &mut self.embeddings;
        f(&mut e.word)?;
        f(&mut e.position)?;
        f(&mut e.token_type)?;
        f(&mut e.ln.gamma)?;
        f(&mut e.ln.beta)?;
        for layer in &mut self.layers {
            for slot in [Q, K, V, ATTN_OUT] {
                layer.linears[slot].visit_params(f)?;
            }
            f(&mut layer.ln_attn.gamma)?;
            f(&mut layer.ln_attn.beta)?;
            for slot in [INTER, OUT] {
                layer.linears[slot].visit_params(f)?;
            }
            f(&mut layer.ln_out.gamma)?;
            f(&mut layer.ln_out.beta)?;
        }
        match &mut self.head {
            Head::Sequence { pooler, classifier } => {
                pooler.visit_params(f)?;
                classifier.visit_params(f)
            }
            Head::Span { qa_outputs } => qa_outputs.visit_params(f),
        }
    }

    /// Visits the compressed layers' non-parameter state (masks, scores' averages, …).
    pub fn visit_state(&mut self, f: &mut StateVisitor<'_>) -> Result<()> {
        for layer in &mut self.layers {
            for l in &mut layer.linears {
                l.visit_state(f)?;
            }
        }
        Ok(())
    }

    /// Zeroes every trainable gradient (one launch on the GPU).
    pub fn zero_grads(&mut self, be: &dyn Backend) -> Result<()> {
        be.zero_all(&mut |f| {
            self.visit_params(&mut |p| if p.frozen { Ok(()) } else { f(&mut p.grad) })
        })
    }

    /// Parameters in total.
    pub fn num_params(&mut self) -> usize {
        let mut n = 0;
        let _ = self.visit_params(&mut |p| {
            n += p.numel();
            Ok(())
        });
        n
    }

    /// Hidden states of the last forward: embedding output, then each layer's output.
    pub fn hidden_states(&self) -> Option<&[Tensor]> {
        self.acts.as_ref().map(|a| &a.hidden[..])
    }

    /// Drops the saved activations (frees memory after evaluation).
    pub fn clear_activations(&mut self) {
        self.acts = None;
    }

    /// Forward pass; returns the logits on the backend: `[B, C]` for
    /// sequence heads, `[B·S, 2]` (start, end interleaved) for QA.
    pub fn forward(&mut self, be: &dyn Backend, ctx: &StepCtx, batch: &Batch) -> Result<Tensor> {
        self.acts = None;
        let cfg = &self.config;
        let (b, s, h) = (batch.size, batch.seq_len, cfg.hidden_size);
        let n = b * s;
        check_batch(cfg, batch)?;
        let nh = cfg.num_attention_heads;
        let d = cfg.head_dim();
        let eps = cfg.layer_norm_eps;
        let p_hidden = if ctx.training {
            cfg.hidden_dropout_prob
        } else {
            0.0
        };
        let p_attn = if ctx.training {
            cfg.attention_probs_dropout_prob
        } else {
            0.0
        };
        let prec = ctx.precision;

        let ids = be.from_i32(&batch.input_ids, &[n])?;
        let types = be.from_i32(&batch.token_type_ids, &[n])?;
        let pos_host: Vec<i32> = (0..n).map(|i| (i % s) as i32).collect();
        let positions = be.from_i32(&pos_host, &[n])?;
        let key_mask = be.from_u8(&batch.attention_mask, &[b, s])?;

        // Embeddings: word + position + token type, LayerNorm, dropout.
        let e = &self.embeddings;
        let mut emb_sum = be.empty(&[n, h], DType::F32)?;
        be.gather_rows(&e.word.value, &ids, &mut emb_sum, false)?;
        be.gather_rows(&e.position.value, &positions, &mut emb_sum, true)?;
        be.gather_rows(&e.token_type.value, &types, &mut emb_sum, true)?;
        let mut emb_ln = be.empty(&[n, h], DType::F32)?;
        let mut emb_mean = be.empty(&[n], DType::F32)?;
        let mut emb_rstd = be.empty(&[n], DType::F32)?;
        be.layer_norm(
            &emb_sum,
            &e.ln.gamma.value,
            &e.ln.beta.value,
            eps,
            &mut emb_ln,
            &mut emb_mean,
            &mut emb_rstd,
        )?;
        let h0 = dropout_owned(be, emb_ln, p_hidden, ctx.seed, ctx.stream(0, SITE_EMB))?;

        let mut hidden = vec![h0];
        let mut layer_acts = Vec::with_capacity(self.layers.len());
        let scale = 1.0 / (d as f32).sqrt();
        for (li, layer) in self.layers.iter_mut().enumerate() {
            let x = hidden.last().expect("at least the embeddings");
            // Self-attention.
            let mut heads = Vec::with_capacity(3);
            for slot in [Q, K, V] {
                let mut y = be.empty(&[n, h], DType::F32)?;
                layer.linears[slot].forward(be, ctx, x, &mut y)?;
                let mut yh = be.empty(&[b, nh, s, d], DType::F32)?;
                be.split_heads(&y, &mut yh, b, s, nh)?;
                heads.push(yh);
            }
            let vh = heads.pop().expect("v");
            let kh = heads.pop().expect("k");
            let qh = heads.pop().expect("q");
            let mut probs = be.empty(&[b, nh, s, s], DType::F32)?;
            be.gemm(
                &Gemm::nt(s, s, d).batched(b * nh).precision(prec),
                &qh,
                &kh,
                &mut probs,
            )?;
            be.attention_softmax(&mut probs, &key_mask, nh, scale)?;
            let probs_d = if p_attn > 0.0 {
                let mut pd = be.empty(&[b, nh, s, s], DType::F32)?;
                be.dropout(
                    &probs,
                    &mut pd,
                    p_attn,
                    ctx.seed,
                    ctx.stream(li, SITE_PROBS),
                )?;
                Some(pd)
            } else {
                None
            };
            let mut ctx_h = be.empty(&[b, nh, s, d], DType::F32)?;
            be.gemm(
                &Gemm::nn(s, d, s).batched(b * nh).precision(prec),
                probs_d.as_ref().unwrap_or(&probs),
                &vh,
                &mut ctx_h,
            )?;
            let mut ctx_m = be.empty(&[n, h], DType::F32)?;
            be.merge_heads(&ctx_h, &mut ctx_m, b, s, nh)?;
            drop(ctx_h);
            let mut attn_out = be.empty(&[n, h], DType::F32)?;
            layer.linears[ATTN_OUT].forward(be, ctx, &ctx_m, &mut attn_out)?;
            // Residual + LayerNorm: ln1_in = dropout(attn_out) + x.
            let mut ln1_in = dropout_owned(
                be,
                attn_out,
                p_hidden,
                ctx.seed,
                ctx.stream(li, SITE_ATTN_OUT),
            )?;
            be.axpby(1.0, x, 1.0, &mut ln1_in)?;
            let mut h1 = be.empty(&[n, h], DType::F32)?;
            let mut ln1_mean = be.empty(&[n], DType::F32)?;
            let mut ln1_rstd = be.empty(&[n], DType::F32)?;
            be.layer_norm(
                &ln1_in,
                &layer.ln_attn.gamma.value,
                &layer.ln_attn.beta.value,
                eps,
                &mut h1,
                &mut ln1_mean,
                &mut ln1_rstd,
            )?;
            // Feed-forward.
            let inter_dim = layer.linears[INTER].out_features();
            let mut inter = be.empty(&[n, inter_dim], DType::F32)?;
            layer.linears[INTER].forward(be, ctx, &h1, &mut inter)?;
            let mut gelu = be.empty(&[n, inter_dim], DType::F32)?;
            be.gelu(&inter, &mut gelu)?;
            let mut ffn_out = be.empty(&[n, h], DType::F32)?;
            layer.linears[OUT].forward(be, ctx, &gelu, &mut ffn_out)?;
            let mut ln2_in = dropout_owned(
                be,
                ffn_out,
                p_hidden,
                ctx.seed,
                ctx.stream(li, SITE_FFN_OUT),
            )?;
            be.axpby(1.0, &h1, 1.0, &mut ln2_in)?;
            let mut h2 = be.empty(&[n, h], DType::F32)?;
            let mut ln2_mean = be.empty(&[n], DType::F32)?;
            let mut ln2_rstd = be.empty(&[n], DType::F32)?;
            be.layer_norm(
                &ln2_in,
                &layer.ln_out.gamma.value,
                &layer.ln_out.beta.value,
                eps,
                &mut h2,
                &mut ln2_mean,
                &mut ln2_rstd,
            )?;
            layer_acts.push(LayerActs {
                qh,
                kh,
                vh,
                probs,
                probs_d,
                ctx: ctx_m,
                ln1_in,
                h1,
                ln1_mean,
                ln1_rstd,
                inter,
                gelu,
                ln2_in,
                ln2_mean,
                ln2_rstd,
            });
            hidden.push(h2);
        }

        let last = hidden.last().expect("hidden");
        let nl = self.layers.len();
        let (logits, cls) = match &mut self.head {
            Head::Sequence { pooler, classifier } => {
                let mut cls = be.empty(&[b, h], DType::F32)?;
                be.copy_rows(
                    last,
                    &mut cls,
                    &RowCopy {
                        rows: b,
                        cols: h,
                        src_offset: 0,
                        src_stride: s * h,
                        dst_offset: 0,
                        dst_stride: h,
                        accumulate: false,
                    },
                )?;
                let mut pre = be.empty(&[b, h], DType::F32)?;
                pooler.forward(be, ctx, &cls, &mut pre)?;
                let mut pooled = be.empty(&[b, h], DType::F32)?;
                be.tanh(&pre, &mut pooled)?;
                let p_cls = if ctx.training {
                    self.config.classifier_dropout_prob()
                } else {
                    0.0
                };
                let mut pooled_d = be.empty(&[b, h], DType::F32)?;
                be.dropout(
                    &pooled,
                    &mut pooled_d,
                    p_cls,
                    ctx.seed,
                    ctx.stream(nl, SITE_CLASSIFIER),
                )?;
                let c = classifier.out_features();
                let mut logits = be.empty(&[b, c], DType::F32)?;
                classifier.forward(be, ctx, &pooled_d, &mut logits)?;
                // Keep cls (pooler input), pooled (tanh output) and pooled_d (classifier input).
                drop(pre);
                (logits, Some((cls, pooled, pooled_d)))
            }
            Head::Span { qa_outputs } => {
                let mut logits = be.empty(&[n, 2], DType::F32)?;
                qa_outputs.forward(be, ctx, last, &mut logits)?;
                (logits, None)
            }
        };
        self.acts = Some(ForwardActs {
            ctx: *ctx,
            batch: b,
            seq: s,
            ids,
            positions,
            types,
            key_mask,
            emb_sum,
            emb_mean,
            emb_rstd,
            hidden,
            layers: layer_acts,
            cls,
        });
        Ok(logits)
    }

    /// Backward pass from `dlogits` (same shape as the logits). `extra_hidden`
    /// optionally adds gradients on the hidden states (distillation): index 0
    /// is the embedding output, `i + 1` layer i's output. Accumulates into
    /// every trainable parameter's `grad`.
    pub fn backward(
        &mut self,
        be: &dyn Backend,
        dlogits: &Tensor,
        extra_hidden: Option<&[Option<Tensor>]>,
    ) -> Result<()> {
        let acts = self
            .acts
            .take()
            .ok_or_else(|| Error::msg("backward called without a forward pass"))?;
        let cfg = &self.config;
        let ctx = acts.ctx;
        let (b, s, h) = (acts.batch, acts.seq, cfg.hidden_size);
        let n = b * s;
        let nh = cfg.num_attention_heads;
        let d = cfg.head_dim();
        let p_hidden = if ctx.training {
            cfg.hidden_dropout_prob
        } else {
            0.0
        };
        let p_attn = if ctx.training {
            cfg.attention_probs_dropout_prob
        } else {
            0.0
        };
        let prec = ctx.precision;
        let nl = self.layers.len();
        if let Some(extra) = extra_hidden {
            if extra.len() != nl + 1 {
                return Err(Error::msg(format!(
                    "extra hidden gradients: {} given, model has {} hidden states",
                    extra.len(),
                    nl + 1
                )));
            }
        }
        let last = &acts.hidden[nl];

        // Head.
        let mut dh = be.zeros(&[n, h], DType::F32)?;
        match &mut self.head {
            Head::Sequence { pooler, classifier } => {
                let (cls, pooled, pooled_d) = acts
                    .cls
                    .as_ref()
                    .ok_or_else(|| Error::msg("missing pooler activations"))?;
                let mut d_pooled = be.empty(&[b, h], DType::F32)?;
                classifier.backward(be, &ctx, pooled_d, dlogits, Some(&mut d_pooled))?;
                let p_cls = if ctx.training {
                    cfg.classifier_dropout_prob()
                } else {
                    0.0
                };
                let mut d_pooled2 = be.empty(&[b, h], DType::F32)?;
                be.dropout(
                    &d_pooled,
                    &mut d_pooled2,
                    p_cls,
                    ctx.seed,
                    ctx.stream(nl, SITE_CLASSIFIER),
                )?;
                let mut d_pre = be.empty(&[b, h], DType::F32)?;
                be.tanh_backward(pooled, &d_pooled2, &mut d_pre)?;
                let mut d_cls = be.empty(&[b, h], DType::F32)?;
                pooler.backward(be, &ctx, cls, &d_pre, Some(&mut d_cls))?;
                be.copy_rows(
                    &d_cls,
                    &mut dh,
                    &RowCopy {
                        rows: b,
                        cols: h,
                        src_offset: 0,
                        src_stride: h,
                        dst_offset: 0,
                        dst_stride: s * h,
                        accumulate: false,
                    },
                )?;
            }
            Head::Span { qa_outputs } => {
                qa_outputs.backward(be, &ctx, last, dlogits, Some(&mut dh))?;
            }
        }

        // Encoder layers, last to first. `dh` is the gradient of the layer's output.
        let mut layer_acts = acts.layers;
        for li in (0..nl).rev() {
            if let Some(Some(g)) = extra_hidden.map(|e| &e[li + 1]) {
                be.axpby(1.0, g, 1.0, &mut dh)?;
            }
            let la = layer_acts.pop().expect("one per layer");
            let layer = &mut self.layers[li];
            let x = &acts.hidden[li];
            let h1 = &la.h1;
            // LayerNorm 2.
            let mut d_ln2_in = be.empty(&[n, h], DType::F32)?;
            be.layer_norm_backward(
                &dh,
                &la.ln2_in,
                &layer.ln_out.gamma.value,
                &la.ln2_mean,
                &la.ln2_rstd,
                &mut d_ln2_in,
                &mut layer.ln_out.gamma.grad,
                &mut layer.ln_out.beta.grad,
            )?;
            // The residual passes d_ln2_in to h1; the branch gets it through dropout.
            let d_ffn = dropout_copy(
                be,
                &d_ln2_in,
                p_hidden,
                ctx.seed,
                ctx.stream(li, SITE_FFN_OUT),
            )?;
            let inter_dim = la.inter.shape()[1];
            let mut d_gelu = be.empty(&[n, inter_dim], DType::F32)?;
            layer.linears[OUT].backward(be, &ctx, &la.gelu, &d_ffn, Some(&mut d_gelu))?;
            drop(d_ffn);
            let mut d_inter = be.empty(&[n, inter_dim], DType::F32)?;
            be.gelu_backward(&la.inter, &d_gelu, &mut d_inter)?;
            drop(d_gelu);
            let mut d_h1 = be.empty(&[n, h], DType::F32)?;
            layer.linears[INTER].backward(be, &ctx, h1, &d_inter, Some(&mut d_h1))?;
            drop(d_inter);
            be.axpby(1.0, &d_ln2_in, 1.0, &mut d_h1)?;
            drop(d_ln2_in);
            // LayerNorm 1.
            let mut d_ln1_in = be.empty(&[n, h], DType::F32)?;
            be.layer_norm_backward(
                &d_h1,
                &la.ln1_in,
                &layer.ln_attn.gamma.value,
                &la.ln1_mean,
                &la.ln1_rstd,
                &mut d_ln1_in,
                &mut layer.ln_attn.gamma.grad,
                &mut layer.ln_attn.beta.grad,
            )?;
            drop(d_h1);
            let d_attn_out = dropout_copy(
                be,
                &d_ln1_in,
                p_hidden,
                ctx.seed,
                ctx.stream(li, SITE_ATTN_OUT),
            )?;
            let mut d_ctx = be.empty(&[n, h], DType::F32)?;
            layer.linears[ATTN_OUT].backward(be, &ctx, &la.ctx, &d_attn_out, Some(&mut d_ctx))?;
            drop(d_attn_out);
            let mut d_ctx_h = be.empty(&[b, nh, s, d], DType::F32)?;
            be.split_heads(&d_ctx, &mut d_ctx_h, b, s, nh)?;
            drop(d_ctx);
            // ctx_h = probs_d · vh.
            let probs_d = la.probs_d.as_ref().unwrap_or(&la.probs);
            let mut d_vh = be.empty(&[b, nh, s, d], DType::F32)?;
            be.gemm(
                &Gemm::tn(s, d, s).batched(b * nh).precision(prec),
                probs_d,
                &d_ctx_h,
                &mut d_vh,
            )?;
            let mut d_probs = be.empty(&[b, nh, s, s], DType::F32)?;
            be.gemm(
                &Gemm::nt(s, s, d).batched(b * nh).precision(prec),
                &d_ctx_h,
                &la.vh,
                &mut d_probs,
            )?;
            drop(d_ctx_h);
            if p_attn > 0.0 {
                let mut t = be.empty(&[b, nh, s, s], DType::F32)?;
                be.dropout(
                    &d_probs,
                    &mut t,
                    p_attn,
                    ctx.seed,
                    ctx.stream(li, SITE_PROBS),
                )?;
                d_probs = t;
            }
            let scale = 1.0 / (d as f32).sqrt();
            be.softmax_backward(&la.probs, &mut d_probs, scale)?;
            // scores = qh · khᵀ.
            let mut d_qh = be.empty(&[b, nh, s, d], DType::F32)?;
            be.gemm(
                &Gemm::nn(s, d, s).batched(b * nh).precision(prec),
                &d_probs,
                &la.kh,
                &mut d_qh,
            )?;
            let mut d_kh = be.empty(&[b, nh, s, d], DType::F32)?;
            be.gemm(
                &Gemm::tn(s, d, s).batched(b * nh).precision(prec),
                &d_probs,
                &la.qh,
                &mut d_kh,
            )?;
            drop(d_probs);
            // dx = residual (d_ln1_in) + the three projections' input gradients.
            let mut dx = d_ln1_in;
            let mut d_proj = be.empty(&[n, h], DType::F32)?;
            let mut dx_part = be.empty(&[n, h], DType::F32)?;
            for (slot, dhd) in [(Q, &d_qh), (K, &d_kh), (V, &d_vh)] {
                be.merge_heads(dhd, &mut d_proj, b, s, nh)?;
                layer.linears[slot].backward(be, &ctx, x, &d_proj, Some(&mut dx_part))?;
                be.axpby(1.0, &dx_part, 1.0, &mut dx)?;
            }
            dh = dx;
        }

        // Embeddings.
        if let Some(Some(g)) = extra_hidden.map(|e| &e[0]) {
            be.axpby(1.0, g, 1.0, &mut dh)?;
        }
        let d_emb_ln = dropout_copy(be, &dh, p_hidden, ctx.seed, ctx.stream(0, SITE_EMB))?;
        let e = &mut self.embeddings;
        let mut d_emb = be.empty(&[n, h], DType::F32)?;
        be.layer_norm_backward(
            &d_emb_ln,
            &acts.emb_sum,
            &e.ln.gamma.value,
            &acts.emb_mean,
            &acts.emb_rstd,
            &mut d_emb,
            &mut e.ln.gamma.grad,
            &mut e.ln.beta.grad,
        )?;
        if !e.word.frozen {
            be.scatter_add_rows(&d_emb, &acts.ids, &mut e.word.grad)?;
            // transformers builds the word embedding with padding_idx: its row
            // never gets a gradient.
            if let Some(pad) = cfg
                .pad_token_id
                .filter(|&p| p >= 0 && (p as usize) < cfg.vocab_size)
            {
                let zero = be.zeros(&[1, h], DType::F32)?;
                be.copy_rows(
                    &zero,
                    &mut e.word.grad,
                    &RowCopy {
                        rows: 1,
                        cols: h,
                        src_offset: 0,
                        src_stride: h,
                        dst_offset: pad as usize * h,
                        dst_stride: h,
                        accumulate: false,
                    },
                )?;
            }
        }
        if !e.position.frozen {
            be.scatter_add_rows(&d_emb, &acts.positions, &mut e.position.grad)?;
        }
        if !e.token_type.frozen {
            be.scatter_add_rows(&d_emb, &acts.types, &mut e.token_type.grad)?;
        }
        let _ = &acts.key_mask;
        Ok(())
    }

    /// Every tensor of the model under its Hugging Face name (for saving):
    /// compressed layers contribute their own tensors (factors, CSR parts).
    pub fn export(&self, be: &dyn Backend) -> Result<BTreeMap<String, HostTensor>> {
        let mut out = BTreeMap::new();
        let host = |p: &Param| -> Result<HostTensor> {
            Ok(HostTensor::f32(p.value.shape(), be.to_f32(&p.value)?))
        };
        let e = &self.embeddings;
        for p in [&e.word, &e.position, &e.token_type, &e.ln.gamma, &e.ln.beta] {
            out.insert(p.name.clone(), host(p)?);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for (slot, l) in layer.linears.iter().enumerate() {
                for (suffix, t) in l.export(be)? {
                    out.insert(format!("{}.{suffix}", linear_prefix(i, slot)), t);
                }
            }
            for p in [
                &layer.ln_attn.gamma,
                &layer.ln_attn.beta,
                &layer.ln_out.gamma,
                &layer.ln_out.beta,
            ] {
                out.insert(p.name.clone(), host(p)?);
            }
        }
        let dense = |l: &DenseLinear, out: &mut BTreeMap<String, HostTensor>| -> Result<()> {
            out.insert(l.weight.name.clone(), host(&l.weight)?);
            out.insert(l.bias.name.clone(), host(&l.bias)?);
            Ok(())
        };
        match &self.head {
            Head::Sequence { pooler, classifier } => {
                dense(pooler, &mut out)?;
                dense(classifier, &mut out)?;
            }
            Head::Span { qa_outputs } => dense(qa_outputs, &mut out)?,
        }
        Ok(out)
    }
}

/// `(out, in)` of a slot's matrix.
pub fn slot_shape(cfg: &BertConfig, slot: usize) -> (usize, usize) {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    match slot {
        INTER => (i, h),
        OUT => (h, i),
        _ => (h, h),
    }
}

fn check_batch(cfg: &BertConfig, batch: &Batch) -> Result<()> {
    let n = batch.tokens();
    if batch.input_ids.len() != n
        || batch.token_type_ids.len() != n
        || batch.attention_mask.len() != n
    {
        return Err(Error::msg(format!(
            "batch of {}×{} has {} ids, {} type ids, {} mask values",
            batch.size,
            batch.seq_len,
            batch.input_ids.len(),
            batch.token_type_ids.len(),
            batch.attention_mask.len()
        )));
    }
    if batch.seq_len > cfg.max_position_embeddings {
        return Err(Error::msg(format!(
            "sequence length {} exceeds the model's max_position_embeddings {}",
            batch.seq_len, cfg.max_position_embeddings
        )));
    }
    if let Some(&bad) = batch
        .input_ids
        .iter()
        .find(|&&t| t < 0 || t as usize >= cfg.vocab_size)
    {
        return Err(Error::msg(format!(
            "token id {bad} is outside the vocabulary of {} (tokenizer / model mismatch?)",
            cfg.vocab_size
        )));
    }
    if let Some(&bad) = batch
        .token_type_ids
        .iter()
        .find(|&&t| t < 0 || t as usize >= cfg.type_vocab_size)
    {
        return Err(Error::msg(format!(
            "token type {bad} is outside type_vocab_size {}",
            cfg.type_vocab_size
        )));
    }
    Ok(())
}

/// `dropout(x)` consuming `x` (no copy when p = 0).
fn dropout_owned(be: &dyn Backend, x: Tensor, p: f32, seed: u64, stream: u64) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x);
    }
    let mut y = be.empty(x.shape(), DType::F32)?;
    be.dropout(&x, &mut y, p, seed, stream)?;
    Ok(y)
}

/// `dropout(x)` into a new tensor (a copy when p = 0).
fn dropout_copy(be: &dyn Backend, x: &Tensor, p: f32, seed: u64, stream: u64) -> Result<Tensor> {
    let mut y = be.empty(x.shape(), DType::F32)?;
    be.dropout(x, &mut y, p, seed, stream)?;
    Ok(y)
}

/// Random BERT weights under Hugging Face names (normal(0, initializer_range),
/// LayerNorm weights 1 and biases 0), as `BertPreTrainedModel` initialises.
pub fn random_tensors(cfg: &BertConfig, seed: u64) -> BTreeMap<String, HostTensor> {
    let mut m = BTreeMap::new();
    let std = cfg.initializer_range;
    let h = cfg.hidden_size;
    let mut salt = 0u64;
    let mut normal = |shape: &[usize]| {
        salt += 1;
        HostTensor::f32(
            shape,
            normal_init(
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt),
                shape.iter().product(),
                std,
            ),
        )
    };
    let ones = |n: usize| HostTensor::f32(&[n], vec![1.0; n]);
    let zeros = |n: usize| HostTensor::f32(&[n], vec![0.0; n]);
    m.insert(
        "bert.embeddings.word_embeddings.weight".into(),
        normal(&[cfg.vocab_size, h]),
    );
    m.insert(
        "bert.embeddings.position_embeddings.weight".into(),
        normal(&[cfg.max_position_embeddings, h]),
    );
    m.insert(
        "bert.embeddings.token_type_embeddings.weight".into(),
        normal(&[cfg.type_vocab_size, h]),
    );
    m.insert("bert.embeddings.LayerNorm.weight".into(), ones(h));
    m.insert("bert.embeddings.LayerNorm.bias".into(), zeros(h));
    for i in 0..cfg.num_hidden_layers {
        for slot in 0..6 {
            let (out, inp) = slot_shape(cfg, slot);
            let p = linear_prefix(i, slot);
            m.insert(format!("{p}.weight"), normal(&[out, inp]));
            m.insert(format!("{p}.bias"), zeros(out));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            m.insert(format!("bert.encoder.layer.{i}.{ln}.weight"), ones(h));
            m.insert(format!("bert.encoder.layer.{i}.{ln}.bias"), zeros(h));
        }
    }
    m.insert("bert.pooler.dense.weight".into(), normal(&[h, h]));
    m.insert("bert.pooler.dense.bias".into(), zeros(h));
    m
}

//! `Transformer2DModel` (continuous input) with its `BasicTransformerBlock`s: self-attention,
//! cross-attention and a GEGLU feed-forward, each pre-normed with LayerNorm and residual.
//! Every projection is a LoRA-aware [`Linear`] named by its diffusers module path.

use crate::diffusion::fused::attention::attention;
use crate::diffusion::fused::conv::Conv2d;
use crate::diffusion::fused::geglu::geglu;
use crate::diffusion::fused::norm::GroupNorm;
use crate::diffusion::nn::{Adapters, LayerNorm, Linear};
use crate::diffusion::recompute::checkpointed;
use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// diffusers `Attention` with the default SDPA processor (no bias on q/k/v, bias on to_out.0).
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(vb: VarBuilder, adapters: &Adapters, query_dim: usize, context_dim: usize, heads: usize, head_dim: usize) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Attention {
            to_q: Linear::new(vb.pp("to_q"), adapters, query_dim, inner, false)?,
            to_k: Linear::new(vb.pp("to_k"), adapters, context_dim, inner, false)?,
            to_v: Linear::new(vb.pp("to_v"), adapters, context_dim, inner, false)?,
            to_out: Linear::new(vb.pp("to_out").pp("0"), adapters, inner, query_dim, true)?,
            heads,
            head_dim,
        })
    }

    /// `x`: [B, N, query_dim]; `context`: [B, M, context_dim] (None: self-attention). Scores
    /// and softmax in f32 at least, as PyTorch's SDPA kernels accumulate half precision (this
    /// also covers `upcast_attention`), in query chunks (`fused::attention`).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        debug_assert_eq!(q.dim(2)?, self.heads * self.head_dim);
        self.to_out.forward(&attention(&q, &k, &v, self.heads)?)
    }
}

/// `FeedForward` with GEGLU: `net.0.proj` (dim → 2·4dim), value ⊙ gelu(gate), `net.2` (4dim → dim).
#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
    inner: usize,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, adapters: &Adapters, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(FeedForward {
            proj: Linear::new(vb.pp("net.0.proj"), adapters, dim, inner * 2, true)?,
            out: Linear::new(vb.pp("net.2"), adapters, inner, dim, true)?,
            inner,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        debug_assert_eq!(h.dim(D::Minus1)?, 2 * self.inner);
        self.out.forward(&geglu(&h)?)
    }
}

#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(vb: VarBuilder, adapters: &Adapters, dim: usize, heads: usize, head_dim: usize, context_dim: usize) -> Result<Self> {
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(vb.pp("attn1"), adapters, dim, dim, heads, head_dim)?,
            norm2: LayerNorm::load(vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(vb.pp("attn2"), adapters, dim, context_dim, heads, head_dim)?,
            norm3: LayerNorm::load(vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(vb.pp("ff"), adapters, dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(context))? + &x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + &x
    }
}

#[derive(Debug, Clone)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// `Transformer2DModel` on a feature map: GroupNorm(eps 1e-6) → proj_in (1×1 conv, or linear on
/// tokens with `use_linear_projection`) → blocks → proj_out → + residual.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
    inner: usize,
}

impl Transformer2DModel {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: VarBuilder,
        adapters: &Adapters,
        channels: usize,
        heads: usize,
        layers: usize,
        context_dim: usize,
        groups: usize,
        linear_projection: bool,
    ) -> Result<Self> {
        // diffusers: head width = channels / heads (floor), inner width = heads · head width.
        let head_dim = channels / heads;
        let inner = heads * head_dim;
        let (proj_in, proj_out) = if linear_projection {
            (
                Projection::Linear(Linear::new(vb.pp("proj_in"), adapters, channels, inner, true)?),
                Projection::Linear(Linear::new(vb.pp("proj_out"), adapters, inner, channels, true)?),
            )
        } else {
            (
                Projection::Conv(Conv2d::load_adapted(vb.pp("proj_in"), adapters, channels, inner, 1, 1, 0)?),
                Projection::Conv(Conv2d::load_adapted(vb.pp("proj_out"), adapters, inner, channels, 1, 1, 0)?),
            )
        };
        let blocks = (0..layers)
            .map(|i| BasicTransformerBlock::new(vb.pp("transformer_blocks").pp(i), adapters, inner, heads, head_dim, context_dim))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2DModel { norm: GroupNorm::load(vb.pp("norm"), groups, channels, 1e-6, false)?, proj_in, blocks, proj_out, inner })
    }

    /// `x`: [B, C, H, W]; `context`: [B, M, context_dim]. `ckpt`: gradient checkpointing, per
    /// transformer block as in diffusers (the attention maps are what dominates memory).
    pub fn forward(&self, x: &Tensor, context: &Tensor, ckpt: bool) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(1)?;
            t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
        };
        let from_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.dim(2)?;
            t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(c) => to_tokens(&c.forward(&normed)?)?,
            Projection::Linear(l) => l.forward(&to_tokens(&normed)?)?,
        };
        debug_assert_eq!(tokens.dim(2)?, self.inner);
        for block in &self.blocks {
            tokens = if ckpt {
                let block = block.clone();
                checkpointed(&tokens, context, move |x, context| block.forward(x, context))?
            } else {
                block.forward(&tokens, context)?
            };
        }
        match &self.proj_out {
            Projection::Conv(c) => c.forward_with(&from_tokens(&tokens)?, None, Some(x)),
            Projection::Linear(l) => from_tokens(&l.forward(&tokens)?)? + x,
        }
    }
}

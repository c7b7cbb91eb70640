"""The from-scratch encoder classifier: token embeddings, bidirectional GQA/RoPE blocks, pooling, a head.

Only the model lives here (config dataclass + small modules in the order the data flows); training is in
train_embedding_classifier.py, saving and loading in encoder_io.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EmbeddingClassifierConfig:
    vocab_size: int
    num_labels: int
    hidden_size: int = 384
    num_layers: int = 10
    num_heads: int = 6
    num_kv_heads: int = 2  # grouped query attention: each key/value head serves num_heads/num_kv_heads queries
    ffn_size: int = 1536
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    dropout: float = 0.1  # after attention and feed-forward, before the residual add
    max_drop_path: float = 0.1  # stochastic depth, rising linearly from 0 at the first block
    layer_scale_init: float = 1e-2
    pooler: str = "mean"  # "mean" (mask-aware) or "first"
    head: str = "mlp"  # "mlp" or "residual"
    classifier_hidden: int | None = None  # width of the head; None = hidden_size
    classifier_dropout: float = 0.1
    pad_token_id: int = 0
    # Loss settings live with the model so forward(labels=...) gives the loss that training minimises.
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0
    focal_alpha: float | None = None
    class_weights: list[float] | None = None

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("the head dimension must be even for RoPE")
        if self.pooler not in ("mean", "first"):
            raise ValueError(f"pooler must be 'mean' or 'first', got {self.pooler!r}")
        if self.head not in ("mlp", "residual"):
            raise ValueError(f"head must be 'mlp' or 'residual', got {self.head!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingClassifierConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Normalise in fp32: under fp16 autocast the mean of squares overflows for large activations.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight


def rope_cos_sin(seq_len: int, head_dim: int, theta: float, device, dtype=torch.float32):
    """cos and sin tables of shape (seq_len, head_dim) for rotary position embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotate pairs (i, i + d/2) of the last dimension of x (batch, heads, seq, head_dim) by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention with grouped key/value heads and RoPE; padding keys masked."""

    def __init__(self, cfg: EmbeddingClassifierConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_heads, cfg.num_kv_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.attention_dropout = cfg.attention_dropout

    def forward(self, x, key_mask, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Repeat key/value heads explicitly rather than enable_gqa=True: plain ops export to ONNX everywhere.
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.attention_dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: EmbeddingClassifierConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.hidden_size, cfg.ffn_size, bias=False)
        self.up = nn.Linear(cfg.hidden_size, cfg.ffn_size, bias=False)
        self.down = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DropPath(nn.Module):
    """Drops a whole residual branch per example with probability p (stochastic depth)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    def __init__(self, cfg: EmbeddingClassifierConfig, drop_path: float):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = SelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.drop_path = DropPath(drop_path)
        # Small learnable residual scales keep each block near identity at the start (stable deep training).
        self.attn_scale = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init))
        self.ffn_scale = nn.Parameter(torch.full((cfg.hidden_size,), cfg.layer_scale_init))

    def forward(self, x, key_mask, cos, sin):
        x = x + self.drop_path(self.attn_scale * self.dropout(self.attn(self.attn_norm(x), key_mask, cos, sin)))
        x = x + self.drop_path(self.ffn_scale * self.dropout(self.ffn(self.ffn_norm(x))))
        return x


class MLPHead(nn.Module):
    def __init__(self, cfg: EmbeddingClassifierConfig):
        super().__init__()
        width = cfg.classifier_hidden or cfg.hidden_size
        self.net = nn.Sequential(nn.Dropout(cfg.classifier_dropout), nn.Linear(cfg.hidden_size, width), nn.GELU(),
                                 nn.Dropout(cfg.classifier_dropout), nn.Linear(width, cfg.num_labels))

    def forward(self, pooled):
        return self.net(pooled)


class ResidualHead(nn.Module):
    """The seed's v2 head: a residual MLP on the normalised pooled vector, normalised again, then logits."""

    def __init__(self, cfg: EmbeddingClassifierConfig):
        super().__init__()
        width = cfg.classifier_hidden or cfg.hidden_size
        self.norm_in = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = nn.Sequential(nn.Linear(cfg.hidden_size, width), nn.GELU(), nn.Dropout(cfg.classifier_dropout),
                                 nn.Linear(width, cfg.hidden_size))
        self.norm_out = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.out = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, pooled):
        x = self.norm_in(pooled)
        x = x + self.mlp(x)
        return self.out(self.dropout(self.norm_out(x)))


def classification_loss(logits, labels, cfg: EmbeddingClassifierConfig):
    """Cross-entropy with optional class weights and label smoothing, or focal loss when focal_gamma > 0."""
    weight = None
    if cfg.class_weights is not None:
        weight = torch.tensor(cfg.class_weights, dtype=torch.float32, device=logits.device)
    logits = logits.float()
    if cfg.focal_gamma <= 0:
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=cfg.label_smoothing)
    ce = F.cross_entropy(logits, labels, weight=weight, label_smoothing=cfg.label_smoothing, reduction="none")
    p_true = F.softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)
    loss = (1.0 - p_true).pow(cfg.focal_gamma) * ce
    if cfg.focal_alpha is not None:
        loss = cfg.focal_alpha * loss
    return loss.mean()


class EmbeddingClassifier(nn.Module):
    def __init__(self, cfg: EmbeddingClassifierConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.embed_dropout = nn.Dropout(cfg.embedding_dropout)
        rates = [cfg.max_drop_path * i / max(cfg.num_layers - 1, 1) for i in range(cfg.num_layers)]
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.head = MLPHead(cfg) if cfg.head == "mlp" else ResidualHead(cfg)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part, for the start-up line and the architecture doc."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"embedding": count(self.embed) + count(self.embed_norm), "blocks": count(self.blocks),
                "final_norm": count(self.final_norm), "head": count(self.head), "total": self.num_parameters()}

    def forward(self, input_ids, attention_mask=None, labels=None, return_embeddings: bool = False):
        cfg = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        b, t = input_ids.shape
        x = self.embed(input_ids) * math.sqrt(cfg.hidden_size)
        x = self.embed_dropout(self.embed_norm(x))
        cos, sin = rope_cos_sin(t, cfg.hidden_size // cfg.num_heads, cfg.rope_theta, x.device, x.dtype)
        # (batch, 1, 1, keys): every query sees every real token and no padding; no causal mask.
        key_mask = attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask, cos, sin)
        x = self.final_norm(x)
        if cfg.pooler == "first":
            pooled = x[:, 0]
        else:
            m = attention_mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        logits = self.head(pooled)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = classification_loss(logits, labels, cfg)
        if return_embeddings:
            out["pooled_embeddings"] = pooled
            out["token_embeddings"] = x
        return out

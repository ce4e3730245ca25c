"""A small llama-architecture decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention).

RoPE rotates adjacent pairs (x[2i], x[2i+1]), which is llama.cpp's native ordering for the
`llama` architecture, so the exported Q and K weights need no permutation. (Hugging Face's
rotate-half convention pairs x[i] with x[i + d/2]; that is why its converter permutes rows.)
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    context_length: int = 512
    n_embd: int = 256
    n_layer: int = 6
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 704
    rms_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def rope_tables(config: ModelConfig, length: int):
    half = config.head_dim // 2
    inv_freq = config.rope_base ** (-torch.arange(0, half, dtype=torch.float64) * 2 / config.head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x, cos, sin):
    # x: [batch, heads, seq, head_dim]; rotate each adjacent pair by its position's angle.
    even = x[..., 0::2]
    odd = x[..., 1::2]
    rotated_even = even * cos - odd * sin
    rotated_odd = even * sin + odd * cos
    return torch.stack((rotated_even, rotated_odd), dim=-1).flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.config = c
        self.attn_norm = RMSNorm(c.n_embd, c.rms_eps)
        self.wq = nn.Linear(c.n_embd, c.n_head * c.head_dim, bias=False)
        self.wk = nn.Linear(c.n_embd, c.n_head_kv * c.head_dim, bias=False)
        self.wv = nn.Linear(c.n_embd, c.n_head_kv * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_head * c.head_dim, c.n_embd, bias=False)
        self.ffn_norm = RMSNorm(c.n_embd, c.rms_eps)
        self.w_gate = nn.Linear(c.n_embd, c.n_ff, bias=False)
        self.w_up = nn.Linear(c.n_embd, c.n_ff, bias=False)
        self.w_down = nn.Linear(c.n_ff, c.n_embd, bias=False)

    def forward(self, x, cos, sin, mask):
        c = self.config
        batch, seq, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(batch, seq, c.n_head, c.head_dim).transpose(1, 2)
        k = self.wk(h).view(batch, seq, c.n_head_kv, c.head_dim).transpose(1, 2)
        v = self.wv(h).view(batch, seq, c.n_head_kv, c.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        # Consecutive query heads share a KV head, as in llama.cpp's grouped-query attention.
        group = c.n_head // c.n_head_kv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-2, -1)) * (c.head_dim ** -0.5) + mask
        attn = F.softmax(scores, dim=-1) @ v
        x = x + self.wo(attn.transpose(1, 2).reshape(batch, seq, c.n_head * c.head_dim))
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.rms_eps)
        # The output head is tied to the embedding table (GGUF: no output.weight tensor).
        cos, sin = rope_tables(config, config.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for layer in self.layers:
            # Scale residual projections down with depth so the initial residual stream stays small.
            nn.init.normal_(layer.wo.weight, std=0.02 / (2 * config.n_layer) ** 0.5)
            nn.init.normal_(layer.w_down.weight, std=0.02 / (2 * config.n_layer) ** 0.5)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens):
        seq = tokens.shape[1]
        x = self.tok_embeddings(tokens)
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        mask = torch.full((seq, seq), float("-inf")).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x) @ self.tok_embeddings.weight.t()

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

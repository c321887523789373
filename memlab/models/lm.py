"""Small next-token models that a population can train with stacked weights.

Both read token ids ``x`` (batch, T) and return logits (batch, T, n_vocab), position t
predicting token t + 1. They are built from plain ``nn.Linear`` / ``nn.Embedding`` /
``nn.LayerNorm`` only, and attention is written by hand: ``torch.func.functional_call`` under
``vmap`` (the engine's ``stacked_forward``) then trains K copies at once, and
``ModelSpec.initial_state`` (``memlab.engine.modelspec``) re-initializes every weight from
model k's own seed (a parameter outside those modules would not be re-initialized).

- ``transformer``: a decoder-only transformer (GPT-style, pre-LayerNorm, learned positions).
- ``mlp``: the cheaper option: an MLP over the embeddings of the previous ``window`` tokens
  (Bengio et al. 2003): no attention, a fixed short context.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memlab.errors import ConfigError


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        # No bias: a key bias cannot change attention (it adds the same q·b to every score),
        # so its gradient is pure rounding noise, which Adam would amplify into steps.
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, T, d) -> (b, T, d); position t attends to positions <= t."""
        b, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # (b, heads, T, head_dim)
        q, k, v = (z.view(b, T, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)  # (b, h, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, T, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Decoder-only transformer: token + position embeddings, ``n_layers`` pre-LN blocks,
    a final LayerNorm and a linear head. Parameters: about 12·n_layers·d² + 2·n_vocab·d."""

    def __init__(self, n_vocab: int, context: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4):
        super().__init__()
        self.context = context
        self.token_embedding = nn.Embedding(n_vocab, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, n_heads) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, T) int64 token ids, T <= context -> (b, T, n_vocab) logits."""
        positions = torch.arange(x.shape[-1], device=x.device)
        h = self.token_embedding(x) + self.position_embedding(positions)
        return self.head(self.norm(self.blocks(h)))


class ContextMLP(nn.Module):
    """Predict token t + 1 from tokens t - window + 1 .. t (BOS-padded on the left):
    embeddings concatenated, one hidden ReLU layer, a linear head."""

    def __init__(self, n_vocab: int, context: int, window: int = 8, d_embed: int = 24,
                 hidden: int = 256):
        super().__init__()
        self.window, self.bos = window, n_vocab - 2  # the Documents convention: BOS = V - 2
        self.embedding = nn.Embedding(n_vocab, d_embed)
        self.hidden = nn.Linear(window * d_embed, hidden)
        self.head = nn.Linear(hidden, n_vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, T) int64 -> (b, T, n_vocab)."""
        padded = F.pad(x, (self.window - 1, 0), value=self.bos)  # (b, T + window - 1)
        windows = padded.unfold(-1, self.window, 1)  # (b, T, window), oldest token first
        h = self.embedding(windows).flatten(-2)  # (b, T, window * d_embed)
        return self.head(torch.relu(self.hidden(h)))


LM_MODELS = {"transformer": TinyTransformer, "mlp": ContextMLP}


def build_lm(name: str, n_vocab: int, context: int, **kwargs) -> nn.Module:
    """Instantiate a next-token model by name, with PyTorch's default initialization."""
    if name not in LM_MODELS:
        raise ConfigError(f"unknown language model {name!r}: choose one of "
                          f"{', '.join(LM_MODELS)}")
    try:
        return LM_MODELS[name](n_vocab, context, **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad options for language model {name!r}: {error}") from None

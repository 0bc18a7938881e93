"""Dropout: inverted dropout with its mask drawn from a prunus.Generator; the identity in eval mode."""

from __future__ import annotations

from prunus.errors import ArgumentError
from prunus.nn import functional as F
from prunus.nn.module import Module


class Dropout(Module):
    """Zero each element with probability p in training, scaling the rest by 1/(1-p).

    `generator` (a prunus.Generator) makes the masks reproducible; None uses the default
    generator (prunus.manual_seed)."""

    def __init__(self, p: float = 0.5, inplace: bool = False, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ArgumentError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.inplace, self.generator = p, inplace, generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

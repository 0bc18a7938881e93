"""Linear, Identity, Flatten and Embedding layers.

Linear keeps its weight row-major, (out, in) C-contiguous, although `x @ W.T` is then OpenBLAS's
NT product. Measured (batch 128, 784 -> 300, float32, one thread, min of 400 interleaved steps of
forward + backward + SGD update): row-major 1217 us, column-major 1545 us (1744 vs 2099 us when
x needs a gradient too). Column-major wins the forward product (578 vs 686 us) but loses more in
backward: g @ W becomes the NT product, and g.T @ x comes out row-major, so the update mixes layouts.
"""

from __future__ import annotations

import math

from prunus import dtypes
from prunus.creation import empty
from prunus.nn import functional as F
from prunus.nn import init
from prunus.nn.module import Module, Parameter, check_input
from prunus.ops import flatten
from prunus.tensor import Tensor


class Identity(Module):
    """Returns its input; takes and ignores any arguments (a placeholder for a removed layer)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """y = x @ weight.T + bias, for x of shape (*, in_features).

    weight (out_features, in_features) and bias (out_features,) start as PyTorch's:
    kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), and bias U(-1/sqrt(in), 1/sqrt(in)),
    drawn from `generator` (the default generator when None)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 generator=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
        self.weight = Parameter(empty(self.out_features, self.in_features, dtype=dt, device=device))
        if bias:
            self.bias = Parameter(empty(self.out_features, dtype=dt, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, x):
        if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[-1] != self.in_features:
            check_input(self, x, range(1, 65), f"(*, {self.in_features})", dim=-1, size=self.in_features)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Flatten dimensions start_dim..end_dim (by default all but the batch dimension)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Embedding(Module):
    """A lookup table: integer indices of any shape -> rows of weight (num_embeddings, dim),
    initialised N(0, 1) (the padding row zero) as in PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, device=None, dtype=None,
                 generator=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                from prunus.errors import ArgumentError

                raise ArgumentError(f"Embedding: padding_idx {padding_idx} is out of range for {num_embeddings} embeddings")
            padding_idx = padding_idx % num_embeddings
        self.padding_idx = padding_idx
        dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
        self.weight = Parameter(empty(self.num_embeddings, self.embedding_dim, dtype=dt, device=device))
        init.normal_(self.weight, generator=generator)
        if padding_idx is not None:
            from prunus.autograd import no_grad

            with no_grad():
                self.weight[padding_idx] = 0.0

    def forward(self, x):
        return F.embedding(x, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")

"""Random number generation: `Generator` (NumPy's PCG64 seeded through a SeedSequence) and the
default generator that `manual_seed` resets.

Numbers are drawn on the host and moved to the tensor's device, so a seed gives the same values on
the CPU and on a GPU.
"""

from __future__ import annotations

import numpy as np

from prunus.errors import ArgumentError

_DEFAULT_SEED = 67280421310721  # PyTorch's default, so initial_seed() reads familiar


class Generator:
    """A seeded random stream. `Generator().manual_seed(0)` is reproducible across runs."""

    def __init__(self, device="cpu", seed: int = _DEFAULT_SEED):
        self.device = device
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> Generator:
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ArgumentError(f"manual_seed: the seed must be a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self.np = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._seed)))
        return self

    def initial_seed(self) -> int:
        return self._seed

    def seed(self) -> int:
        """Reseed from the operating system's entropy; returns the new seed."""
        s = int(np.random.SeedSequence().entropy % (1 << 63))
        self.manual_seed(s)
        return s

    def get_state(self) -> np.ndarray:
        """The full stream state as 40 bytes (uint8), to store in a checkpoint."""
        st = self.np.bit_generator.state
        words = [st["state"]["state"], st["state"]["inc"]]
        raw = b"".join(w.to_bytes(16, "little") for w in words)
        raw += int(st["has_uint32"]).to_bytes(4, "little") + int(st["uinteger"]).to_bytes(4, "little")
        return np.frombuffer(raw, dtype=np.uint8).copy()

    def set_state(self, state) -> Generator:
        raw = bytes(np.asarray(state, dtype=np.uint8))
        if len(raw) != 40:
            raise ArgumentError(f"Generator.set_state: expected 40 bytes of state, got {len(raw)}")
        st = self.np.bit_generator.state
        st["state"]["state"] = int.from_bytes(raw[0:16], "little")
        st["state"]["inc"] = int.from_bytes(raw[16:32], "little")
        st["has_uint32"] = int.from_bytes(raw[32:36], "little")
        st["uinteger"] = int.from_bytes(raw[36:40], "little")
        self.np.bit_generator.state = st
        return self


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Reseed the default generator (every random factory and initializer without generator=)."""
    return default_generator.manual_seed(seed)


def initial_seed() -> int:
    return default_generator.initial_seed()


def numpy_generator(generator=None) -> np.random.Generator:
    return (generator or default_generator).np

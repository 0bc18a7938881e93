"""Transforms: ToTensor, Normalize, RandomCrop, RandomHorizontalFlip, Compose; single images and
whole NxCxHxW batches, seeded randomness, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import errors as E
from prunus.data import transforms as T


def _img(c=3, h=6, w=5, seed=0):
    return np.random.default_rng(seed).random((c, h, w), dtype=np.float32)


def _windows(padded, h, w):
    """Every h x w window of a CxHpxWp array."""
    return [padded[:, i:i + h, j:j + w] for i in range(padded.shape[1] - h + 1)
            for j in range(padded.shape[2] - w + 1)]


def test_to_tensor_gray_and_color():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    t = T.ToTensor()(a)
    assert isinstance(t, prunus.Tensor) and t.shape == (1, 3, 4) and t.dtype is prunus.float32
    np.testing.assert_array_equal(t.numpy()[0], a.astype(np.float32) / 255)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    t = T.ToTensor()(rgb)
    assert t.shape == (3, 4, 5)
    np.testing.assert_array_equal(t.numpy(), rgb.transpose(2, 0, 1).astype(np.float32) / 255)
    assert 0.0 <= t.numpy().min() and t.numpy().max() <= 1.0
    assert T.ToTensor()(np.full((2, 2), 255, np.uint8)).numpy().max() == 1.0
    with pytest.raises(E.ShapeError, match=r"HxW or HxWxC image, got shape \(1, 2, 3, 4\)"):
        T.ToTensor()(np.zeros((1, 2, 3, 4), np.uint8))
    with pytest.raises(E.DTypeError, match="uint8 or floating image, got int32"):
        T.ToTensor()(np.zeros((2, 2), np.int32))


def test_normalize_single_and_batch():
    x = _img()
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    norm = T.Normalize(mean, std)
    ref = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    out = norm(prunus.from_numpy(x))
    assert isinstance(out, prunus.Tensor) and out.dtype is prunus.float32
    np.testing.assert_array_equal(out.numpy(), ref)
    batch = np.stack([x, 2 * x])
    np.testing.assert_array_equal(norm(batch)[1], norm(2 * x))  # NumPy in, NumPy out
    np.testing.assert_allclose(T.Normalize(0.5, 0.5)(x), (x - 0.5) / 0.5)  # one value for all channels


def test_normalize_errors():
    with pytest.raises(E.ShapeError, match="3 means for 2 channels"):
        T.Normalize([0, 0, 0], [1, 1, 1])(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(E.ArgumentError, match="std must be nonzero"):
        T.Normalize([0.0], [0.0])
    with pytest.raises(E.DTypeError, match="apply ToTensor first"):
        T.Normalize([0.0], [1.0])(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(E.ShapeError, match=r"CxHxW image or an NxCxHxW batch, got shape \(4, 4\)"):
        T.Normalize([0.0], [1.0])(np.zeros((4, 4), np.float32))


def test_random_crop_is_a_window_of_the_padded_image():
    x = _img(2, 5, 5)
    crop = T.RandomCrop(4, padding=2, generator=prunus.Generator().manual_seed(0))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    wins = _windows(padded, 4, 4)
    seen = set()
    for _ in range(40):
        out = crop(x)
        assert out.shape == (2, 4, 4)
        k = [n for n, w in enumerate(wins) if np.array_equal(w, out)]
        assert k, "the crop is not a window of the padded image"
        seen.add(k[0])
    assert len(seen) > 10  # offsets vary


def test_random_crop_batch_gives_each_sample_its_own_window_and_is_seeded():
    x = np.stack([_img(1, 8, 8, seed=s) for s in range(64)])
    out = T.RandomCrop(8, padding=4, generator=prunus.Generator().manual_seed(1))(prunus.from_numpy(x))
    assert out.shape == (64, 1, 8, 8)
    o = out.numpy()
    for n in range(64):
        padded = np.pad(x[n], ((0, 0), (4, 4), (4, 4)))
        assert any(np.array_equal(w, o[n]) for w in _windows(padded, 8, 8))
    same = T.RandomCrop(8, padding=4, generator=prunus.Generator().manual_seed(1))(x)
    np.testing.assert_array_equal(same, o)
    # one offset per sample, not one for the whole batch: zero-padding shows in different places
    assert len({tuple((o[n] == 0).any(axis=(0, 1))) for n in range(64)}) > 5


def test_random_crop_no_padding_and_errors():
    x = _img(1, 6, 6)
    out = T.RandomCrop((3, 4), generator=prunus.Generator().manual_seed(0))(x)
    assert out.shape == (1, 3, 4)
    with pytest.raises(E.ShapeError, match=r"crop \(8, 8\) is larger than the padded image \(6, 6\)"):
        T.RandomCrop(8)(x)
    with pytest.raises(E.ArgumentError, match="padding must be non-negative"):
        T.RandomCrop(4, padding=-1)
    with pytest.raises(E.ArgumentError, match="size must be a positive int"):
        T.RandomCrop(0)


def test_random_horizontal_flip():
    x = _img()
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(x), x)
    batch = np.stack([_img(seed=s) for s in range(200)])
    out = T.RandomHorizontalFlip(0.5, generator=prunus.Generator().manual_seed(0))(prunus.from_numpy(batch)).numpy()
    flipped = [np.array_equal(out[n], batch[n, ..., ::-1]) for n in range(200)]
    kept = [np.array_equal(out[n], batch[n]) for n in range(200)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 70 < sum(flipped) < 130
    again = T.RandomHorizontalFlip(0.5, generator=prunus.Generator().manual_seed(0))(batch)
    np.testing.assert_array_equal(again, out)
    with pytest.raises(E.ArgumentError, match=r"p must lie in \[0, 1\]"):
        T.RandomHorizontalFlip(1.5)


def test_compose_pipeline_and_lambda():
    g = prunus.Generator().manual_seed(0)
    pipe = T.Compose([T.ToTensor(), T.RandomCrop(28, padding=2, generator=g),
                      T.RandomHorizontalFlip(generator=g), T.Normalize((0.1307,), (0.3081,)),
                      T.Lambda(lambda t: t * 1)])
    out = pipe(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    assert isinstance(out, prunus.Tensor) and out.shape == (1, 28, 28) and out.dtype is prunus.float32
    assert "RandomCrop" in repr(pipe)
    with pytest.raises(E.DTypeError, match="expected a prunus tensor or a NumPy array, got list"):
        T.Normalize([0.0], [1.0])([[1.0]])


def test_random_crop_gather_fallback_matches(monkeypatch):
    """Backends without sliding_window_view (older CuPy) take the fancy-index path: same result."""
    x = np.stack([_img(2, 7, 7, seed=s) for s in range(16)])
    fast = T.RandomCrop(5, padding=1, generator=prunus.Generator().manual_seed(4))(x)
    monkeypatch.delattr(np.lib.stride_tricks, "sliding_window_view")
    slow = T.RandomCrop(5, padding=1, generator=prunus.Generator().manual_seed(4))(x)
    np.testing.assert_array_equal(fast, slow)

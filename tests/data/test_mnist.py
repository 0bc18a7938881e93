"""MNIST / FashionMNIST: the real files' sanity figures, the search path, and clear errors for
missing, truncated, corrupted, wrong-magic and wrong-hash files. Downloads are faked: the tests
never touch the network."""

from __future__ import annotations

import gzip
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import prunus
from prunus import errors as E
from prunus.data import DataLoader, default_collate
from prunus.data import transforms as T
from prunus.data.datasets import MNIST, FashionMNIST
from prunus.data.datasets import mnist as M

REPO = Path(__file__).resolve().parents[2]
TEST_FILES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _mnist_dir() -> Path:
    env = os.environ.get("PRUNUS_DATA")
    base = Path(env).expanduser() if env else REPO.parent / "shared" / "datasets"
    if not (base / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST files not found in {base / 'mnist'} (set PRUNUS_DATA to the shared datasets folder)")
    return base / "mnist"


@pytest.fixture(scope="module")
def train():
    return MNIST(root=_mnist_dir().parent, train=True)


@pytest.fixture(scope="module")
def test_set():
    return MNIST(root=_mnist_dir().parent, train=False)


@pytest.fixture(scope="module")
def raw_test_files():
    """The decompressed t10k files, read once: {name: bytes}."""
    return {f: gzip.decompress((_mnist_dir() / (f + ".gz")).read_bytes()) for f in TEST_FILES}


def _write(folder: Path, files: dict, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / name).write_bytes(data)
    return folder


# -- the real files ----------------------------------------------------------------------------


def test_train_sanity_figures(train):
    assert len(train) == 60000 and train.train is True
    assert isinstance(train.data, prunus.Tensor) and train.data.dtype is prunus.uint8
    assert train.data.shape == (60000, 28, 28)
    assert train.targets.dtype is prunus.int64 and train.targets.shape == (60000,)
    counts = np.bincount(train.targets.numpy(), minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train.data.numpy().mean() / 255 == pytest.approx(0.1307, abs=5e-5)
    assert len(train.classes) == 10 and train.class_to_idx["3 - three"] == 3


def test_items(train, test_set):
    assert len(test_set) == 10000 and test_set.train is False
    x, y = train[7]
    assert isinstance(x, prunus.Tensor) and x.shape == (1, 28, 28) and x.dtype is prunus.float32
    assert isinstance(y, int) and y == int(train.targets.numpy()[7])
    np.testing.assert_array_equal(x.numpy()[0], train.data.numpy()[7].astype(np.float32) / 255)
    assert 0.0 <= x.numpy().min() and x.numpy().max() <= 1.0
    assert train[-1][1] == int(train.targets.numpy()[-1])
    with pytest.raises(E.IndexOutOfRangeError, match="MNIST: index 10000 is out of range for 10000"):
        test_set[10000]


def test_transforms_get_the_raw_image(test_set):
    ds = MNIST(root=_mnist_dir().parent, train=False,
               transform=T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]),
               target_transform=lambda y: y + 100)
    x, y = ds[0]
    np.testing.assert_allclose(x.numpy(), (test_set[0][0].numpy() - 0.1307) / 0.3081, rtol=1e-6)
    assert y == test_set[0][1] + 100


def test_dataloader_fast_path_matches_items(test_set):
    g = prunus.Generator().manual_seed(0)
    x, y = next(iter(DataLoader(test_set, batch_size=64, shuffle=True, generator=g)))
    g.manual_seed(0)
    xs, ys = next(iter(DataLoader(test_set, batch_size=64, shuffle=True, generator=g, collate_fn=default_collate)))
    assert x.shape == (64, 1, 28, 28) and y.dtype is prunus.int64
    np.testing.assert_array_equal(x.numpy(), xs.numpy())
    np.testing.assert_array_equal(y.numpy(), ys.numpy())


def test_env_var_and_torchvision_layout(monkeypatch, tmp_path, raw_test_files):
    src = _mnist_dir()
    monkeypatch.setenv("PRUNUS_DATA", str(src.parent))
    assert len(MNIST(train=False)) == 10000
    _write(tmp_path / "MNIST" / "raw", raw_test_files)  # raw (not gzipped) files work too
    monkeypatch.setenv("PRUNUS_DATA", str(tmp_path))
    ds = MNIST(train=False)
    assert ds.paths["images"] == tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    np.testing.assert_array_equal(ds.targets.numpy(), MNIST(root=src.parent, train=False).targets.numpy())


# -- bad files -----------------------------------------------------------------------------------


def _load_bad(tmp_path, raw_test_files, images: bytes, gz=False):
    files = dict(raw_test_files)
    files["t10k-images-idx3-ubyte"] = images
    _write(tmp_path / "mnist", files, gz=gz)
    return MNIST(root=tmp_path, train=False)


def test_truncated_file(tmp_path, raw_test_files):
    with pytest.raises(E.ModelFormatError, match=r"t10k-images-idx3-ubyte: 7839900 bytes of data after "
                       r"the header, the header promises 7840000: the file is truncated") as e:
        _load_bad(tmp_path, raw_test_files, raw_test_files["t10k-images-idx3-ubyte"][:-100])
    assert type(e.value) is E.ModelFormatError


def test_truncated_gzip(tmp_path, raw_test_files):
    (tmp_path / "mnist").mkdir()
    gz = (_mnist_dir() / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    _write(tmp_path / "mnist", {"t10k-labels-idx1-ubyte": raw_test_files["t10k-labels-idx1-ubyte"]})
    with pytest.raises(E.ModelFormatError, match=r"t10k-images-idx3-ubyte.gz: the gzip stream ends early: "
                       "the file is truncated") as e:
        MNIST(root=tmp_path, train=False)
    assert type(e.value) is E.ModelFormatError


def test_gzip_crc_mismatch(tmp_path, raw_test_files):
    (tmp_path / "mnist").mkdir()
    gz = bytearray((_mnist_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    gz[-8] ^= 0xFF  # the CRC-32 of the content, in the gzip trailer
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(gz))
    _write(tmp_path / "mnist", {"t10k-images-idx3-ubyte": raw_test_files["t10k-images-idx3-ubyte"]})
    with pytest.raises(E.ChecksumError, match=r"t10k-labels-idx1-ubyte.gz: not a valid gzip file \(CRC"):
        MNIST(root=tmp_path, train=False)


def test_wrong_magic(tmp_path, raw_test_files):
    bad = (2052).to_bytes(4, "big") + raw_test_files["t10k-images-idx3-ubyte"][4:]
    with pytest.raises(E.ModelFormatError, match=r"t10k-images-idx3-ubyte.gz: bad magic number 2052, "
                       r"expected 2051 \(IDX images\)"):
        _load_bad(tmp_path, raw_test_files, bad, gz=True)


def test_wrong_count_and_trailing_bytes(tmp_path, raw_test_files):
    raw = raw_test_files["t10k-images-idx3-ubyte"]
    bad = raw[:4] + (9999).to_bytes(4, "big") + raw[8:]
    with pytest.raises(E.ModelFormatError, match=r"header says images of shape \(9999, 28, 28\), expected "
                       r"\(10000, 28, 28\)"):
        _load_bad(tmp_path, raw_test_files, bad)
    with pytest.raises(E.ModelFormatError, match="it has trailing bytes"):
        _load_bad(tmp_path / "b", raw_test_files, raw + b"\0")


def test_wrong_hash(tmp_path, raw_test_files):
    raw = bytearray(raw_test_files["t10k-images-idx3-ubyte"])
    raw[5000] ^= 0x01  # one pixel: structure intact, content not the published file
    with pytest.raises(E.ChecksumError, match=r"t10k-images-idx3-ubyte.gz: SHA-256 of the decompressed "
                       r"content is [0-9a-f]{64}, expected 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661"):
        _load_bad(tmp_path, raw_test_files, bytes(raw), gz=True)


def test_rewritten_file_is_reverified(tmp_path, raw_test_files):
    """The per-process cache is keyed by path, size and mtime: a file changed in place is read again."""
    assert len(_load_bad(tmp_path, raw_test_files, raw_test_files["t10k-images-idx3-ubyte"])) == 10000
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(1, 1))
    with pytest.raises(E.ChecksumError):
        MNIST(root=tmp_path, train=False)


# -- missing files and (faked) downloads -------------------------------------------------------------


def _fake_fetch(monkeypatch, answer):
    calls = []

    def fetch(url, timeout=60.0):
        calls.append(url)
        return answer(url)

    monkeypatch.setattr(M, "_fetch_url", fetch)
    return calls


def test_missing_files_clear_error_and_no_download(monkeypatch, tmp_path):
    calls = _fake_fetch(monkeypatch, lambda url: pytest.fail("download without download=True"))
    with pytest.raises(E.DatasetNotFoundError) as e:
        MNIST(root=tmp_path, train=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and not calls
    for fragment in ["t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz) not found",
                     str(tmp_path / "mnist"), str(tmp_path / "MNIST" / "raw"), "train-images-idx3-ubyte.gz",
                     "PRUNUS_DATA", "download=True", "https://ossci-datasets.s3.amazonaws.com/mnist/"]:
        assert fragment in msg


def test_download_only_when_allowed_and_missing(monkeypatch, tmp_path):
    src = _mnist_dir()
    calls = _fake_fetch(monkeypatch, lambda url: (src / url.rsplit("/", 1)[1]).read_bytes())
    ds = MNIST(root=tmp_path, train=False, download=True)
    assert len(ds) == 10000 and ds.targets.numpy().sum() == MNIST(root=src.parent, train=False).targets.numpy().sum()
    assert calls == [M.MNIST.mirrors[0] + f + ".gz" for f in TEST_FILES]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [f + ".gz" for f in TEST_FILES]
    MNIST(root=tmp_path, train=False, download=True)  # present now: no second download
    assert len(calls) == 2


def test_bad_download_is_rejected_and_not_kept(monkeypatch, tmp_path, raw_test_files):
    def corrupted(url):
        raw = bytearray(raw_test_files[url.rsplit("/", 1)[1][:-3]])
        raw[-1] ^= 0x01
        return gzip.compress(bytes(raw), compresslevel=1)

    calls = _fake_fetch(monkeypatch, corrupted)
    with pytest.raises(E.ChecksumError, match=r"download of t10k-images-idx3-ubyte.gz failed verification; "
                       r"nothing was written(.|\n)*SHA-256 of the decompressed content"):
        MNIST(root=tmp_path, train=False, download=True)
    assert len(calls) == len(M.MNIST.mirrors)  # every mirror tried
    assert not (tmp_path / "mnist").exists() or not any((tmp_path / "mnist").iterdir())


def test_second_mirror_used_when_first_fails(monkeypatch, tmp_path):
    src = _mnist_dir()

    def flaky(url):
        if url.startswith(M.MNIST.mirrors[0]):
            raise urllib.error.URLError("connection refused")
        return (src / url.rsplit("/", 1)[1]).read_bytes()

    calls = _fake_fetch(monkeypatch, flaky)
    assert len(MNIST(root=tmp_path, train=False, download=True)) == 10000
    assert len(calls) == 4


def test_offline_download_gives_the_missing_files_error(monkeypatch, tmp_path):
    def offline(url):
        raise urllib.error.URLError("Name or service not known")

    _fake_fetch(monkeypatch, offline)
    with pytest.raises(E.DatasetNotFoundError, match=r"(?s)not found.*The download failed:.*Name or service not known"):
        MNIST(root=tmp_path, train=False, download=True)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "d" / "f.gz"
    M._atomic_write(target, b"old")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(M.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        M._atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["f.gz"]


# -- FashionMNIST (its files are not in the shared folder: synthetic ones check the format path) --


def _synthetic(n):
    rng = np.random.default_rng(0)
    images = (2051).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28))
    labels = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
    return {"t10k-images-idx3-ubyte": images + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes(),
            "t10k-labels-idx1-ubyte": labels + rng.integers(0, 10, n, dtype=np.uint8).tobytes()}


def test_fashion_mnist_raw_files_and_published_gz_hash(tmp_path):
    files = _synthetic(10000)
    _write(tmp_path / "fashion-mnist", files)
    ds = FashionMNIST(root=tmp_path, train=False)
    assert len(ds) == 10000 and ds.classes[9] == "Ankle boot" and ds[0][0].shape == (1, 28, 28)
    # a .gz is checked against the published .gz SHA-256: this synthetic one is not it
    _write(tmp_path / "g" / "fashion-mnist", files, gz=True)
    with pytest.raises(E.ChecksumError, match=r"SHA-256 of the .gz file is [0-9a-f]{64}, expected 78dcbbfb"):
        FashionMNIST(root=tmp_path / "g", train=False)
    with pytest.raises(E.DatasetNotFoundError, match="fashion-mnist"):
        FashionMNIST(root=tmp_path / "empty", train=False)


def test_fashion_mnist_bad_labels(tmp_path):
    files = _synthetic(10000)
    files["t10k-labels-idx1-ubyte"] = files["t10k-labels-idx1-ubyte"][:-1] + bytes([12])
    _write(tmp_path / "fashion-mnist", files)
    with pytest.raises(E.ModelFormatError, match="label 12 is outside 0..9"):
        FashionMNIST(root=tmp_path, train=False)


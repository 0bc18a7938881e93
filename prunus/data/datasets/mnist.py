"""MNIST and FashionMNIST, read from their IDX files (raw or .gz) with every byte verified.

Where files are looked for, in order: `root` if given (root/, root/<folder>/, root/<Name>/raw/ as
torchvision lays it out); otherwise $PRUNUS_DATA/<folder>/, $PRUNUS_DATA/<Name>/raw/, then
~/.cache/prunus/<folder>/ ($XDG_CACHE_HOME is honoured). Only `download=True` touches the network,
and only for missing files: each download is verified before it is written (atomically) to
root/<folder>/ or the cache folder. Decoded arrays are kept for the rest of the process (decoding
the 47 MB training images takes ~0.3 s, about as long as reading a .npy cache would).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from prunus._fileio import atomic_write
from prunus.data.dataset import Dataset, _check_index
from prunus.errors import ChecksumError, DatasetNotFoundError, ModelFormatError
from prunus.tensor import Tensor

_MAGIC = {"images": 2051, "labels": 2049}  # 0x0803: uint8 x 3 dims; 0x0801: uint8 x 1 dim
_decoded: dict = {}  # (realpath, size, mtime_ns) -> verified read-only array, for this process


def _fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """GET one URL (tests replace this function: they never touch the network)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


_atomic_write = atomic_write  # tests and older callers use the private name


def decode_idx(raw: bytes, where: str, kind: str, count: int, sha256: str | None = None,
               gz_sha256: str | None = None, gz: bool = False) -> np.ndarray:
    """Verify and decode one IDX file's bytes (gzip-compressed when `gz`) into a uint8 array.

    Checks, in this order so the message names the first real problem: the .gz's SHA-256 (when
    published and the content's is not), the gzip stream, the magic number, the dimensions, the
    item count, the length, and the SHA-256 of the decompressed content (when published).
    """
    if gz:
        if gz_sha256 is not None and sha256 is None:
            got = hashlib.sha256(raw).hexdigest()
            if got != gz_sha256:
                raise ChecksumError(f"{where}: SHA-256 of the .gz file is {got}, expected {gz_sha256} "
                                    "(the published file): it is corrupted or a different file")
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise ModelFormatError(f"{where}: the gzip stream ends early: the file is truncated") from None
        except (OSError, zlib.error) as e:  # BadGzipFile is an OSError; CRC failures land here too
            cls = ChecksumError if "CRC" in str(e) else ModelFormatError
            raise cls(f"{where}: not a valid gzip file ({e}): it is corrupted") from None
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ModelFormatError(f"{where}: only {len(raw)} bytes, shorter than the {header}-byte IDX "
                               f"{kind} header: the file is truncated")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _MAGIC[kind]:
        raise ModelFormatError(f"{where}: bad magic number {magic}, expected {_MAGIC[kind]} (IDX {kind}); "
                               "not an MNIST-format file or the wrong file under this name")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    want = (count, 28, 28)[:ndim]
    if dims != want:
        raise ModelFormatError(f"{where}: the header says {kind} of shape {dims}, expected {want}")
    size = int(np.prod(dims))
    if len(raw) - header != size:
        what = "the file is truncated" if len(raw) - header < size else "it has trailing bytes"
        raise ModelFormatError(f"{where}: {len(raw) - header} bytes of data after the header, the header "
                               f"promises {size}: {what}")
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ChecksumError(f"{where}: SHA-256 of the decompressed content is {got}, expected {sha256} "
                                "(the published file): the file is corrupted or modified")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and arr.size and int(arr.max()) > 9:
        raise ModelFormatError(f"{where}: label {int(arr.max())} is outside 0..9")
    return arr


class MNIST(Dataset):
    """The MNIST handwritten digits: 60,000 training / 10,000 test images, 28x28, 10 classes.

    `MNIST(root=None, train=True, transform=None, target_transform=None, download=False)`.
    Item i is `(image, label)`: image a float32 1x28x28 tensor in [0, 1] (or `transform` applied to
    the raw uint8 28x28 NumPy array, e.g. `Compose([ToTensor(), Normalize(...)])`), label an int.
    `data` is the uint8 Nx28x28 prunus tensor and `targets` the int64 N tensor, both read-only
    views of the decoded files; `classes` names the labels.
    """

    folder = "mnist"
    torchvision_folder = "MNIST"
    mirrors = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
               "https://storage.googleapis.com/cvdf-datasets/mnist/")
    # file -> (SHA-256 of the decompressed file, SHA-256 of the published .gz). The gzip wrappers
    # in circulation differ, so MNIST is checked on the decompressed content only.
    checksums: ClassVar[dict] = {
        "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", None),
        "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", None),
        "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", None),
        "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", None),
    }
    classes = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine")

    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
        self.root = None if root is None else Path(root).expanduser()
        self.train = bool(train)
        self.transform, self.target_transform = transform, target_transform
        split, n = ("train", 60000) if self.train else ("t10k", 10000)
        names = {"images": f"{split}-images-idx3-ubyte", "labels": f"{split}-labels-idx1-ubyte"}
        paths = {k: self._find(f) for k, f in names.items()}
        missing = [names[k] for k, p in paths.items() if p is None]
        if missing and download:
            self._download(missing)
            paths = {k: self._find(f) for k, f in names.items()}
            missing = [names[k] for k, p in paths.items() if p is None]
        if missing:
            raise DatasetNotFoundError(self._missing_message(missing))
        self._images = self._load(paths["images"], "images", n, names["images"])
        self._labels = self._load(paths["labels"], "labels", n, names["labels"]).astype(np.int64)
        self._labels.setflags(write=False)
        self.paths = paths

    # -- files -------------------------------------------------------------------------------

    def search_dirs(self) -> list[Path]:
        name, tv = self.folder, Path(self.torchvision_folder) / "raw"
        if self.root is not None:
            return [self.root, self.root / name, self.root / tv]
        dirs = []
        if os.environ.get("PRUNUS_DATA"):
            base = Path(os.environ["PRUNUS_DATA"]).expanduser()
            dirs += [base / name, base / tv]
        return dirs + [self.download_dir()]

    def download_dir(self) -> Path:
        if self.root is not None:
            return self.root / self.folder
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "prunus" / self.folder

    def _find(self, fname):
        for d in self.search_dirs():
            for cand in (d / (fname + ".gz"), d / fname):
                if cand.is_file():
                    return cand
        return None

    def _missing_message(self, missing) -> str:
        dirs = "\n  ".join(str(d) for d in self.search_dirs())
        allf = ", ".join(f + ".gz" for f in self.checksums)
        return (f"{type(self).__name__}: {', '.join(missing)} (raw or .gz) not found. Looked in:\n  {dirs}\n"
                f"Put {allf} (raw or gzip-compressed) in one of these folders, or set PRUNUS_DATA to a "
                f"folder holding {self.folder}/, or pass download=True to fetch them from "
                f"{self.mirrors[0]} (checksums are verified).")

    def _load(self, path: Path, kind: str, count: int, fname: str) -> np.ndarray:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        arr = _decoded.get(key)
        if arr is None:
            sha, gz_sha = self.checksums[fname]
            arr = decode_idx(path.read_bytes(), str(path), kind, count, sha, gz_sha, path.suffix == ".gz")
            arr.setflags(write=False)
            _decoded[key] = arr
        return arr

    def _download(self, missing) -> None:
        dest = self.download_dir()
        for fname in missing:
            sha, gz_sha = self.checksums[fname]
            kind = "images" if "images" in fname else "labels"
            count = 60000 if fname.startswith("train") else 10000
            problems, bad = [], None
            for mirror in self.mirrors:
                url = mirror + fname + ".gz"
                try:
                    data = _fetch_url(url)
                except OSError as e:  # URLError, HTTPError, timeouts are all OSErrors
                    problems.append(f"{url}: {e}")
                    continue
                try:  # verify before writing, so a bad download is never kept
                    decode_idx(data, url, kind, count, sha, gz_sha, gz=True)
                except ModelFormatError as e:
                    problems.append(f"{url}: {e}")
                    bad = e
                    continue
                _atomic_write(dest / (fname + ".gz"), data)
                break
            else:
                detail = "\n  ".join(problems)
                if bad is not None:  # a mirror answered, but with the wrong bytes
                    raise ChecksumError(f"{type(self).__name__}: the download of {fname}.gz failed "
                                        f"verification; nothing was written:\n  {detail}") from bad
                raise DatasetNotFoundError(self._missing_message(missing) +
                                           f"\nThe download failed:\n  {detail}")

    # -- samples -----------------------------------------------------------------------------

    @property
    def data(self) -> Tensor:
        from prunus.creation import from_numpy

        return from_numpy(self._images)

    @property
    def targets(self) -> Tensor:
        from prunus.creation import from_numpy

        return from_numpy(self._labels)

    @property
    def class_to_idx(self) -> dict:
        return {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index):
        i = _check_index(index, len(self._labels), type(self).__name__)
        img, label = self._images[i], int(self._labels[i])
        img = _to_float(img[None]) if self.transform is None else self.transform(img)
        return img, (label if self.target_transform is None else self.target_transform(label))

    def _get_batch(self, indices):
        """A collated batch by one fancy index: (N,1,28,28) float32 images, (N,) int64 labels."""
        if self.transform is not None or self.target_transform is not None:
            from prunus.data.dataloader import default_collate

            return default_collate([self[i] for i in indices.tolist()])
        from prunus.creation import from_numpy

        return _to_float(self._images[indices][:, None]), from_numpy(self._labels[indices])

    def __repr__(self):
        return (f"{type(self).__name__}(train={self.train}, {len(self)} samples, "
                f"files={[str(p) for p in self.paths.values()]})")


def _to_float(a: np.ndarray) -> Tensor:
    from prunus.creation import from_numpy

    return from_numpy(a.astype(np.float32) / np.float32(255))  # as ToTensor does, bit for bit


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: same format and sizes as MNIST, 10 clothing classes."""

    folder = "fashion-mnist"
    torchvision_folder = "FashionMNIST"
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    # SHA-256 of the published .gz files (zalandoresearch/fashion-mnist, as listed by several
    # loaders). TODO: SHA-256 of the decompressed content is not published; raw (un-gzipped)
    # files are checked for magic number, dimensions, count and length only.
    checksums: ClassVar[dict] = {
        "train-images-idx3-ubyte": (None, "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"),
        "train-labels-idx1-ubyte": (None, "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc"),
        "t10k-images-idx3-ubyte": (None, "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229"),
        "t10k-labels-idx1-ubyte": (None, "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf"),
    }
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

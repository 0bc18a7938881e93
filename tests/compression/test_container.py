"""The .pnz compressed model file: round trips of pruned and quantized LeNet-300-100 / LeNet-5
(and dense, BatchNorm, float64 models) with bit-identical weights and outputs, a loaded model that
fine-tunes exactly like the saved one, the format read back independently with huffman.py and
sparse_index.py, CompressedInfo sizes that add up to the file, argument errors, malformed files
one by one, and a seeded fuzz of mutated files that must raise only ModelFormatError/ChecksumError.
"""

from __future__ import annotations

import builtins
import importlib
import json
import re
import struct
import zlib

import numpy as np
import pytest
from file_fuzz import fuzz, json_paths, mutate_bytes, mutate_json, pick

import prunus
import prunus.nn.functional as F
from prunus import models, nn, optim, serialization
from prunus.backend import cuda_is_available
from prunus.compression import container, huffman, sparse_index
from prunus.compression.container import DEFAULT_INDEX_BITS, FORMAT_VERSION, MAGIC, CompressedInfo
from prunus.compression.pruning import PruningMask, prune_magnitude
from prunus.compression.weight_sharing import SharedWeights, quantize, quantize_model
from prunus.data import DataLoader, TensorDataset
from prunus.errors import ArgumentError, ChecksumError, ModelFormatError
from prunus.nn import parametrize as P
from prunus.train import Trainer

_PREFIX = struct.Struct("<8sHHII")


# -- models and helpers ------------------------------------------------------------------------------


def _lenet300(seed=0, bits=6, sparsity=(0.92, 0.91, 0.74)):
    """fc1 and fc2 pruned and quantized (`bits`), fc3 pruned only, biases dense."""
    prunus.manual_seed(seed)
    m = models.lenet_300_100()
    for name, s in zip(("fc1", "fc2", "fc3"), sparsity):
        prune_magnitude(getattr(m, name), sparsity=s)
    quantize(m.fc1, bits=bits)
    quantize(m.fc2, bits=bits)
    return m


def _lenet5(seed=0):
    """The paper's LeNet-5 sparsities, 8-bit convolutions and 5-bit fully-connected layers."""
    prunus.manual_seed(seed)
    m = models.lenet5()
    for name, s in (("conv1", 0.34), ("conv2", 0.88), ("fc1", 0.92), ("fc2", 0.81)):
        prune_magnitude(getattr(m, name), sparsity=s)
    quantize_model(m)
    return m


def _out(model, x) -> np.ndarray:
    with prunus.no_grad():
        return model(x).numpy()


def _used(model, name) -> np.ndarray:
    path, _, attr = name.rpartition(".")
    with prunus.no_grad():
        return getattr(dict(model.named_modules())[path], attr).detach().numpy().copy()


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _split(data: bytes):
    """(header dict, body bytes) of a .pnz file."""
    hlen = _PREFIX.unpack_from(data)[3]
    return json.loads(data[_PREFIX.size : _PREFIX.size + hlen]), data[_PREFIX.size + hlen :]


def _join(header, body: bytes, *, version=FORMAT_VERSION, flags=0, text=None) -> bytes:
    """A file with this header (re-signed, so that edits reach the checks behind the checksum)."""
    if text is None:
        text = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, version, flags, len(text), zlib.crc32(text)) + text + body


def _chunks(header, body) -> dict:
    """{(tensor index, section name): bytes} in file order."""
    out = {}
    for i, rec in enumerate(header["tensors"]):
        for sec, (off, length, _) in rec["sections"].items():
            out[(i, sec)] = body[off : off + length]
    return out


def _rebuild(header, chunks) -> bytes:
    """A file whose sections are `chunks` (offsets, lengths and CRCs recomputed): edits of the
    sections' bytes then reach the decoders."""
    body, off = [], 0
    for i, rec in enumerate(header["tensors"]):
        for sec in rec["sections"]:
            b = chunks[(i, sec)]
            rec["sections"][sec] = [off, len(b), zlib.crc32(b)]
            body.append(b)
            off += len(b)
    return _join(header, b"".join(body))


def _record(header, name) -> dict:
    return next(r for r in header["tensors"] if r["name"] == name)


# -- round trips -----------------------------------------------------------------------------------


def test_lenet_300_100_round_trip_is_bit_identical(tmp_path):
    m = _lenet300()
    path = tmp_path / "lenet300.pnz"
    info = container.save(m, path, arch="lenet_300_100", meta={"acc": {"baseline": 0.98}})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # atomic: no temp file left
    assert isinstance(info, CompressedInfo) and info.file_bytes == path.stat().st_size
    m2, meta = container.load(path)
    assert meta == {"acc": {"baseline": 0.98}}
    # the layers come back quantized / pruned, with the saved codebooks, indices and masks
    for layer in ("fc1", "fc2"):
        a, b = getattr(m, layer), getattr(m2, layer)
        (pa,), (pb,) = list(a.parametrizations.weight), list(b.parametrizations.weight)
        assert isinstance(pb, SharedWeights) and isinstance(pb.codebook, nn.Parameter)
        np.testing.assert_array_equal(_bits(pb.codebook.detach().numpy()), _bits(pa.codebook.detach().numpy()))
        np.testing.assert_array_equal(pb.mask.numpy(), pa.mask.numpy())
        keep = pa.mask.numpy() != 0
        np.testing.assert_array_equal(pb.indices.numpy()[keep], pa.indices.numpy()[keep])
        # the used weight codebook[indices] * mask, to the bit (zeros' signs included)
        np.testing.assert_array_equal(_bits(_used(m2, f"{layer}.weight")), _bits(_used(m, f"{layer}.weight")))
    (p3,) = list(m2.fc3.parametrizations.weight)
    assert isinstance(p3, PruningMask)
    np.testing.assert_array_equal(p3.mask.numpy(), m.fc3.parametrizations.weight[0].mask.numpy())
    # a pruned-only layer: the same values (the sign of a pruned zero is not stored)
    np.testing.assert_array_equal(_used(m2, "fc3.weight"), _used(m, "fc3.weight"))
    for name in ("fc1.bias", "fc2.bias", "fc3.bias"):
        np.testing.assert_array_equal(_bits(_used(m2, name)), _bits(_used(m, name)))
    # outputs and accuracy on a small random dataset are identical
    g = prunus.Generator().manual_seed(1)
    x = prunus.randn(512, 1, 28, 28, generator=g)
    y = prunus.randint(0, 10, (512,), generator=g)
    np.testing.assert_array_equal(_bits(_out(m2, x)), _bits(_out(m, x)))
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    assert Trainer(m2, None).evaluate(loader) == Trainer(m, None).evaluate(loader)


def test_lenet5_round_trip_with_per_layer_index_bits():
    m = _lenet5()
    plan = {"conv1.weight": 3, "conv2.weight": 8, "fc1.weight": 4}
    data = container.dumps(m, arch={"model": "lenet5", "kwargs": {"num_classes": 10}},
                           index_bits=plan)
    info = container.read_info_bytes(data)
    want = {**plan, "fc2.weight": DEFAULT_INDEX_BITS}
    assert {t.name: t.index_bits for t in info if t.kind != "dense"} == want
    assert {t.name: t.k for t in info if t.kind == "shared"} == {
        "conv1.weight": 256, "conv2.weight": 256, "fc1.weight": 32, "fc2.weight": 32}
    m2, meta = container.loads(data)
    assert meta == {}
    x = prunus.randn(8, 1, 28, 28)
    np.testing.assert_array_equal(_bits(_out(m2, x)), _bits(_out(m, x)))
    for name in want:
        np.testing.assert_array_equal(_bits(_used(m2, name)), _bits(_used(m, name)))


def test_a_loaded_model_fine_tunes_exactly_like_the_saved_one():
    m = _lenet300(bits=4)
    m2, _ = container.loads(container.dumps(m, arch="lenet_300_100"))
    x, y = prunus.randn(32, 784), prunus.randint(0, 10, (32,))
    for model in (m, m2):
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for layer in ("fc1", "fc2"):
        a = getattr(m, layer).parametrizations.weight[0].codebook.detach().numpy()
        b = getattr(m2, layer).parametrizations.weight[0].codebook.detach().numpy()
        np.testing.assert_array_equal(_bits(b), _bits(a))
    np.testing.assert_array_equal(_bits(_out(m2, x)), _bits(_out(m, x)))


def test_dense_models_and_batchnorm_buffers_round_trip():
    prunus.manual_seed(0)
    dense = models.lenet5()
    m2, _ = container.loads(container.dumps(dense, arch="lenet5"))
    assert not P.is_parametrized(m2.fc1)
    for k, v in dense.state_dict().items():
        np.testing.assert_array_equal(_bits(m2.state_dict()[k].numpy()), _bits(v.numpy()))
    # ResNet: BatchNorm weights, biases, running statistics and num_batches_tracked, with one
    # convolution pruned and quantized and another pruned only
    net = models.resnet_small(num_classes=7)
    net.train()
    with prunus.no_grad():
        net(prunus.randn(4, 3, 32, 32))  # moves the running statistics
    prune_magnitude(net.layer1[0].conv1, sparsity=0.7)
    quantize(net.layer1[0].conv1, bits=4)
    prune_magnitude(net.layer2[0].conv2, sparsity=0.5)
    net.eval()
    data = container.dumps(net, arch={"model": "resnet_small", "kwargs": {"num_classes": 7}})
    kinds = {t.name: t.kind for t in container.read_info_bytes(data)}
    assert kinds["layer1.0.conv1.weight"] == "shared" and kinds["layer2.0.conv2.weight"] == "pruned"
    assert kinds["bn1.running_var"] == "dense" and kinds["bn1.num_batches_tracked"] == "dense"
    net2, _ = container.loads(data)
    net2.eval()
    x = prunus.randn(2, 3, 32, 32)
    np.testing.assert_array_equal(_bits(_out(net2, x)), _bits(_out(net, x)))
    assert int(net2.bn1.num_batches_tracked.numpy()) == 1


def test_float64_models_keep_their_dtype():
    m = models.lenet_300_100().double()
    prune_magnitude(m.fc1, sparsity=0.9)
    quantize(m.fc1, bits=5)
    data = container.dumps(m, arch="lenet_300_100")
    assert {t.dtype for t in container.read_info_bytes(data)} == {"float64"}
    m2, _ = container.loads(data)
    assert m2.fc1.parametrizations.weight[0].codebook.dtype is prunus.float64
    x = prunus.randn(3, 784, dtype=prunus.float64)
    np.testing.assert_array_equal(_bits(_out(m2, x)), _bits(_out(m, x)))


@pytest.mark.parametrize("index_bits", [1, 2, 3, 8, 16])
def test_streams_with_fillers_empty_layers_and_unpruned_quantized_layers(index_bits):
    prunus.manual_seed(index_bits)
    m = models.lenet_300_100()
    prune_magnitude(m.fc1, sparsity=0.995)  # long gaps: many fillers at small index_bits
    quantize(m.fc1, bits=3)
    prune_magnitude(m.fc2, sparsity=1.0)  # nothing kept: empty streams
    quantize(m.fc2, bits=2)
    quantize(m.fc3, bits=1)  # quantized, not pruned: every gap is 1
    data = container.dumps(m, arch="lenet_300_100", index_bits=index_bits)
    info = container.read_info_bytes(data)
    assert info["fc2.weight"].entries == 0 and info["fc2.weight"].nonzero == 0
    assert info["fc3.weight"].entries == info["fc3.weight"].nonzero == 1000
    if index_bits <= 3:
        assert info["fc1.weight"].fillers > 0
    m2, _ = container.loads(data)
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        np.testing.assert_array_equal(_bits(_used(m2, name)), _bits(_used(m, name)))


def test_pruned_only_layers_keep_kept_zeros_and_fillers():
    # a kept weight that is exactly 0.0 must stay kept (the mask is stored, not the non-zeros),
    # and filler entries of a pruned-only layer are told apart from real ones by the flags
    prunus.manual_seed(3)
    m = models.lenet_300_100()
    prune_magnitude(m.fc1, sparsity=0.99)
    with prunus.no_grad():
        raw = m.fc1.parametrizations.weight.original
        keep = m.fc1.parametrizations.weight[0].mask.numpy() != 0
        first = np.argwhere(keep)[0]
        w = raw.detach().numpy().copy()
        w[tuple(first)] = 0.0
        raw.copy_(prunus.tensor(w))
    data = container.dumps(m, arch="lenet_300_100", index_bits=2)
    info = container.read_info_bytes(data)
    assert info["fc1.weight"].kind == "pruned" and info["fc1.weight"].fillers > 0
    m2, _ = container.loads(data)
    np.testing.assert_array_equal(m2.fc1.parametrizations.weight[0].mask.numpy(), keep.astype(np.float32))
    np.testing.assert_array_equal(_used(m2, "fc1.weight"), _used(m, "fc1.weight"))


def test_map_location():
    m = _lenet300()
    data = container.dumps(m, arch="lenet_300_100")
    m2, _ = container.loads(data, map_location="cpu")
    assert all(p.device.type == "cpu" for p in m2.parameters())
    if not cuda_is_available():
        return
    g, _ = container.loads(data, map_location="cuda:0")
    assert all(p.device.type == "cuda" for p in g.parameters())
    x = prunus.randn(4, 784)
    np.testing.assert_allclose(_out(g, x.to("cuda")), _out(m, x), rtol=1e-5, atol=1e-6)


# -- the format, read back independently -------------------------------------------------------------


def test_the_file_is_what_the_format_says():
    m = _lenet300()
    data = container.dumps(m, arch="lenet_300_100", meta={"recipe": "deep-compression"})
    magic, version, flags, hlen, hcrc = _PREFIX.unpack_from(data)
    assert (magic, version, flags) == (b"\x89PNZ\r\n\x1a\n", 1, 0)
    text = data[_PREFIX.size : _PREFIX.size + hlen]
    assert zlib.crc32(text) == hcrc
    header = json.loads(text)
    assert header["prunus_version"] == prunus.__version__
    assert header["arch"] == {"model": "lenet_300_100", "kwargs": {}}
    assert header["meta"] == {"recipe": "deep-compression"}
    body = data[_PREFIX.size + hlen :]
    assert [r["name"] for r in header["tensors"]] == list(models.lenet_300_100().state_dict())
    # sections back to back, each with its CRC
    off = 0
    for rec in header["tensors"]:
        for off_, length, crc in rec["sections"].values():
            assert off_ == off and zlib.crc32(body[off : off + length]) == crc
            off += length
    assert off == len(body)
    # fc1.weight: codebook + two Huffman-coded streams, decoded with the encoders' own modules
    rec = _record(header, "fc1.weight")
    sec = {k: body[o : o + n] for k, (o, n, _) in rec["sections"].items()}
    sw = m.fc1.parametrizations.weight[0]
    np.testing.assert_array_equal(np.frombuffer(sec["codebook"], "<f4"), sw.codebook.detach().numpy())
    codes = huffman.decode(sec["index"], rec["index_nbits"], rec["entries"],
                           huffman.table_from_bytes(sec["index_table"]))
    values = huffman.decode(sec["value"], rec["value_nbits"], rec["entries"],
                            huffman.table_from_bytes(sec["value_table"]))
    pos, v = sparse_index.decode_positions(codes, values, 300 * 784, rec["index_bits"])
    np.testing.assert_array_equal(pos, np.flatnonzero(sw.mask.numpy()))
    np.testing.assert_array_equal(v.astype(np.int64) - 1, sw.indices.numpy().reshape(-1)[pos])
    # the Huffman coding is real: fewer bits than the fixed-width streams
    assert rec["index_nbits"] < rec["entries"] * rec["index_bits"]
    assert rec["value_nbits"] < rec["entries"] * 7  # symbols 0..64 need 7 bits at fixed width
    # fc3.weight (pruned only): index stream, filler flags, raw values
    rec = _record(header, "fc3.weight")
    sec = {k: body[o : o + n] for k, (o, n, _) in rec["sections"].items()}
    keep = m.fc3.parametrizations.weight[0].mask.numpy().reshape(-1) != 0
    np.testing.assert_array_equal(np.frombuffer(sec["values"], "<f4"), _used(m, "fc3.weight").reshape(-1)[keep])
    # biases: raw little-endian arrays
    rec = _record(header, "fc1.bias")
    o, n, _ = rec["sections"]["data"]
    np.testing.assert_array_equal(np.frombuffer(body[o : o + n], "<f4"), _used(m, "fc1.bias"))


def test_info_sizes_add_up_to_the_file(tmp_path):
    m = _lenet300()
    path = tmp_path / "m.pnz"
    info = container.save(m, path, arch="lenet_300_100", index_bits={"fc2.weight": 4})
    assert container.read_info(path) == info
    data = path.read_bytes()
    assert info.prefix_bytes + info.header_bytes + sum(t.stored_bytes for t in info) == len(data)
    header, body = _split(data)
    for t, rec in zip(info, header["tensors"]):
        lengths = {k: n for k, (_, n, _) in rec["sections"].items()}
        assert t.name == rec["name"] and t.stored_bytes == sum(lengths.values())
        if t.kind == "shared":
            assert t.codebook_bytes == lengths["codebook"] == t.k * 4
            assert t.table_bytes == lengths["index_table"] + lengths["value_table"]
            assert (t.index_bytes, t.value_bytes) == (lengths["index"], lengths["value"])
            # fixed-width sizes are those of the real packed streams
            chunks = _chunks(header, body)
            i = header["tensors"].index(rec)
            codes = huffman.decode(chunks[(i, "index")], t.index_nbits, t.entries,
                                   huffman.table_from_bytes(chunks[(i, "index_table")]))
            vals = huffman.decode(chunks[(i, "value")], t.value_nbits, t.entries,
                                  huffman.table_from_bytes(chunks[(i, "value_table")]))
            assert t.index_raw_bytes == len(sparse_index.pack_bits(codes, t.index_bits))
            assert t.value_raw_bytes == len(sparse_index.pack_bits(vals, int(t.k).bit_length()))
            assert t.weight_bits == 6 and t.stored_bytes < t.raw_bytes
        elif t.kind == "pruned":
            assert t.value_bytes == lengths["values"] + lengths["flags"]
            assert t.table_bytes == lengths["index_table"] and t.index_bytes == lengths["index"]
        else:
            assert t.dense_bytes == lengths["data"] == t.weights * 4
    assert info["fc2.weight"].index_bits == 4 and info["fc1.weight"].index_bits == 5
    assert info.arch == {"model": "lenet_300_100", "kwargs": {}}
    assert info["fc1.weight"].nonzero == round(0.08 * 235200)


# -- errors ----------------------------------------------------------------------------------------


def test_what_save_refuses(tmp_path):
    m = _lenet300()
    for arch, match in [("nope", "not one of"), ({"model": "lenet5"}, "does not match arch"),
                        ({"model": "lenet_300_100", "kwargs": {"num_classes": 7}}, "shapes differ"),
                        ({"model": "lenet_300_100", "kwargs": {"x": object()}}, "kwargs"),
                        ({"model": "lenet_300_100", "kwargs": {"num_classes": 2**40}}, "within"),
                        ({"name": "lenet_300_100"}, "arch must be"), (None, "arch must be")]:
        with pytest.raises(ArgumentError, match=match):
            container.dumps(m, arch=arch)
    for bits, match in [(0, "1..16"), (17, "1..16"), ("5", "1..16"), (True, "1..16"),
                        ({"fc9.weight": 4}, "not pruned or quantized"),
                        ({"fc1.bias": 4}, "not pruned or quantized")]:
        with pytest.raises(ArgumentError, match=match):
            container.dumps(m, arch="lenet_300_100", index_bits=bits)
    for meta in [{"x": object()}, {"acc": float("nan")}, [1, 2]]:
        with pytest.raises(ArgumentError, match="meta"):
            container.dumps(m, arch="lenet_300_100", meta=meta)
    with pytest.raises(ArgumentError, match="expected a Module"):
        container.dumps("model", arch="lenet_300_100")
    # a chain of two parametrizations, and a mask that is not 0/1, cannot be stored
    m2 = models.lenet_300_100()
    prune_magnitude(m2.fc1, sparsity=0.5)
    P.register_parametrization(m2.fc1, "weight", PruningMask(prunus.ones(300, 784)))
    with pytest.raises(ArgumentError, match="parametrizations"):
        container.dumps(m2, arch="lenet_300_100")
    m3 = models.lenet_300_100()
    P.register_parametrization(m3.fc2, "weight", PruningMask(prunus.full((100, 300), 0.5)))
    with pytest.raises(ArgumentError, match="other than 0 and 1"):
        container.dumps(m3, arch="lenet_300_100")
    assert list(tmp_path.iterdir()) == []
    # numpy scalars in meta are fine
    data = container.dumps(m, arch="lenet_300_100", meta={"acc": np.float32(0.5), "n": np.int64(3)})
    assert container.loads(data)[1] == {"acc": 0.5, "n": 3}


@pytest.fixture(scope="module")
def small_pnz() -> bytes:
    """fc1 quantized (1% kept), fc2 pruned only with fillers, fc3 dense."""
    prunus.manual_seed(0)
    m = models.lenet_300_100()
    prune_magnitude(m.fc1, sparsity=0.99)
    quantize(m.fc1, bits=4)
    prune_magnitude(m.fc2, sparsity=0.95)
    return container.dumps(m, arch="lenet_300_100", index_bits={"fc1.weight": 4, "fc2.weight": 3},
                           meta={"dataset": "mnist", "acc": {"baseline": 0.1}})


def _edit(data, fn) -> bytes:
    header, body = _split(data)
    fn(header)
    return _join(header, body)


def _edit_chunk(data, key, fn) -> bytes:
    header, body = _split(data)
    chunks = _chunks(header, body)
    names = [r["name"] for r in header["tensors"]]
    k = (names.index(key[0]), key[1])
    chunks[k] = fn(chunks[k])
    return _rebuild(header, chunks)


def _t(name):
    return lambda h: _record(h, name)


CASES = {
    "empty": (lambda d: b"", ModelFormatError, "too short"),
    "not a pnz": (lambda d: b"PK\x03\x04" + d[4:], ModelFormatError, "not a .pnz file"),
    "newer version": (lambda d: _join(*_split(d), version=2), ModelFormatError, "upgrade prunus"),
    "flags": (lambda d: _join(*_split(d), flags=1), ModelFormatError, "unknown flags"),
    "header length": (lambda d: d[:12] + struct.pack("<I", 2**31) + d[16:], ModelFormatError, "claims"),
    "header checksum": (lambda d: d[:30] + bytes([d[30] ^ 1]) + d[31:], ChecksumError, "header does not match"),
    "section checksum": (lambda d: d[:-3] + bytes([d[-3] ^ 4]) + d[-2:], ChecksumError,
                         r"tensors\[5\] \('fc3.bias'\).sections.data does not match its checksum"),
    "truncated": (lambda d: d[:-1], ModelFormatError, "run past"),
    "extended": (lambda d: d + b"\0", ModelFormatError, "sections take"),
    "not json": (lambda d: _join(None, _split(d)[1], text=b"{nope"), ModelFormatError, "not valid JSON"),
    "NaN in json": (lambda d: _join(None, _split(d)[1], text=b'{"a":NaN}'), ModelFormatError, "NaN"),
    "header list": (lambda d: _join([], _split(d)[1]), ModelFormatError, "expected a JSON object"),
    "missing meta": (lambda d: _edit(d, lambda h: h.pop("meta")), ModelFormatError, r"missing \['meta'\]"),
    "extra key": (lambda d: _edit(d, lambda h: h.update(code="x")), ModelFormatError, "unexpected"),
    "meta list": (lambda d: _edit(d, lambda h: h.update(meta=[])), ModelFormatError, "meta"),
    "unknown model": (lambda d: _edit(d, lambda h: h["arch"].update(model="os.system")),
                      ModelFormatError, "not one of prunus's models"),
    "huge kwarg": (lambda d: _edit(d, lambda h: h["arch"]["kwargs"].update(num_classes=2**40)),
                   ModelFormatError, "within"),
    "bad kwarg": (lambda d: _edit(d, lambda h: h["arch"]["kwargs"].update(num_classes=-3)),
                  ModelFormatError, r"get_model\('lenet_300_100'.*failed"),
    "other model": (lambda d: _edit(d, lambda h: h["arch"].update(model="lenet5")),
                    ModelFormatError, "do not match lenet5's state dict"),
    "kind": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(kind="sparse")),
             ModelFormatError, r"tensors\[0\].kind: expected one of"),
    "dtype": (lambda d: _edit(d, lambda h: _t("fc1.bias")(h).update(dtype="float128")),
              ModelFormatError, "unknown dtype"),
    "integer shared": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(dtype="int32")),
                       ModelFormatError, "must be floating point"),
    "dense size": (lambda d: _edit(d, lambda h: _t("fc3.bias")(h).update(shape=[11])),
                   ModelFormatError, "do not hold a float32"),
    "shape vs model": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(shape=[300, 785])),
                       ModelFormatError, r"fc1.weight'\).shape: \[300, 785\], but the model's"),
    "renamed": (lambda d: _edit(d, lambda h: _t("fc3.bias")(h).update(name="fc4.bias")),
                ModelFormatError, "do not match lenet_300_100's state dict"),
    "duplicate": (lambda d: _edit(d, lambda h: _t("fc3.bias")(h).update(name="fc2.bias")),
                  ModelFormatError, "listed twice"),
    "gap": (lambda d: _edit(d, lambda h: _t("fc2.bias")(h)["sections"]["data"].__setitem__(0, 1)),
            ModelFormatError, "without gaps"),
    "bad crc field": (lambda d: _edit(d, lambda h: _t("fc2.bias")(h)["sections"]["data"].__setitem__(2, -1)),
                      ModelFormatError, r"sections.data\[2\]"),
    "entries past numel": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(entries=10**9)),
                           ModelFormatError, "entries: expected an integer"),
    "fillers": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(nonzero=1)),
                ModelFormatError, "fillers cannot occur"),
    "kept count": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(
        nonzero=_t("fc1.weight")(h)["nonzero"] - 1)), ModelFormatError, "kept positions"),
    "nbits vs bytes": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(
        index_nbits=_t("fc1.weight")(h)["index_nbits"] + 8)), ModelFormatError, "bits need"),
    "bool nbits": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(value_nbits=True)),
                   ModelFormatError, "value_nbits: expected an integer"),
    "k vs codebook": (lambda d: _edit(d, lambda h: _t("fc1.weight")(h).update(k=17)),
                      ModelFormatError, "do not hold 17 float32 centroids"),
    "huffman table": (lambda d: _edit_chunk(d, ("fc1.weight", "index_table"), lambda b: b"\x02" + b[1:]),
                      ModelFormatError, r"index_table: huffman table: unknown version"),
    "table alphabet": (lambda d: _edit_chunk(d, ("fc1.weight", "value_table"), lambda b: huffman.table_bytes(
                           huffman.code_for(np.arange(64)))),
                       ModelFormatError, "over 64 symbols; the stream has 17"),
    "value stream": (lambda d: _edit_chunk(d, ("fc1.weight", "value"), lambda b: b[::-1]),
                     ModelFormatError, r"fc1.weight'\)"),
    "index stream": (lambda d: _edit_chunk(d, ("fc2.weight", "index"), lambda b: bytes(255 - x for x in b)),
                     ModelFormatError, r"fc2.weight'\)"),
    "flags length": (lambda d: _edit_chunk(d, ("fc2.weight", "flags"), lambda b: b + b"\0"),
                     ModelFormatError, "flag bytes"),
    "values length": (lambda d: _edit_chunk(d, ("fc2.weight", "values"), lambda b: b[:-4]),
                      ModelFormatError, "do not hold"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_files_raise_format_errors_naming_the_problem(small_pnz, case):
    mutate, err, match = CASES[case]
    with pytest.raises(err, match=match):
        container.loads(mutate(small_pnz))


def test_load_names_the_file_and_missing_files(tmp_path, small_pnz):
    path = tmp_path / "bad.pnz"
    path.write_bytes(small_pnz[:-1])
    with pytest.raises(ModelFormatError, match=re.escape(f"compression.load({str(path)!r})")):
        container.load(path)
    with pytest.raises(ModelFormatError, match="read_info"):
        container.read_info(path)
    with pytest.raises(FileNotFoundError):
        container.load(tmp_path / "missing.pnz")
    with pytest.raises(ArgumentError, match="expected bytes"):
        container.loads("not bytes")
    # a checkpoint is not a .pnz
    ckpt = tmp_path / "c.safetensors"
    serialization.save({"w": prunus.zeros(3)}, ckpt)
    with pytest.raises(ModelFormatError, match="not a .pnz file"):
        container.load(ckpt)


def test_loading_runs_no_code_from_the_file(small_pnz, monkeypatch):
    imported = []
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    monkeypatch.setattr(importlib, "import_module", lambda *a, **k: pytest.fail("import_module called"))
    container.loads(small_pnz)
    assert not {"pickle", "marshal", "subprocess", "os", "importlib"} & set(imported), imported
    for model in ("os", "builtins.eval", "__import__", "prunus.models.lenet.LeNet5"):
        with pytest.raises(ModelFormatError, match="not one of prunus's models"):
            container.loads(_edit(small_pnz, lambda h, model=model: h["arch"].update(model=model)))


# -- fuzz ------------------------------------------------------------------------------------------

_POOL = [None, True, False, 0, 1, -1, 2, 7, 255, 2**31, 2**63, 10**30, 0.5, -2.5, 1e308, "", "x",
         "shared", "pruned", "dense", "float32", "float16", "bfloat16", "bool", "int64", "lenet5",
         "lenet_300_100", "resnet_small", "os.system", "fc1.weight", "fc3.bias", [], [0], [0, 1],
         [0, 0, 0], [0, 10**9, 0], [300, 784], [[]], {}, {"model": "lenet5", "kwargs": {}},
         {"num_classes": 3}, {"data": [0, 0, 0]}, {"float": "nan"}]
_NAMES = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias", "codebook",
          "index", "value", "flags", "values", "data", "kind", "shape", "entries", "nonzero", "k",
          "index_bits", "index_nbits", "value_nbits", "model", "kwargs", "num_classes"]


class _Fuzzer:
    """Mutated copies of one valid .pnz file, by kind: 0 byte flips, 1 truncation, 2 bytes inserted
    or deleted, 3-5 one edit of the JSON header and 6 three edits (re-signed, so that they reach
    the checks behind the checksum), 7 edits of one section's bytes with every offset, length and
    CRC recomputed (so that they reach the Huffman and sparse-index decoders), 8 edits of the
    prefix's fields. The base's JSON is parsed once: the fuzz spends its time loading."""

    KINDS = 9

    def __init__(self, data: bytes, seed: int):
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.header, self.body = _split(data)
        self.header_end = len(data) - len(self.body)
        self.text = json.dumps(self.header)
        self.paths = json_paths(self.header)
        self.keys = list(_chunks(self.header, self.body))

    def mutate(self, kind: int) -> bytes:
        rng, data = self.rng, self.data
        if kind < 3:  # byte flips (half in the prefix and header), a truncation, bytes in or out
            return mutate_bytes(rng, data, kind, self.header_end)
        if kind < 7:
            h = json.loads(self.text)
            for _ in range(1 if kind < 6 else 3):
                h = mutate_json(rng, h, self.paths, _POOL, _NAMES, _NAMES)
            return _join(h, self.body)
        if kind == 7:
            h = json.loads(self.text)
            chunks = _chunks(h, self.body)
            key = pick(rng, self.keys)
            b = bytearray(chunks[key])
            r = rng.random()
            if r < 0.4 and b:
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
            elif r < 0.6:
                i = int(rng.integers(len(b) + 1))
                b[i:i] = rng.bytes(int(rng.integers(1, 4)))
            elif r < 0.8 and b:
                i = int(rng.integers(len(b)))
                del b[i : i + int(rng.integers(1, 4))]
            else:
                b = bytearray(chunks[pick(rng, self.keys)])  # another section's bytes
            chunks[key] = bytes(b)
            if rng.random() < 0.3:  # and a count to go with it
                rec = h["tensors"][key[0]]
                for f in ("entries", "nonzero", "index_nbits", "value_nbits", "k"):
                    if f in rec and rng.random() < 0.5:
                        rec[f] += int(rng.integers(-3, 4))
            return _rebuild(h, chunks)
        magic, version, flags, hlen, crc = _PREFIX.unpack_from(data)
        field = int(rng.integers(4))
        if field == 0:
            version = (version + int(rng.integers(1, 65536))) % 65536
        elif field == 1:
            flags = int(rng.integers(1, 65536))
        elif field == 2:
            hlen = max(0, hlen + pick(rng, [-1, 1]) * int(rng.integers(1, 40)))
        else:
            crc ^= int(rng.integers(1, 2**32))
        return _PREFIX.pack(magic, version, flags, hlen, crc) + data[_PREFIX.size :]



def test_fuzzed_files_raise_only_format_errors(small_pnz):
    container.loads(small_pnz)  # the base itself is valid
    fuzzer = _Fuzzer(small_pnz, seed=20261201)
    n_files = 10_000
    outcomes, summary, unexpected = fuzz(container.loads, fuzzer, n_files, ModelFormatError, 120)
    print(summary)
    assert {o for _, o in outcomes} <= {"loaded", "ModelFormatError", "ChecksumError"}, (unexpected, summary)
    # the mutations bite: damage outside the JSON is always caught (every byte is under a CRC,
    # and the prefix has no spare field); JSON edits may hit the free-form meta and load
    assert sum(v for (k, o), v in outcomes.items() if k in (0, 1, 2, 8) and o == "loaded") == 0, summary
    rejected = sum(v for (_, o), v in outcomes.items() if o != "loaded")
    assert rejected > 0.8 * n_files, summary
    # section edits reach the decoders: most become format errors, not checksum errors
    by_kind7 = {o: v for (k, o), v in outcomes.items() if k == 7}
    assert by_kind7.get("ModelFormatError", 0) > 0.5 * sum(by_kind7.values()), summary
    # and every flipped bit after the header is a checksum error
    _, body = _split(small_pnz)
    start = len(small_pnz) - len(body)
    rng = np.random.default_rng(7)
    for _ in range(200):
        b = bytearray(small_pnz)
        b[int(rng.integers(start, len(b)))] ^= 1 << int(rng.integers(8))
        with pytest.raises(ChecksumError):
            container.loads(bytes(b))

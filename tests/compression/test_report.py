"""The compression report: the paper's per-layer table for a known small model, every size and rate
traced back to the bytes of the written .pnz file, the CSV, the accuracy line, and the weight
distribution plots (a real PNG; TensorBoard histograms readable by TensorBoard's own reader)."""

from __future__ import annotations

import builtins
import csv
import json
import struct

import numpy as np
import pytest

import prunus
from prunus import models
from prunus.compression import container, report
from prunus.compression.pruning import prune_magnitude
from prunus.compression.weight_sharing import quantize
from prunus.errors import ArgumentError, MissingDependencyError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _model():
    """fc1 and fc2 pruned to 8% / 9% and quantized to 6 bits, fc3 pruned to 26% only."""
    prunus.manual_seed(0)
    m = models.lenet_300_100()
    for name, s in (("fc1", 0.92), ("fc2", 0.91), ("fc3", 0.74)):
        prune_magnitude(getattr(m, name), sparsity=s)
    quantize(m.fc1, bits=6)
    quantize(m.fc2, bits=6)
    return m


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "lenet300.pnz"
    info = container.save(_model(), path, arch="lenet_300_100", index_bits={"fc3.weight": 4})
    return path, info


def _section_bytes(data: bytes) -> tuple:
    """{tensor name: bytes of its sections} and the prefix + header size, read from the file."""
    hlen = struct.unpack_from("<I", data, 12)[0]
    header = json.loads(data[20 : 20 + hlen])
    sizes = {r["name"]: sum(n for _, n, _ in r["sections"].values()) for r in header["tensors"]}
    return sizes, 20 + hlen


def test_table_has_the_papers_columns_and_rows(saved):
    _, info = saved
    text = report.format_table(info)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "#weights", "weights%"]
    assert "(P+Q+H)" in lines[1] and "(P)" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("fc", "biases", "total"))}
    assert rows["fc1"][:3] == ["fc1", "235,200", "8.0%"]
    assert rows["fc1"][3] == "6" and rows["fc1"][5] == "5"  # weight bits P+Q, index bits P+Q
    assert rows["fc2"][:4] == ["fc2", "30,000", "9.0%", "6"]
    assert rows["fc3"][:4] == ["fc3", "1,000", "26.0%", "32"] and rows["fc3"][5] == "4"
    assert "total (weights)" in text and "266,200" in text and "biases & other" in text
    assert f"{info.file_bytes:,}" in text
    assert "rate = 32-bit dense bytes / compressed bytes" in text


def test_sizes_and_rates_come_from_the_file_bytes(saved):
    path, info = saved
    data = path.read_bytes()
    sizes, overhead = _section_bytes(data)
    rows = {r.layer: r for r in report.report_rows(info)}
    for layer in ("fc1", "fc2", "fc3"):
        r = rows[layer]
        assert r.bytes == sizes[f"{layer}.weight"]
        assert r.dense32_bytes == 4 * r.weights
        assert r.rate == pytest.approx(4 * r.weights / sizes[f"{layer}.weight"])
        assert r.kept == info[f"{layer}.weight"].nonzero
    # quantized layers: Huffman coding helps, and both rates are far above 1
    for layer in ("fc1", "fc2"):
        assert rows[layer].rate > rows[layer].rate_raw > 10
        assert rows[layer].weight_bits_huffman < 6 and rows[layer].index_bits_huffman < 5
    total_w = rows["total (weights)"]
    assert total_w.bytes == sum(sizes[f"fc{i}.weight"] for i in (1, 2, 3))
    assert total_w.weights == 266_200
    biases = rows["biases & other"]
    assert biases.bytes == biases.dense32_bytes == 4 * 410 and biases.rate == 1.0
    total = rows["total (file)"]
    assert total.bytes == len(data) == sum(sizes.values()) + overhead
    assert total.dense32_bytes == 4 * 266_610
    assert total.rate == pytest.approx(4 * 266_610 / len(data))
    # without Huffman coding the prefix and header are counted too, only the streams change
    raw = sum(t.raw_bytes for t in info) + overhead
    assert total.bytes_raw == raw and total.bytes_raw > total.bytes
    assert total_w.rate > total.rate  # biases and the header cost something


def test_accuracy_line_and_errors(saved):
    _, info = saved
    text = report.format_table(info, {"baseline": 0.9836, "pruned": 0.9842, "compressed": 0.984})
    last = text.splitlines()[-1]
    assert last == ("top-1 accuracy: baseline 98.36% (error 1.64%) -> pruned 98.42% (error 1.58%) "
                    "-> compressed 98.40% (error 1.60%)")
    for bad in ({"baseline": 98.4}, {"x": "high"}, {"x": True}, [0.9]):
        with pytest.raises(ArgumentError, match="accurac"):
            report.format_table(info, bad)
    with pytest.raises(ArgumentError, match="CompressedInfo"):
        report.format_table({"fc1": 1})


def test_csv(saved, tmp_path):
    _, info = saved
    path = tmp_path / "table.csv"
    report.write_csv(info, path, accuracies={"baseline": 0.98, "compressed": 0.975})
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == ["fc1", "fc2", "fc3", "total (weights)", "biases & other",
                                          "total (file)", "accuracy: baseline", "accuracy: compressed"]
    by = {r["layer"]: r for r in rows}
    table = {r.layer: r for r in report.report_rows(info)}
    for layer in ("fc1", "fc3", "total (file)"):
        assert int(by[layer]["bytes_pqh"]) == table[layer].bytes
        assert int(by[layer]["bytes_pq"]) == table[layer].bytes_raw
        assert float(by[layer]["rate_pqh"]) == table[layer].rate
    assert by["fc1"]["weight_bits_pq"] == "6.0" and by["fc1"]["index_bits_pq"] == "5.0"
    assert by["total (weights)"]["weight_bits_pq"] == ""
    assert int(by["total (file)"]["bytes_pqh"]) == info.file_bytes
    assert float(by["accuracy: compressed"]["accuracy"]) == 0.975
    assert by["fc1"]["accuracy"] == ""


def test_dense_model_table():
    prunus.manual_seed(0)
    info = container.read_info_bytes(container.dumps(models.lenet5(), arch="lenet5"))
    rows = {r.layer: r for r in report.report_rows(info)}
    assert set(rows) == {"conv1", "conv2", "fc1", "fc2", "total (weights)", "biases & other",
                         "total (file)"}
    assert rows["conv2"].rate == 1.0 and rows["conv2"].index_bits is None
    assert rows["total (weights)"].weights == 430_500 and rows["biases & other"].weights == 580
    assert "-" in report.format_table(info)


def _stages():
    prunus.manual_seed(0)
    m = models.lenet_300_100()
    before = report.layer_weights(m, "fc1.weight")
    prune_magnitude(m.fc1, sparsity=0.9)
    pruned = report.layer_weights(m, "fc1.weight")
    quantize(m.fc1, bits=4)
    quantized = report.layer_weights(m.fc1)  # a layer and its default tensor name work too
    return {"before pruning": before, "after pruning": pruned, "after quantization": quantized}


def test_layer_weights_are_the_used_weights():
    st = _stages()
    assert st["before pruning"].shape == (235_200,)
    assert np.count_nonzero(st["after pruning"]) == round(0.1 * 235_200)
    assert np.unique(st["after quantization"][st["after quantization"] != 0]).size <= 16
    with pytest.raises(ArgumentError, match="no layer 'fc9'"):
        report.layer_weights(models.lenet_300_100(), "fc9.weight")
    with pytest.raises(ArgumentError, match="no tensor 'nope'"):
        report.layer_weights(models.lenet_300_100(), "fc1.nope")


def test_weight_histogram_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "fc1.png"
    report.plot_weight_histograms(_stages(), path, title="LeNet-300-100 fc1")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["fc1.png"]
    # an empty stage (everything pruned) and a constant one still plot
    report.plot_weight_histograms({"none left": np.zeros(5), "one value": [0.5, 0.5]}, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:8] == PNG_SIGNATURE
    for bad, match in [({}, "non-empty dict"), ({"s": ["a"]}, "must be numbers")]:
        with pytest.raises(ArgumentError, match=match):
            report.plot_weight_histograms(bad, tmp_path / "x.png")
    with pytest.raises(ArgumentError, match="bins"):
        report.plot_weight_histograms({"s": [1.0]}, tmp_path / "x.png", bins=0)


def test_missing_matplotlib_is_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match=r'pip install "prunus\[plot\]"'):
        report.plot_weight_histograms({"s": [1.0, 2.0]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_tensorboard_histograms(tmp_path):
    pytest.importorskip("tensorboardX")
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    stages = _stages()
    report.log_weight_histograms(stages, tmp_path, layer="fc1", step=3)
    acc = ea_mod.EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["histograms"])
    assert tags == {"compression/fc1/before_pruning", "compression/fc1/after_pruning",
                    "compression/fc1/after_quantization"}
    h = acc.Histograms("compression/fc1/after_pruning")
    assert h[0].step == 3 and h[0].histogram_value.num == np.count_nonzero(stages["after pruning"])

    class Writer:  # anything with add_histogram, e.g. a TensorBoardLogger's writer
        def __init__(self):
            self.calls = []

        def add_histogram(self, tag, values, step):
            self.calls.append((tag, values.size, step))

    w = Writer()
    report.log_weight_histograms({"after quantization": stages["after quantization"]}, w, layer="fc1")
    assert w.calls == [("compression/fc1/after_quantization", 23_520, 0)]
    with pytest.raises(ArgumentError, match="add_histogram"):
        report.log_weight_histograms(stages, 42)

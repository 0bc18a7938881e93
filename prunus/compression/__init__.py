"""Deep Compression (Han, Mao, Dally, ICLR 2016): pruning, weight sharing, sparse relative indices
and Huffman coding. Each stage is one module; the encoders here are pure (arrays and bytes in
and out) so the .pnz container can compose them. `prunus.compression.save` / `load` are the .pnz
file's (container.py); `format_table` prints the paper's per-layer table from a file's sizes."""

# pruning and weight sharing are parametrizations of a layer's weight (prunus.nn.parametrize)
from prunus.compression import (
    container,
    huffman,
    pipeline,  # the Deep Compression recipe
    pruning,
    report,
    sensitivity,  # per-layer sensitivity sweeps
    sparse_index,
    structured,  # filter pruning that shrinks the layers
    weight_sharing,
)
from prunus.compression.container import (
    CompressedInfo,
    TensorInfo,
    dumps,
    load,
    loads,
    read_info,
    read_info_bytes,
    save,
)
from prunus.compression.huffman import HuffmanCode
from prunus.compression.pipeline import CompressionResult, DeepCompressionRecipe, deep_compression
from prunus.compression.pruning import (
    PruningMask,
    dropout_rate,
    format_report,
    iterative_pruning,
    prune_global,
    prune_magnitude,
    pruning_report,
    sparsity,
)
from prunus.compression.report import (
    format_table,
    layer_weights,
    log_weight_histograms,
    plot_weight_histograms,
    report_rows,
    write_csv,
)
from prunus.compression.sensitivity import (
    SensitivityResult,
    sensitivity_analysis,
    sparsities_for_budget,
    sparsities_for_drop,
)
from prunus.compression.sparse_index import SparseIndex
from prunus.compression.structured import ChannelPruning, count_macs, prune_channels
from prunus.compression.weight_sharing import SharedWeights, kmeans1d, quantize, quantize_model


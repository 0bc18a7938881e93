"""Deep Compression (Han, Mao, Dally, ICLR 2016): pruning, weight sharing, sparse relative indices
and Huffman coding. Each stage is one module; the encoders here are pure (arrays and bytes in
and out) so the .pnz container can compose them."""

# pruning and weight sharing are parametrizations of a layer's weight (prunus.nn.parametrize)
from prunus.compression import huffman, pruning, sparse_index, weight_sharing
from prunus.compression.huffman import HuffmanCode
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
from prunus.compression.sparse_index import SparseIndex
from prunus.compression.weight_sharing import SharedWeights, kmeans1d, quantize, quantize_model

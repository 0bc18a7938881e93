"""Data loading: datasets, samplers, `DataLoader`, transforms, and ready-made datasets (MNIST).

Names and semantics follow `torch.utils.data` and `torchvision.transforms`.
"""

from prunus.data import datasets, transforms
from prunus.data.dataloader import DataLoader, default_collate
from prunus.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from prunus.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
)

"""Ready-made datasets: MNIST and FashionMNIST (read from IDX files, verified, optionally downloaded)."""

from prunus.data.datasets.mnist import MNIST, FashionMNIST

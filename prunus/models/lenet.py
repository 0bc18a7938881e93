"""LeNet-300-100 and LeNet-5 for 28x28 MNIST-like inputs, as in the Caffe models behind Han et al.
2015/2016 (Learning both Weights and Connections; Deep Compression). Layer names follow the papers'
tables: fc1..fc3 and conv1, conv2, fc1, fc2."""

from __future__ import annotations

from prunus import nn


class LeNet300100(nn.Module):
    """LeNet-300-100: a 784-300-100-num_classes multilayer perceptron with ReLU after each hidden
    layer (266,200 weights + 410 biases for 10 classes).

    Input: (N, 1, 28, 28) or (N, 784) -- everything after the batch dimension is flattened first.
    Output: (N, num_classes) logits. Layers start with prunus.nn.Linear's (PyTorch's) default
    initialisation, drawn from `generator` (the default generator when None)."""

    def __init__(self, num_classes: int = 10, generator=None):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300, generator=generator)
        self.fc2 = nn.Linear(300, 100, generator=generator)
        self.fc3 = nn.Linear(100, num_classes, generator=generator)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.flatten(x)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe's examples/mnist/lenet_train_test.prototxt (the model Han et al. prune):
    conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> flatten (800) -> fc 500 -> ReLU ->
    fc num_classes. 430,500 weights + 580 biases for 10 classes.

    Faithful to Caffe, there is no nonlinearity after the convolutions (only max pooling); the
    only ReLU is after fc1. Convolutions have no padding, stride 1.

    Input: (N, 1, 28, 28). Output: (N, num_classes) logits. Layers start with prunus.nn's
    (PyTorch's) default initialisation -- not Caffe's "xavier" filler -- drawn from `generator`
    (the default generator when None)."""

    def __init__(self, num_classes: int = 10, generator=None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, generator=generator)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5, generator=generator)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * 4 * 4, 500, generator=generator)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes, generator=generator)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


def lenet_300_100(num_classes: int = 10, generator=None) -> LeNet300100:
    """LeNet-300-100 (784-300-100-num_classes MLP); input (N, 1, 28, 28) or (N, 784)."""
    return LeNet300100(num_classes, generator=generator)


def lenet5(num_classes: int = 10, generator=None) -> LeNet5:
    """Caffe's LeNet-5 (conv20-pool-conv50-pool-fc500-relu-fc); input (N, 1, 28, 28)."""
    return LeNet5(num_classes, generator=generator)

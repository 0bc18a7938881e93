"""Optimizers (torch.optim's names and update rules) and learning-rate schedulers."""

from prunus.optim import lr_scheduler
from prunus.optim.adagrad import Adagrad
from prunus.optim.adam import Adam, AdamW
from prunus.optim.optimizer import Optimizer
from prunus.optim.rmsprop import RMSprop
from prunus.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]

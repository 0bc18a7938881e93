"""The training step the graph and compression tests compile and compare with eager: zero_grad,
cross-entropy, backward, optimizer step, returning the loss (shared by tests/graph and
tests/compression; tests/ is on pytest's pythonpath)."""

import prunus.nn.functional as F


def cross_entropy_step(model, opt, extra=None):
    """step(x, y) -> loss; `extra(model, loss)` may add terms to the loss before backward."""

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if extra is not None:
            loss = extra(model, loss)
        loss.backward()
        opt.step()
        return loss

    return step

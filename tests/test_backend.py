"""Devices: the CPU device, the lazy CUDA device and its clear error without CuPy/GPU, and the
device-generic checks that run on every device this machine has (cuda ones skip without a GPU)."""

import numpy as np
import pytest

import prunus
from prunus.backend import Device, cuda_is_available, get_device
from prunus.errors import DeviceError, DeviceUnavailableError

HAS_CUDA = cuda_is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs CuPy and a GPU")])]


def test_cpu_device():
    d = get_device("cpu")
    assert d is prunus.device("cpu") is get_device(None) and d.xp is np
    assert d == "cpu" and repr(d) == "device(type='cpu')" and d != "cuda"


def test_unknown_device_name():
    with pytest.raises(DeviceError, match="'tpu'"):
        get_device("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_cuda_without_cupy_or_gpu_raises_one_clear_error():
    with pytest.raises(DeviceUnavailableError, match=r"prunus\[cuda\]|GPU"):
        prunus.zeros(2, device="cuda")
    with pytest.raises(DeviceUnavailableError):
        prunus.ones(2).to("cuda")
    assert not cuda_is_available()


def test_no_op_module_imports_numpy_for_array_math():
    import pathlib
    import re

    ops = pathlib.Path(prunus.__file__).parent / "ops"
    for path in ops.glob("*.py"):
        src = path.read_text()
        # indexing.py converts Python index lists with NumPy on the host; nothing computes with it
        allowed = path.name == "indexing.py"
        if re.search(r"^\s*(import|from)\s+(numpy|cupy)", src, re.MULTILINE):
            assert allowed, f"{path.name} imports numpy/cupy directly"


@pytest.mark.parametrize("device", DEVICES)
def test_device_generic_training_math(device):
    rng = np.random.default_rng(0)
    w = prunus.tensor(rng.standard_normal((4, 3)), device=device, requires_grad=True)
    x = prunus.tensor(rng.standard_normal((5, 4)), device=device)
    loss = prunus.log_softmax(x @ w, 1).mean()
    loss.backward()
    assert w.grad.device == device and w.grad.shape == (4, 3)
    ref = prunus.tensor(w.detach().numpy() if device == "cpu" else w.detach().cpu().numpy(), requires_grad=True)
    prunus.log_softmax(prunus.tensor(x.cpu().numpy()) @ ref, 1).mean().backward()
    np.testing.assert_allclose(w.grad.cpu().numpy(), ref.grad.numpy(), rtol=1e-10)


def test_fake_device_mix_is_refused():
    fake = Device("fake", None, np, get_device("cpu").kernels)
    a = prunus.ones(2)
    b = prunus.Tensor._make(np.ones(2, np.float32), fake, False, None)
    with pytest.raises(DeviceError, match="cpu.*fake|fake.*cpu"):
        a + b


def test_tensors_and_modules_deep_copy_with_their_device():
    import copy

    t = prunus.randn(3)
    c = copy.deepcopy(t)
    assert c.device is t.device and c.data is not t.data
    np.testing.assert_array_equal(c.numpy(), t.numpy())
    bn = prunus.nn.BatchNorm1d(4)
    assert copy.deepcopy(bn).running_mean.device is bn.running_mean.device

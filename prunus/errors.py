"""Error classes of prunus, each with a stable `code`.

Every error a user can cause by bad input is one of these. Each is also a subclass of the built-in
exception a Python user would expect (ValueError, TypeError, IndexError, RuntimeError), so
`except ValueError` keeps working. Messages name the op or layer, the shapes/dtypes and the axis.
"""


class PrunusError(Exception):
    """Base class of every prunus error."""

    code = "prunus"


class ShapeError(PrunusError, ValueError):
    """Shapes that do not fit the op: broadcasting, matmul, reshape, cat, ..."""

    code = "shape"


class DTypeError(PrunusError, TypeError):
    """A dtype the op does not accept, or dtypes that cannot be mixed."""

    code = "dtype"


class DeviceError(PrunusError, ValueError):
    """Tensors on different devices, or an unknown device name."""

    code = "device"


class DeviceUnavailableError(DeviceError):
    """The device exists in prunus but not on this machine (no CuPy, no GPU)."""

    code = "device_unavailable"


class IndexOutOfRangeError(PrunusError, ValueError, IndexError):
    """An index or dimension outside a tensor's bounds.

    Also an IndexError, as in PyTorch and NumPy, so `except IndexError` still works.
    """

    code = "index"


class ArgumentError(PrunusError, ValueError):
    """A non-tensor argument with a bad value (negative size, unknown mode, ...)."""

    code = "argument"


class AutogradError(PrunusError, RuntimeError):
    """Misuse of the autograd engine: freed graph, non-scalar backward, in-place on a graph leaf."""

    code = "autograd"


class AnomalyError(AutogradError):
    """Raised in `detect_anomaly()` mode when a backward produces NaN or Inf."""

    code = "anomaly"


class GradcheckError(AutogradError):
    """Analytic and numerical gradients disagree in `gradcheck`."""

    code = "gradcheck"


class CaptureError(PrunusError, RuntimeError):
    """A function that can't be captured into a static graph as written: Python control flow on
    tensor values, unsupported return values, nested captures."""

    code = "capture"


class StateDictError(PrunusError, ValueError, RuntimeError):
    """load_state_dict found missing, unexpected or mis-shaped keys; the message lists them all,
    with expected and got shapes. Also a RuntimeError, which is what PyTorch raises."""

    code = "state_dict"


class ModelFormatError(PrunusError, ValueError):
    """A file that is not a valid prunus file: bad magic, version, structure or offsets."""

    code = "format"


class ChecksumError(ModelFormatError):
    """A file whose content does not match its recorded checksum."""

    code = "checksum"


class NonFiniteError(PrunusError, RuntimeError):
    """A value that must be finite is NaN or Inf (e.g. the gradient norm in clip_grad_norm_)."""

    code = "nonfinite"


class DatasetNotFoundError(PrunusError, FileNotFoundError):
    """Dataset files are missing (and downloading was not allowed or failed); says where to put them."""

    code = "dataset_not_found"


class MissingDependencyError(PrunusError, ImportError):
    """An optional feature's package is not installed; the message names the extra to install
    (`pip install "prunus[tensorboard]"`). Also an ImportError, so `except ImportError` works."""

    code = "missing_dependency"


def fmt_shape(shape) -> str:
    """A shape as PyTorch prints it: (2, 3)."""
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"

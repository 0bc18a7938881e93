"""prunus.nn.parametrize: the shorter name of prunus.nn.utils.parametrize (the code lives there, in
PyTorch's place), kept for code that imports it by this name."""

from prunus.nn.utils.parametrize import (
    ParametrizationList,
    cached,
    is_parametrized,
    register_parametrization,
    remove_all_parametrizations,
    remove_parametrizations,
)

__all__ = [
    "ParametrizationList",
    "cached",
    "is_parametrized",
    "register_parametrization",
    "remove_all_parametrizations",
    "remove_parametrizations",
]

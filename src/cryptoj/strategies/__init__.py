"""Built-in strategies and their registry.

``BUILTINS`` maps a name (what ``strategy.name`` / ``--strategy`` accepts) to
``module:Class``; modules are imported only when asked for, so listing the
built-ins costs nothing. :func:`cryptoj.strategy.load_strategy` resolves names here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from cryptoj.errors import ConfigError

if TYPE_CHECKING:
    from cryptoj.strategy import Strategy

__all__ = ["BUILTINS", "builtin"]

BUILTINS: Final[dict[str, str]] = {
    "sma_cross": "cryptoj.strategies.sma_cross:SmaCross",
    "rsi_reversion": "cryptoj.strategies.rsi_reversion:RsiReversion",
    "dynamic_weights": "cryptoj.strategies.dynamic_weights:DynamicWeights",
}


def builtin(name: str) -> type[Strategy]:
    """The built-in strategy class registered as ``name``."""
    target = BUILTINS.get(name)
    if target is None:
        raise ConfigError([("strategy.name", f"unknown built-in strategy {name!r}; built-ins: {', '.join(sorted(BUILTINS))}")])
    module_name, _, class_name = target.partition(":")
    cls: type[Strategy] = getattr(importlib.import_module(module_name), class_name)
    return cls

"""CryptoJ Trader: an async automated cryptocurrency trading system.

Coinbase Advanced Trade first; a local simulator that speaks the same protocol;
one engine for live, paper, simulator and backtest modes.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

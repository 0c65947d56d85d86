"""The local Coinbase simulator: matching engine, exchange accounts, synthetic market, server.

* :mod:`~cryptoj.venues.simulated.matching` — the pure price-time-priority matching engine
  (also used by paper trading and backtests).
* :mod:`~cryptoj.venues.simulated.exchange` — :class:`~cryptoj.venues.simulated.exchange.SimExchange`:
  accounts, holds, fees, product rules and order records on top of the engines.
"""

"""Backtesting: historical bars (:mod:`~cryptoj.backtest.data`), the bar fill model
(:mod:`~cryptoj.backtest.fills`), the runner (:mod:`~cryptoj.backtest.runner`), metrics
(:mod:`~cryptoj.backtest.metrics`), the HTML report (:mod:`~cryptoj.backtest.report`) and the
candle downloader (:mod:`~cryptoj.backtest.download`). See ``docs/backtesting.md``.

Import the submodules directly; this package module imports nothing so that
``cryptoj data download`` does not pay for the strategy machinery.
"""

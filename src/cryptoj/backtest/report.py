"""A self-contained HTML report of a backtest: opens offline, no scripts or fonts fetched from anywhere.

Contents: the metrics table, the parameters, the equity curve, the drawdown
curve, the price of each product with entry (▲ buy) and exit (▼ sell) markers,
monthly returns and the trade list. Charts are inline SVG drawn here; the data
behind them is embedded as JSON (``<script type="application/json"
id="cryptoj-report-data">``) so tools and tests can read exactly what is drawn.

Long series are reduced for drawing to at most ``max_points`` points per chart,
keeping each bucket's first, lowest and highest points (so peaks and troughs —
and so the drawdowns — survive); the metrics are always computed from the full data.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptoj.backtest.metrics import utc
from cryptoj.backtest.runner import BacktestResult
from cryptoj.model.money import Side

__all__ = ["DATA_ELEMENT_ID", "downsample", "monthly_returns", "render_report", "write_report"]

DATA_ELEMENT_ID = "cryptoj-report-data"
_W, _H, _PAD = 960, 260, 40
_MAX_TRADES = 500


def downsample(times: Sequence[int], values: Sequence[float], max_points: int) -> tuple[list[int], list[float]]:
    """At most ``max_points`` points (about): per bucket the first, the lowest and the highest, in time order."""
    n = len(times)
    if n <= max_points:
        return list(times), list(values)
    buckets = max(1, max_points // 3)
    size = -(-n // buckets)
    out_t: list[int] = []
    out_v: list[float] = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        idx = {lo}
        seg = values[lo:hi]
        idx.add(lo + seg.index(min(seg)))
        idx.add(lo + seg.index(max(seg)))
        for i in sorted(idx):
            out_t.append(times[i])
            out_v.append(values[i])
    if out_t[-1] != times[-1]:
        out_t.append(times[-1])
        out_v.append(values[-1])
    return out_t, out_v


def drawdown_curve(values: Sequence[float]) -> list[float]:
    """``equity / running peak - 1`` at each point (0 at a new peak, negative below it)."""
    out: list[float] = []
    peak = float("-inf")
    for v in values:
        peak = max(peak, v)
        out.append(v / peak - 1.0 if peak > 0 else 0.0)
    return out


def monthly_returns(times: Sequence[int], values: Sequence[float]) -> list[dict[str, Any]]:
    """Return of each calendar month (UTC): its last equity point over the previous month's last (the first: over the start)."""
    if not times:
        return []
    out: list[dict[str, Any]] = []
    prev = values[0]
    month: tuple[int, int] | None = None
    last = values[0]
    for t, v in zip(times[1:], values[1:], strict=True):
        d = utc(t - 1)  # a point at a bar's end belongs to the month the bar ran in
        key = (d.year, d.month)
        if month is not None and key != month:
            out.append({"year": month[0], "month": month[1], "return": last / prev - 1.0 if prev else 0.0})
            prev = last
        month = key
        last = v
    if month is not None:
        out.append({"year": month[0], "month": month[1], "return": last / prev - 1.0 if prev else 0.0})
    return out


def _scale(times: Sequence[int], values: Sequence[float]) -> tuple[Any, Any]:
    t0, t1 = (times[0], times[-1]) if times else (0, 1)
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if t1 == t0:
        t1 = t0 + 1
    if hi == lo:
        hi, lo = hi + 1.0, lo - 1.0

    def x(t: float) -> float:
        return round(_PAD + (t - t0) / (t1 - t0) * (_W - 2 * _PAD), 2)

    def y(v: float) -> float:
        return round(_H - _PAD - (v - lo) / (hi - lo) * (_H - 2 * _PAD), 2)

    return x, y


def _axis_labels(times: Sequence[int], values: Sequence[float], fmt: str) -> str:
    if not times:
        return ""
    lo, hi = min(values), max(values)
    first, last = utc(times[0]).strftime("%Y-%m-%d"), utc(times[-1]).strftime("%Y-%m-%d")
    return (
        f'<text x="{_PAD}" y="{_H - 8}" class="lbl">{first}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 8}" class="lbl" text-anchor="end">{last}</text>'
        f'<text x="4" y="{_PAD - 6}" class="lbl">{format(hi, fmt)}</text>'
        f'<text x="4" y="{_H - _PAD + 14}" class="lbl">{format(lo, fmt)}</text>'
    )


def _line_chart(chart_id: str, title: str, times: Sequence[int], values: Sequence[float], fmt: str, extra: str = "") -> str:
    x, y = _scale(times, values)
    points = " ".join(f"{x(t)},{y(v)}" for t, v in zip(times, values, strict=True))
    return (
        f'<h2>{html.escape(title)}</h2><svg id="{chart_id}" class="chart" viewBox="0 0 {_W} {_H}" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{html.escape(title)}">'
        f'<rect x="0" y="0" width="{_W}" height="{_H}" class="bg"/>'
        f'<polyline class="series" fill="none" points="{points}" data-points="{len(times)}"/>'
        f"{extra}{_axis_labels(times, values, fmt)}</svg>"
    )


def _price_chart(k: int, product_id: str, times: Sequence[int], closes: Sequence[float], markers: list[dict[str, Any]]) -> str:
    x, y = _scale(times, closes)
    shapes = []
    for m in markers:
        px, py = x(m["t"]), y(m["price"])
        if m["side"] == "BUY":
            pts = f"{px},{py - 7} {px - 5},{py + 3} {px + 5},{py + 3}"
        else:
            pts = f"{px},{py + 7} {px - 5},{py - 3} {px + 5},{py - 3}"
        shapes.append(
            f'<polygon class="marker {m["side"].lower()}" points="{pts}" data-side="{m["side"]}" '
            f'data-time="{m["t"]}" data-price="{m["price"]}"><title>{m["side"]} {m["size"]} @ {m["price"]}</title></polygon>'
        )
    return _line_chart(
        f"price-chart-{k}", f"{product_id} close with entries (▲) and exits (▼)", times, closes, ",.2f", "".join(shapes)
    )


def _monthly_table(months: list[dict[str, Any]]) -> str:
    if not months:
        return "<p>No complete month.</p>"
    years = sorted({m["year"] for m in months})
    by = {(m["year"], m["month"]): m["return"] for m in months}
    head = "".join(f"<th>{datetime(2000, i, 1, tzinfo=UTC).strftime('%b')}</th>" for i in range(1, 13))
    rows = []
    for year in years:
        cells = []
        for month in range(1, 13):
            r = by.get((year, month))
            if r is None:
                cells.append("<td></td>")
            else:
                cls = "pos" if r > 0 else "neg" if r < 0 else ""
                cells.append(f'<td class="{cls}" data-month="{year}-{month:02d}" data-return="{r!r}">{r * 100:.2f}%</td>')
        rows.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return f'<table id="monthly-returns"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _kv_table(table_id: str, rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{body}</table>'


def _trades_table(result: BacktestResult) -> str:
    trades = result.metrics.trade_list
    rows = []
    for t in trades[:_MAX_TRADES]:
        rows.append(
            "<tr>"
            f"<td>{html.escape(t.product_id)}</td><td>{t.entry_time.isoformat()}</td>"
            f"<td>{t.exit_time.isoformat() if t.exit_time else 'open'}</td><td>{t.quantity}</td>"
            f"<td>{t.entry_price:.8g}</td><td>{'' if t.exit_price is None else format(t.exit_price, '.8g')}</td>"
            f'<td class="{"pos" if t.pnl > 0 else "neg"}">{t.pnl:.2f}</td><td>{t.fees:.4f}</td>'
            "</tr>"
        )
    more = f"<p>First {_MAX_TRADES} of {len(trades)} trades shown (all are in the JSON).</p>" if len(trades) > _MAX_TRADES else ""
    names = ("product", "entry", "exit", "qty", "entry px", "exit px", "PnL", "fees")
    head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    return f'<table id="trades">{head}{"".join(rows)}</table>{more}'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f6f6f6;text-align:left}.pos{color:#0a7d2c}.neg{color:#b3261e}
svg.chart{width:100%;height:auto;border:1px solid #ddd}.bg{fill:#fff}.series{stroke:#1f5fbf;stroke-width:1.2}
#drawdown-chart .series{stroke:#b3261e}.marker.buy{fill:#0a7d2c}.marker.sell{fill:#b3261e}.lbl{font-size:11px;fill:#555}
"""


def render_report(result: BacktestResult, *, max_points: int = 2000, title: str | None = None) -> str:
    """The report as one HTML string (see the module doc)."""
    times, equity = result.curve_times, result.curve_equity
    et, ev = downsample(times, equity, max_points)
    dd = drawdown_curve(equity)
    dt, dv = downsample(times, dd, max_points)
    months = monthly_returns(times, equity)
    prices = []
    charts = []
    for k, s in enumerate(result.series):
        closes = [float(c) for c in s.close]
        ends = [t + s.step for t in s.times]
        pt, pv = downsample(ends, closes, max_points)
        markers = [
            {
                "t": int(f.time.timestamp()),
                "price": float(f.price),
                "side": f.side.value,
                "size": str(f.size),
                "trade_id": f.trade_id,
            }
            for f in result.fills
            if f.product_id == s.product_id
        ]
        prices.append({"product_id": s.product_id, "times": pt, "close": pv, "markers": markers})
        charts.append(_price_chart(k, s.product_id, pt, pv, markers))
    data = {
        "strategy": result.strategy,
        "params": {k: str(v) for k, v in result.params.items()},
        "metrics": result.metrics.to_json(),
        "equity": {"times": et, "values": ev},
        "drawdown": {"times": dt, "values": dv},
        "prices": prices,
        "monthly_returns": months,
        "buys": sum(1 for f in result.fills if f.side is Side.BUY),
        "sells": sum(1 for f in result.fills if f.side is Side.SELL),
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    name = title or f"Backtest: {result.strategy} on {', '.join(result.products)}"
    span = f"{utc(times[0]).isoformat()} → {utc(times[-1]).isoformat()}" if times else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(name)}</h1>",
        f"<p>{html.escape(span)} · {result.bars:,} bars · {len(result.fills):,} fills · {result.bars_per_second:,.0f} bars/s</p>",
        "<h2>Metrics</h2>",
        _kv_table("metrics", result.metrics.rows()),
        "<h2>Parameters</h2>",
        _kv_table(
            "parameters", [(k, ", ".join(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in result.params.items()]
        ),
        _line_chart("equity-chart", "Equity", et, ev, ",.2f"),
        _line_chart("drawdown-chart", "Drawdown", dt, [v * 100 for v in dv], ".2f"),
        *charts,
        "<h2>Monthly returns</h2>",
        _monthly_table(months),
        "<h2>Trades</h2>",
        _trades_table(result),
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{payload}</script>',
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: BacktestResult, path: Path | str, **kw: Any) -> Path:
    """Render and write the report; returns the path."""
    out = Path(path)
    out.write_text(render_report(result, **kw), encoding="utf-8")
    return out

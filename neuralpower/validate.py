"""Predicted against measured, network by network, in the same run: the error users care about."""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import kendalltau

from . import nets
from .measure import measure_fresh
from .predict import predict

TOTALS = ("runtime_ms", "power_w", "energy_mj")


def validate(predictor, names, input_shape=(1, 3, 224, 224), device="cpu", *,
             threads: int | None = None, target_s: float = 1.0, progress=None) -> dict:
    """Predict and measure each network named in ``names``. Returns ``{"networks": [...],
    "summary": {...}}``; each network has ``predicted``, ``measured`` and ``error_pct`` totals
    (error = predicted / measured - 1, in percent; None where either side is missing). The
    prediction is taken to the device's speed during the measurement (``speed``: the speed
    probe's time then over the predictor's reference; 1.0 without one) and made for the phase
    its small-ops probe says (``predict``'s ``ops_probe_ms``)."""
    rows = []
    for name in names if progress is None else progress(names):
        m = measure_fresh(name, input_shape, device, threads=threads, target_s=target_s)
        p = predict(nets.build(name), input_shape, predictor, network=name,
                    ops_probe_ms=m.get("reference_ops_ms"))
        # the prediction at the speed the device ran at meanwhile (a shared host varies)
        speed = predictor.speed(m.get("reference_ms"))
        predicted = {k: _number(v) for k, v in p.at_speed(speed).items()}
        measured = {k: m[k] for k in TOTALS}
        rows.append({
            "network": name, "predicted": predicted, "measured": measured,
            "error_pct": {k: _error(predicted[k], measured[k]) for k in TOTALS},
            "layers_unmodeled": int(p.totals.get("layers_unmodeled", 0)), "speed": speed,
            "reference_ms": m.get("reference_ms"), "reference_ops_ms": m.get("reference_ops_ms"),
            "measured_device": m["device"], "power_source": m["power_source"]})
    return {"device": predictor.card.get("device"), "measured_on": rows[0]["measured_device"]
            if rows else None, "networks": rows, "summary": summary(rows)}


def summary(rows) -> dict:
    """Median absolute error, share within +-10 %, and Kendall tau of the ordering, per total."""
    out = {}
    for k in TOTALS:
        pairs = [(r["predicted"][k], r["measured"][k]) for r in rows
                 if r["error_pct"][k] is not None]
        if not pairs:
            continue
        errors = np.array([abs(p / m - 1) * 100 for p, m in pairs])
        tau = kendalltau(*zip(*pairs)).statistic if len(pairs) > 1 else math.nan
        out[k] = {"n": len(pairs), "median_abs_error_pct": float(np.median(errors)),
                  "within_10_pct_share": float(np.mean(errors <= 10)),
                  "kendall_tau": None if math.isnan(tau) else float(tau)}
    return out


def plot(result: dict, path) -> None:
    """Predicted against measured runtime (log-log), with the +-10 % band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    pts = [(r["measured"]["runtime_ms"], r["predicted"]["runtime_ms"], r["network"])
           for r in result["networks"] if r["error_pct"]["runtime_ms"] is not None]
    fig, ax = plt.subplots(figsize=(6, 6))
    if pts:
        x, y, names = zip(*pts)
        lo, hi = min(x + y) / 1.5, max(x + y) * 1.5
        line = np.geomspace(lo, hi, 50)
        ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
        ax.plot(line, line, color="0.5", lw=1)
        ax.scatter(x, y, zorder=3)
        for xi, yi, n in zip(x, y, names):
            ax.annotate(n.split(":")[-1], (xi, yi), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 6, not 6x10^0
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)
        ax.tick_params(which="minor", labelsize=7)
        ax.legend(loc="upper left")
    s = result["summary"].get("runtime_ms", {})
    ax.set_title(f"{result['device']}: runtime, predicted vs measured\n"
                 f"median |error| {s.get('median_abs_error_pct', float('nan')):.1f} %, "
                 f"within ±10 %: {100 * s.get('within_10_pct_share', float('nan')):.0f} %",
                 fontsize=9)
    ax.set_xlabel("measured runtime (ms)")
    ax.set_ylabel("predicted runtime (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _number(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _error(predicted, measured):
    if predicted is None or measured is None or measured <= 0:
        return None
    return (predicted / measured - 1) * 100

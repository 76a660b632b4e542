"""Text and JSON views of predictions and scores. Every figure names its unit."""
from __future__ import annotations

import math

import pandas as pd

from . import inputs
from .features import CLOCK_TARGETS
from .predict import Prediction


def _clean(v):
    """JSON-safe scalar: NaN and inf become null, numpy numbers become Python numbers."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v, spec=".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


LAYER_KEYS = ["name", "kind", "op", "module", "input_shape", "output_shape", "macs",
              "runtime_ms", "power_w", "energy_mj", "modeled", "extrapolation", "subnormal_share"]


def outside_text(extrapolation) -> str:
    """The farthest feature outside the fitted range, short: ``in_channels 2.0x max``."""
    if not isinstance(extrapolation, list) or not extrapolation:
        return ""
    e = extrapolation[0]
    side = ("off" if e["feature"] == "combination"  # (Predictor.extrapolation)
            else "max" if e["value"] > e["seen"][1] else "min")
    how = f"{e['factor']:.3g}x" if e["factor"] is not None else f"{e['value']:g} vs"
    more = f" +{len(extrapolation) - 1}" if len(extrapolation) > 1 else ""
    return f"{e['feature']} {how} {side}{more}"


def prediction_json(p: Prediction, top: int = 5) -> dict:
    keys = LAYER_KEYS + [k for k in CLOCK_TARGETS if k in p.layers]  # (clocks.py)

    def records(df):
        return [{k: _clean(r.get(k)) for k in keys} for _, r in df.iterrows()]

    return {
        "network": p.network,
        "device": p.device,
        "mode": p.mode,
        "input": [inputs.text([s]) for s in p.input_shape],
        "totals": {k: _clean(v) for k, v in p.totals.items()},
        "layers": records(p.layers),
        "top": records(p.top(top)),
        "unmodeled": [{k: _clean(v) for k, v in r.items()} for r in p.unmodeled.to_dict("records")],
    }


def prediction_text(p: Prediction, top: int = 5) -> str:
    t = p.totals
    layers = p.modeled
    share_of = "energy_mj" if p.has_power else "runtime_ms"
    total = layers[share_of].sum()
    view = pd.DataFrame({
        "layer": layers.name,
        "kind": layers.kind,
        "shape": layers.input_shape + " -> " + layers.output_shape,
        "MMACs": layers.macs / 1e6,
        "runtime_ms": layers.runtime_ms,
        "power_w": layers.power_w,
        "energy_mj": layers.energy_mj,
        f"share_%({share_of})": 100 * layers[share_of] / total if total else float("nan"),
        "outside_fit": layers.extrapolation.map(outside_text),
    })
    if "gpu_ms" in layers:  # replayed from the host's and the GPU's clocks (clocks.py)
        view.insert(5, "host_ms", layers.host_ms)
        view.insert(6, "gpu_ms", layers.gpu_ms)
    fmt = {"MMACs": "{:.1f}".format, "runtime_ms": "{:.4f}".format, "power_w": "{:.1f}".format,
           "host_ms": "{:.4f}".format, "gpu_ms": "{:.4f}".format,
           "energy_mj": "{:.3f}".format, f"share_%({share_of})": "{:.1f}".format}
    step = ", one training step (forward + backward)" if p.mode == "train" else ""
    out = [f"{p.network} on {p.device}, input "
           f"{inputs.text(p.input_shape).replace(',', ', ')}{step}",
           "", view.to_string(index=False, formatters=fmt, na_rep="–"), ""]
    power_note = "" if p.has_power else " (this predictor has no power model for this device)"
    out.append(f"Total: runtime {_fmt(t['runtime_ms'])} ms, power {_fmt(t['power_w'], '.1f')} W, "
               f"energy {_fmt(t['energy_mj'])} mJ{power_note}")
    clocked = "gpu_ms" in p.layers  # (clocks.py: the host time of every op is in the replay)
    out.append(f"       over {t['layers_modeled']} modeled layers ({t['macs'] / 1e9:.2f} GMACs in the "
               f"network); {t['layers_unmodeled']} unmodeled ops not included"
               f"{' (but their host time)' if clocked else ''}; {t['layers_free']} view/allocation "
               f"ops cost {'their host time' if clocked else 'nothing'}")
    clocks_note = p.host_bound_note()
    if clocks_note:
        out.append(f"       {clocks_note}")
    if "traced" in p.layers.attrs:   # trace._trace's retry of a forward that reads values
        out.append(f"       traced {p.layers.attrs['traced']}")
    far = p.extrapolated
    if len(far):
        out.append(f"       {len(far)} {'layer lies' if len(far) == 1 else 'layers lie'} outside "
                   "the ranges the predictor was fitted on "
                   "(outside_fit: the farthest feature, times beyond the range seen); their "
                   "figures are extrapolated")
    out += subnormal_lines(p)
    top_rows = p.top(top)
    if len(top_rows):
        by = "energy" if p.has_power else "runtime"
        out += ["", f"Top {len(top_rows)} layers by {by}:"]
        for _, r in top_rows.iterrows():
            out.append(f"  {r['name']:<40} {r.kind:<11} {_fmt(r.runtime_ms, '.4f')} ms  "
                       f"{_fmt(r.energy_mj)} mJ  {100 * r[share_of] / total:5.1f} %")
    un = p.unmodeled
    if len(un):
        out += ["", "Unmodeled ops (no model for their kind on this predictor; not in the totals):",
                un.to_string(index=False, formatters={"macs_share_pct": "{:.1f}".format})]
    return "\n".join(out)


def subnormal_lines(p: Prediction) -> list[str]:
    """Say which layers meet subnormal numbers (subnormal.py) and what the predictor makes
    of it: the time it adds, or that it has no cost for them."""
    share = p.modeled.get("subnormal_share")
    hit = p.modeled[share.fillna(0) > 0] if share is not None else p.modeled.iloc[:0]
    if hit.empty:
        return []
    names = ", ".join(hit.name.head(3)) + (f" and {len(hit) - 3} more" if len(hit) > 3 else "")
    if p.subnormal_ms:
        return [f"       {len(hit)} layers meet subnormal numbers ({names}): this device's "
                f"cost for them adds about {_fmt(p.subnormal_ms)} ms to the runtime"]
    return [f"       {len(hit)} layers meet subnormal numbers ({names}); this predictor has no "
            "cost for them (its data had none), so they are predicted as plain layers"]


def scores_text(scores: dict) -> str:
    rows = [{"kind": k, "target": t, **s} for k, per in scores.items() for t, s in per.items()]
    return pd.DataFrame(rows).to_string(index=False, float_format="{:.2f}".format)


OFF_SPEED = 1.2  # validation_text flags measurements taken further off the reference speed


def validation_text(result: dict) -> str:
    """Predicted and measured totals per network, the errors, and the summary."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [f"predictor: {result['device']}; measured on: {result['measured_on']}", ""]
    table = pd.DataFrame([{
        "network": r["network"],
        "runtime_ms pred": fmt(r["predicted"]["runtime_ms"], ".2f"),
        "runtime_ms meas": fmt(r["measured"]["runtime_ms"], ".2f"),
        "err %": fmt(r["error_pct"]["runtime_ms"], "+.1f"),
        "power_w pred": fmt(r["predicted"]["power_w"], ".1f"),
        "power_w meas": fmt(r["measured"]["power_w"], ".1f"),
        "energy_mj pred": fmt(r["predicted"]["energy_mj"], ".1f"),
        "energy_mj meas": fmt(r["measured"]["energy_mj"], ".1f"),
        "energy err %": fmt(r["error_pct"]["energy_mj"], "+.1f"),
        "speed": fmt(r.get("speed"), ".2f"),
        "unmodeled layers": r["layers_unmodeled"]} for r in result["networks"]])
    lines.append(table.to_string(index=False))
    lines += ["(speed: the device's slowness during the measurement against the predictor's "
              "reference, from a fixed probe run between the repeats; predictions are scaled "
              "by it)", ""]
    off = [r["network"] for r in result["networks"]
           if r.get("speed") and not 1 / OFF_SPEED <= r["speed"] <= OFF_SPEED]
    if off:  # the probe's speed need not be the network's (benchmarks/results/probe_drift.md)
        lines += [f"note: {', '.join(off)} measured at a speed more than {OFF_SPEED:g}x off the "
                  "predictor's reference: its scaling is approximate there (on a shared host "
                  "networks of many small ops slow down more than the probe)", ""]
    for k, s in result["summary"].items():
        tau = "-" if s["kendall_tau"] is None else f"{s['kendall_tau']:.2f}"
        lines.append(f"{k}: median |error| {s['median_abs_error_pct']:.1f} %, within ±10 %: "
                     f"{100 * s['within_10_pct_share']:.0f} % of {s['n']}, Kendall tau {tau}")
    if not result["summary"].get("power_w"):
        lines.append(f"power: {result['networks'][0]['power_source'] if result['networks'] else ''}")
    return "\n".join(lines)

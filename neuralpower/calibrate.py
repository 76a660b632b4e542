"""Calibrate a predictor on real networks measured on its device.

The layer models learn from synthetic networks, where a small op sits among ops of every size;
in a real network it sits among ops like itself, and on the development CPU the small ops of
mobile networks ran 20-50 % faster than the synthetic campaign's layers of the same shape (the
large layers of ResNets and VGGs agree within a few per cent). A handful of real networks,
measured whole on the device, correct that: each kind's layer runtimes are scaled by

    exp(a_kind + b_kind * z),   z = log(runtime_ms / 0.1 ms), clipped to the z seen in fitting

so a kind's small and large layers can move by different amounts. ``a`` and ``b`` minimise the
squared log error of the networks' totals plus ``lambda * (a^2 + b^2)`` (no evidence: no change);
``lambda`` is chosen by leave-one-network-out cross-validation, and the error of that
cross-validation is what the calibration reports: the error to expect on networks it has not
seen. The correction is a few numbers per kind in the predictor's card (JSON: loading it runs
nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .errors import NeuralPowerError
from .features import ops_probe

REF_MS = 0.1
LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class Observed:
    """One network measured on the device: its modeled layers' kinds and predicted runtimes (ms,
    uncalibrated, at the predictor's reference speed), the measured total (ms) and the device's
    speed during the measurement (``Predictor.speed``)."""
    network: str
    kinds: np.ndarray
    runtime_ms: np.ndarray
    measured_ms: float
    speed: float = 1.0
    setting: str = ""   # the input, e.g. 1x3x224x224


def fit_calibration(observed: list[Observed], lambdas=LAMBDAS) -> dict:
    """The calibration of a predictor from measured networks (see the module docstring)."""
    if len({o.network for o in observed}) < 3:
        raise NeuralPowerError("calibration needs at least 3 different measured networks")
    kinds = sorted({str(k) for o in observed for k in o.kinds})
    cv = {lam: _cross_validated(observed, kinds, lam) for lam in lambdas}
    best = min(lambdas, key=lambda lam: float(np.mean(np.log1p(np.asarray(cv[lam]) / 100) ** 2)))
    theta, zrange = _fit(observed, kinds, best)
    before = [100 * (o.speed * o.runtime_ms.sum() / o.measured_ms - 1) for o in observed]
    per = [{"network": o.network, "input": o.setting, "measured_ms": o.measured_ms,
            "uncalibrated_error_pct": b, "cross_validated_error_pct": e}
           for o, b, e in zip(observed, before, cv[best])]
    return {
        "ref_ms": REF_MS, "lambda": best,
        "kinds": {k: {"a": float(theta[i]), "b": float(theta[len(kinds) + i]),
                      "z_range": [float(v) for v in zrange[k]]} for i, k in enumerate(kinds)},
        "networks": sorted({o.network for o in observed}), "measurements": len(observed),
        "uncalibrated_median_abs_error_pct": float(np.median(np.abs(before))),
        "cross_validated_median_abs_error_pct": float(np.median(np.abs(cv[best]))),
        "cross_validated_within_10_pct_share": float(np.mean(np.abs(cv[best]) <= 10)),
        "per_measurement": per,
    }


def apply(calibration: dict | None, kinds, runtime_ms: np.ndarray) -> np.ndarray:
    """Layer runtimes (ms) with the calibration's per-kind correction (unchanged without one,
    and for kinds it has no numbers for)."""
    if not calibration:
        return runtime_ms
    out = np.array(runtime_ms, dtype=float, copy=True)
    kinds = np.asarray(kinds)
    for kind, c in calibration["kinds"].items():
        at = (kinds == kind) & np.isfinite(out) & (out > 0)
        if at.any():
            out[at] = out[at] * _factor(c, out[at], calibration["ref_ms"])
    return out


def _factor(c: dict, runtime_ms: np.ndarray, ref_ms: float) -> np.ndarray:
    z = np.clip(np.log(runtime_ms / ref_ms), *c["z_range"])  # no extrapolation in size
    return np.exp(c["a"] + c["b"] * z)


def _fit(observed, kinds, lam):
    """(theta, z ranges): theta = a (one per kind) then b (one per kind), by L-BFGS with the
    exact gradient over all layers of all measurements at once."""
    index = {k: i for i, k in enumerate(kinds)}
    n = len(kinds)
    k = np.concatenate([[index[x] for x in o.kinds] for o in observed]).astype(int)
    z = np.concatenate([np.log(o.runtime_ms / REF_MS) for o in observed])
    t = np.concatenate([o.runtime_ms * o.speed for o in observed])
    obs = np.concatenate([np.full(len(o.kinds), j) for j, o in enumerate(observed)])
    log_m = np.log([o.measured_ms for o in observed])

    def loss(theta):
        # each layer, calibrated; a line search's trial step can be wild: the exponent is
        # capped so that it cannot overflow to inf (and the loss to NaN)
        e = t * np.exp(np.clip(theta[k] + theta[n + k] * z, -50.0, 50.0))
        total = np.bincount(obs, e, minlength=len(observed))
        r = np.log(total) - log_m
        w = (2 * r / total)[obs] * e                          # d loss / d log(layer)
        grad = np.concatenate([np.bincount(k, w, minlength=n),
                               np.bincount(k, w * z, minlength=n)]) + 2 * lam * theta
        return float(r @ r + lam * theta @ theta), grad

    theta = minimize(loss, np.zeros(2 * n), jac=True, method="L-BFGS-B").x
    zrange = {x: (float(z[k == i].min()), float(z[k == i].max())) if (k == i).any()
              else (0.0, 0.0) for x, i in index.items()}
    return theta, zrange


def _cross_validated(observed, kinds, lam) -> list[float]:
    """Percentage errors of each measurement (in order), predicted by a calibration fitted
    without its network (all of that network's input settings left out together)."""
    errors = [math.nan] * len(observed)
    for name in sorted({o.network for o in observed}):
        train = [o for o in observed if o.network != name]
        theta, zrange = _fit(train, kinds, lam)
        n = len(kinds)
        calibration = {"ref_ms": REF_MS, "kinds": {
            k: {"a": theta[i], "b": theta[n + i], "z_range": zrange[k]}
            for i, k in enumerate(kinds)}}
        for i, o in enumerate(observed):
            if o.network == name:
                t = apply(calibration, o.kinds, o.runtime_ms).sum() * o.speed
                errors[i] = 100 * (t / o.measured_ms - 1)
    return errors


def measure_networks(predictor, names, shapes, device="cpu", *, threads=None,
                     progress=None) -> list[Observed]:
    """Predict (without any calibration) and measure each network at each input shape."""
    from . import nets
    from .measure import measure_fresh
    from .predict import predict

    base = predictor.with_calibration(None)
    jobs = [(name, shape) for name in names for shape in shapes]
    observed = []
    for name, shape in jobs if progress is None else progress(jobs):
        m = measure_fresh(name, shape, device, threads=threads)
        p = predict(nets.build(name), shape, base, network=name,
                    ops_probe_ms=m.get("reference_ops_ms"))   # in the phase it was measured in
        layers = p.modeled
        observed.append(Observed(name, layers.kind.to_numpy(), layers.runtime_ms.to_numpy(),
                                 m["runtime_ms"], base.speed(m.get("reference_ms")),
                                 "x".join(map(str, shape))))
    return observed


def observed_in_data(data, predictor) -> list[Observed]:
    """The real networks a ``profile --zoo`` campaign measured whole (``network_runtime_ms`` on
    its rows; ids ``z<seed>-<index>-<NET>``), each traced again at its input (the first timed
    layer's) and predicted op by op, without any calibration. ``data`` at one speed
    (``data.at_reference_speed``: the speed is then 1)."""
    from . import nets
    from .predict import predict
    from .profiling import zoo

    if "network_runtime_ms" not in data.columns:
        return []
    base = predictor.with_calibration(None)
    whole = data[data.network_runtime_ms.notna()]
    inputs = zoo.network_inputs(whole)
    measured = whole.groupby("network").network_runtime_ms.median() if inputs else None
    probe = ops_probe(whole).groupby(whole.network).median().dropna()
    observed = []
    for net_id, shape in inputs.items():
        name = zoo.net_of(net_id)
        p = predict(nets.build(name), shape, base, network=name,
                    ops_probe_ms=probe.get(net_id))   # in the phase it was measured in
        layers = p.modeled
        observed.append(Observed(name, layers.kind.to_numpy(), layers.runtime_ms.to_numpy(),
                                 float(measured[net_id]), 1.0, "x".join(map(str, shape))))
    return observed


def calibration_text(cal: dict) -> str:
    """The measurements, their errors before and after (cross-validated), and the summary."""
    import pandas as pd

    table = pd.DataFrame([{
        "network": r["network"], "input": r["input"], "measured_ms": r["measured_ms"],
        "error % uncalibrated": r["uncalibrated_error_pct"],
        "error % calibrated (cross-validated)": r["cross_validated_error_pct"]}
        for r in cal["per_measurement"]])
    return "\n".join([
        table.to_string(index=False, formatters={
            "measured_ms": "{:.2f}".format, "error % uncalibrated": "{:+.1f}".format,
            "error % calibrated (cross-validated)": "{:+.1f}".format}),
        "",
        f"median |error| {cal['uncalibrated_median_abs_error_pct']:.1f} % uncalibrated, "
        f"{cal['cross_validated_median_abs_error_pct']:.1f} % calibrated (each network left out "
        f"of its own calibration); within ±10 %: "
        f"{100 * cal['cross_validated_within_10_pct_share']:.0f} %; lambda {cal['lambda']:g}"])

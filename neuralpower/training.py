"""The energy, carbon and cost of a training run, from a predicted training step.

A predictor fitted on ``neuralpower profile --mode train`` data predicts each layer's forward
and backward pass; their sum at the training batch size is one step. A run of ``epochs`` over
``dataset_size`` samples in batches of ``batch`` takes ``ceil(dataset_size / batch)`` steps per
epoch (the last, smaller batch counted as a full one). Energy at the wall socket is the device's
energy times the data centre's PUE; carbon is that times the grid's carbon intensity.

The defaults are Strubell, Ganesh and McCallum, "Energy and Policy Considerations for Deep
Learning in NLP" (ACL 2019), the table this module prints follows: PUE 1.58 (the 2018 industry
average they cite, Ascierto 2018, Uptime Institute) and 0.954 lb CO2e per kWh = 432.7 g/kWh
(the U.S. average they cite, EPA 2018). Grids differ by more than ten times between regions:
pass your own with ``carbon_g_per_kwh`` (``--carbon-intensity``).

>>> r = training_run(step_runtime_ms=500.0, step_energy_mj=100_000.0, epochs=2,
...                  dataset_size=1000, batch=100, energy_source="stated")
>>> r["steps"], r["hours"], round(r["kwh_pue"], 6)
(20, 0.002777777777777778, 0.000878)
"""
from __future__ import annotations

import math

from .errors import NeuralPowerError

DEFAULT_PUE = 1.58
DEFAULT_CARBON_G_PER_KWH = 0.954 * 453.59237  # 0.954 lb/kWh (EPA 2018, via Strubell et al.)
DEFAULTS_SOURCE = ("Strubell et al., ACL 2019: PUE 1.58 (Ascierto 2018), 0.954 lb CO2e/kWh "
                   "(U.S. average, EPA 2018)")
MJ_PER_KWH = 3.6e9  # millijoules in a kilowatt-hour


def training_run(step_runtime_ms: float, step_energy_mj: float | None, epochs: float,
                 dataset_size: int, batch: int, *, pue: float = DEFAULT_PUE,
                 carbon_g_per_kwh: float = DEFAULT_CARBON_G_PER_KWH,
                 price_per_kwh: float | None = None, energy_source: str = "") -> dict:
    """Totals of a training run from one step's runtime (ms) and device energy (mJ; None when
    no power figure exists: then only time is given). Units are in the keys: ``hours``,
    ``energy_kwh`` (device), ``kwh_pue`` (at the socket), ``co2e_kg``, ``cost`` (in the
    currency of ``price_per_kwh``), ``power_w`` (mean device power); ``epoch_hours`` and
    ``epoch_kwh_pue`` per epoch."""
    _check("epochs", epochs, positive=True)
    _check("--dataset-size", dataset_size, positive=True)
    _check("--batch", batch, positive=True)
    _check("--carbon-intensity", carbon_g_per_kwh)
    if price_per_kwh is not None:
        _check("--price", price_per_kwh)
    if not (math.isfinite(pue) and pue >= 1):
        raise NeuralPowerError(f"--pue must be at least 1 (energy at the socket / energy of the "
                               f"device), not {pue:g}")
    steps_per_epoch = math.ceil(dataset_size / batch)
    steps = steps_per_epoch * epochs
    steps = int(steps) if float(steps).is_integer() else steps
    out = {"epochs": epochs, "dataset_size": int(dataset_size), "batch": int(batch),
           "steps_per_epoch": steps_per_epoch, "steps": steps,
           "step_runtime_ms": step_runtime_ms, "step_energy_mj": step_energy_mj,
           "hours": steps * step_runtime_ms / 3.6e6,
           "epoch_hours": steps_per_epoch * step_runtime_ms / 3.6e6,
           "pue": pue, "carbon_g_per_kwh": carbon_g_per_kwh, "price_per_kwh": price_per_kwh,
           "energy_source": energy_source, "power_w": None, "energy_kwh": None,
           "kwh_pue": None, "epoch_kwh_pue": None, "co2e_kg": None, "cost": None}
    if step_energy_mj is not None:
        energy_kwh = steps * step_energy_mj / MJ_PER_KWH
        out.update(power_w=step_energy_mj / step_runtime_ms, energy_kwh=energy_kwh,
                   kwh_pue=energy_kwh * pue, co2e_kg=energy_kwh * pue * carbon_g_per_kwh / 1e3,
                   epoch_kwh_pue=steps_per_epoch * step_energy_mj / MJ_PER_KWH * pue,
                   cost=None if price_per_kwh is None else energy_kwh * pue * price_per_kwh)
    return out


def _check(name: str, v, positive: bool = False) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if positive else v >= 0)):
        raise NeuralPowerError(f"{name} must be {'positive' if positive else 'zero or positive'}, "
                               f"not {v}")


def training_text(run: dict, network: str, device: str) -> str:
    """The run in the layout of Strubell et al.'s Table 3 (power, hours, kWh·PUE, CO2e, cost),
    with the step it was built from and the assumptions it rests on."""
    def num(v, spec):
        return "–" if v is None else format(v, spec)

    lines = [f"Training {network} on {device}: {num(run['epochs'], 'g')} epochs x "
             f"{run['dataset_size']:,} samples, batch {run['batch']} -> "
             f"{run['steps_per_epoch']:,} steps per epoch, {num(run['steps'], ',')} steps",
             f"one step (forward + backward of every layer; the optimizer step is not included): "
             f"{run['step_runtime_ms']:.2f} ms"
             + ("" if run["step_energy_mj"] is None else
                f", {run['power_w']:.1f} W, {run['step_energy_mj'] / 1e3:.3f} J"),
             f"one epoch: {run['epoch_hours']:.3g} hours"
             + ("" if run["epoch_kwh_pue"] is None else f", {run['epoch_kwh_pue']:.3g} kWh·PUE"),
             ""]
    header = ["Model", "Hardware", "Power (W)", "Hours", "kWh·PUE", "CO2e (kg)", "Cost"]
    row = [network, device, num(run["power_w"], ".1f"), num(run["hours"], ".3g"),
           num(run["kwh_pue"], ".3g"), num(run["co2e_kg"], ".3g"),
           "–" if run["cost"] is None else format(run["cost"], ".3g")]
    widths = [max(len(h), len(v)) for h, v in zip(header, row)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    lines.append("")
    if run["step_energy_mj"] is None:
        lines.append("energy, carbon and cost: no power figure (the predictor has no power model; "
                     "pass --power W to state one)")
    else:
        lines.append(f"energy: {run['energy_source']}; per step {run['step_energy_mj'] / 1e3:.3f} J, "
                     f"device total {run['energy_kwh']:.4g} kWh")
        source = (" (defaults: " + DEFAULTS_SOURCE + ")"
                  if (run["pue"], run["carbon_g_per_kwh"])
                  == (DEFAULT_PUE, DEFAULT_CARBON_G_PER_KWH) else "")
        lines.append(f"PUE {run['pue']:g}, grid {run['carbon_g_per_kwh']:.1f} gCO2e/kWh{source}")
        if run["price_per_kwh"] is not None:
            lines.append(f"cost at {run['price_per_kwh']:g} per kWh (at the socket)")
    return "\n".join(lines)

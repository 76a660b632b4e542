"""Rank networks by Energy-Precision Ratio (DESIGN.md, "Energy-Precision Ratio"):
``EPR = top1_error ** alpha * energy_mj``, the error a fraction, ``alpha >= 0``; lower is better.

EPR is in millijoules (the error is dimensionless). ``alpha = 0`` ranks by energy alone; the
larger ``alpha``, the more a lower error is worth. The ranking is printed for several alphas
side by side, with the Pareto front of (energy, error), so the reader sees where the winner
changes and which networks another beats on both counts (those never win outright).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from . import nets
from .errors import NeuralPowerError
from .archs import predict_many, trace_many
from .predictor import Predictor

DEFAULT_ALPHAS = (0.0, 1.0, 2.0, 5.0)


# ---------------------------------------------------------------- inputs

def parse_entry(text: str) -> tuple[str, float | None]:
    """``NET[=TOP1_ERROR]`` -> ``(net, error fraction or None)``.

    ``torchvision:resnet18=0.302`` and ``torchvision:resnet18=30.2%`` both give 0.302. The split
    is on the last ``=`` (a file path may hold one; an error never does).
    """
    net, sep, value = text.rpartition("=")
    if not sep:
        return text, None
    if not net:
        raise NeuralPowerError(f"entry {text!r}: no network before '='")
    value = value.strip()
    percent = value.endswith("%")
    try:
        number = float(value[:-1] if percent else value)
    except ValueError:
        raise NeuralPowerError(f"entry {text!r}: top-1 error {value!r} is not a number "
                               "(write a fraction such as 0.302 or a percentage such as 30.2%)"
                               ) from None
    if not percent and number > 1:
        # 30.2 almost surely means percent; guessing would silently rank by a wrong error
        raise NeuralPowerError(f"entry {text!r}: a top-1 error is a fraction in (0, 1]; for a "
                               f"percentage write {value}%")
    return net, _error_fraction(number / 100 if percent else number, text)


def _error_fraction(error, what: str) -> float:
    """``error`` as a float in (0, 1], or a one-line error naming ``what``."""
    try:
        error = float(error)
    except (TypeError, ValueError):
        raise NeuralPowerError(f"{what}: top-1 error {error!r} is not a number") from None
    if not (0 < error <= 1):  # NaN fails this too
        raise NeuralPowerError(f"{what}: top-1 error must be a fraction in (0, 1] "
                               f"(e.g. 0.302 or 30.2%), got {error:g}")
    return error


def top1_error(net: str) -> tuple[float, str]:
    """ImageNet-1K top-1 error (a fraction) of a torchvision classifier's DEFAULT weights, from
    torchvision's weight metadata (in the installed package: nothing is downloaded), and a text
    naming its source. Any other network must be given as ``NET=TOP1_ERROR``.

    The figure is for those weights at their own evaluation resolution, whatever input the
    energy is predicted for.
    """
    source, _, name = net.rpartition(":")
    ask = f"give it as {net}=TOP1_ERROR (e.g. {net}=30.2%)"
    if source != "torchvision":
        raise NeuralPowerError(f"no known top-1 error for {net!r} (only torchvision's are "
                               f"built in): {ask}")
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        acc = float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    except (ValueError, KeyError, AttributeError, TypeError):
        raise NeuralPowerError(f"torchvision has no ImageNet-1K top-1 accuracy for {name!r}: "
                               f"{ask}") from None
    return 1 - acc / 100, f"torchvision {weights}: acc@1 {acc:g} %"


def _check_alphas(alphas) -> list[float]:
    """Sorted, distinct, finite alphas >= 0 (sorted so that winner changes read in order)."""
    try:
        values = sorted({float(a) for a in alphas})
    except (TypeError, ValueError):
        raise NeuralPowerError(f"alpha values {list(alphas)!r} are not all numbers") from None
    if not values:
        raise NeuralPowerError("no alpha given: EPR needs at least one alpha >= 0")
    bad = [a for a in values if not (0 <= a < math.inf)]
    if bad:
        raise NeuralPowerError(f"alpha must be a finite number >= 0, got {bad[0]:g}")
    return values


def _check_names(names) -> None:
    """At least one network, none twice (a ranking of a network against itself means a typo)."""
    if not names:
        raise NeuralPowerError("no network to rank")
    twice = sorted(n for n, k in Counter(names).items() if k > 1)
    if twice:
        raise NeuralPowerError(f"network {twice[0]!r} is listed twice")


def _key(alpha: float) -> str:
    """JSON key of an alpha: ``str(float(alpha))``, e.g. ``"1.0"``."""
    return str(float(alpha))


# ---------------------------------------------------------------- the ranking

def rank_table(entries, alphas=DEFAULT_ALPHAS) -> dict:
    """Rank networks by EPR for each alpha. Pure: no prediction, checkable by hand.

    ``entries``: dicts with ``network``, ``top1_error`` (fraction in (0, 1]) and ``energy_mj``
    (mJ per inference, > 0), optionally ``runtime_ms``, ``power_w`` (W), ``error_source``,
    ``energy_source``, ``layers_unmodeled``.

    Returns a JSON-ready dict: ``alphas`` (sorted), ``networks`` (each entry's figures plus
    ``epr`` {str(alpha): EPR in mJ}, ``rank`` {str(alpha): 1-based rank, ties share the lower
    rank} and ``pareto``: on the front of (energy_mj, top1_error)), ``winners`` {str(alpha):
    network} (the first listed among equals) and ``winner_changes`` [{alpha_from, alpha_to,
    from, to}] between consecutive alphas.
    """
    alphas = _check_alphas(alphas)
    entries = list(entries)
    names = [str(e.get("network")) for e in entries]
    _check_names(names)
    rows = []
    for name, e in zip(names, entries):
        energy = e.get("energy_mj")
        if energy is None:
            raise NeuralPowerError(f"{name}: no energy per inference (energy_mj): EPR needs one")
        energy = float(energy)
        if not (0 < energy < math.inf):
            raise NeuralPowerError(f"{name}: energy_mj must be a positive number, got {energy:g}")
        error = _error_fraction(e.get("top1_error"), name)
        rows.append({
            "network": name, "top1_error": error, "error_source": e.get("error_source"),
            "runtime_ms": _float(e.get("runtime_ms")), "power_w": _float(e.get("power_w")),
            "energy_mj": energy, "energy_source": e.get("energy_source"),
            "layers_unmodeled": e.get("layers_unmodeled"),
            "epr": {_key(a): error ** a * energy for a in alphas}, "rank": {}})
    energy = np.array([r["energy_mj"] for r in rows])
    error = np.array([r["top1_error"] for r in rows])
    winners = {}
    for a in alphas:  # vectorised: a search space ranks thousands of networks
        epr = error ** a * energy
        # competition ranking: 1 + how many are strictly better
        ranks = np.searchsorted(np.sort(epr), epr, side="left") + 1
        k = _key(a)
        for r, rank in zip(rows, ranks.tolist()):
            r["rank"][k] = rank
        winners[k] = rows[int(np.argmin(epr))]["network"]  # argmin keeps the first
    for r, front in zip(rows, pareto_front(energy, error).tolist()):
        r["pareto"] = front
    changes = [{"alpha_from": a, "alpha_to": b, "from": winners[_key(a)], "to": winners[_key(b)]}
               for a, b in zip(alphas, alphas[1:]) if winners[_key(a)] != winners[_key(b)]]
    return {"alphas": alphas, "networks": rows, "winners": winners, "winner_changes": changes}


def pareto_front(energy: np.ndarray, error: np.ndarray) -> np.ndarray:
    """True where no other point is as good in both and better in one (lower is better), in
    O(n log n): sorted by energy, a point is dominated by a cheaper one with an error as low,
    or by one of the same energy with a lower error."""
    order = np.lexsort((error, energy))
    e, r = energy[order], error[order]
    first = np.searchsorted(e, e, side="left")            # first point of the same energy
    best_cheaper = np.concatenate([[np.inf], np.minimum.accumulate(r)])[first]
    dominated = (best_cheaper <= r) | (r[first] < r)
    out = np.empty(len(e), dtype=bool)
    out[order] = ~dominated
    return out


def _float(v):
    return None if v is None else float(v)


def rank_networks(predictor, entries, alphas=DEFAULT_ALPHAS, input_shape=(1, 3, 224, 224),
                  power_w: float | None = None, archs=None, traced=None) -> dict:
    """Predict each network's energy per inference and rank them by EPR (:func:`rank_table`).

    ``entries``: ``(net, top1_error fraction or None)`` pairs, as :func:`parse_entry` gives; a
    missing error is read by :func:`top1_error`. Energy is the predictor's, or, for a predictor
    with no power model, ``power_w`` (W, stated by the user) times the predicted runtime, and
    every network says which. Every name, error and alpha is checked before anything is
    predicted, so a typo in the last entry fails at once. ``archs`` (``archs.Architectures``,
    from a JSON-lines file) adds architectures described by their layers, predicted in one
    vectorised pass; each must state its ``top1_error``. ``traced``: the entries' layer tables
    from ``archs.trace_many`` when the caller has them already. The result adds ``device`` and
    ``input`` to :func:`rank_table`'s.
    """
    if not isinstance(predictor, Predictor):
        predictor = Predictor.load(predictor)
    alphas = _check_alphas(alphas)
    device = predictor.device
    has_power = any(target == "power_w" for _, target in predictor.models)
    if power_w is not None:
        power_w = float(power_w)
        if not (0 < power_w < math.inf):
            raise NeuralPowerError(f"--power must be a positive number of watts, got {power_w:g}")
        if has_power:  # mixing an assumed power into predicted ones would hide which is which
            raise NeuralPowerError(f"predictor {device!r} has a power model: drop --power "
                                   "(it is only for predictors without one)")
    elif not has_power:
        raise NeuralPowerError(f"predictor {device!r} has no power model, so it cannot predict "
                               "energy: pass --power W (the device's mean power in watts) or "
                               "use a predictor with power")
    entries = list(entries)
    arch_names = [] if archs is None else list(archs.networks.network)
    _check_names([net for net, _ in entries] + arch_names)
    if archs is not None:
        missing = archs.networks[archs.networks.top1_error.isna()]
        if len(missing):
            raise NeuralPowerError(f"architecture {missing.network.iloc[0]!r} has no top1_error "
                                   "(a fraction in (0, 1]): EPR needs one")
    checked = []
    for net, error in entries:
        nets.resolve(net)  # a name that does not resolve fails here, before anything is built
        if error is None:
            error, source = top1_error(net)
        else:
            error, source = _error_fraction(error, net), "given by the user"
        checked.append((net, error, source))
    shapes = [input_shape] if isinstance(input_shape[0], int) else list(input_shape)
    # one vectorised pass over all networks (built and traced in parallel), as predict sums each
    parts = []
    if checked:
        given = pd.DataFrame(checked, columns=["network", "top1_error", "error_source"])
        if traced is None:
            traced = trace_many(list(given.network), input_shape)
        predicted = predict_many(traced, predictor)
        # a network that runs no op at all has no rows to predict: it ranks with nothing modeled
        parts.append(given.merge(predicted, on="network", how="left").fillna(
            {"runtime_ms": 0.0, "layers_modeled": 0, "layers_unmodeled": 0}))
    if archs is not None:
        parts.append(predict_many(archs, predictor).merge(archs.networks, on="network")
                     .assign(error_source="given in the file"))
    totals = [(r["network"], {**r, "energy_mj": None if math.isnan(r["energy_mj"])
                              else r["energy_mj"]}, r["top1_error"], r["error_source"])
              for part in parts for r in part.to_dict("records")]
    rows = []
    for net, t, error, source in totals:
        if t["layers_modeled"] == 0:
            raise NeuralPowerError(f"predictor {device!r} models none of {net}'s layers: "
                                   "no runtime or energy to rank")
        if has_power:
            energy, power = t["energy_mj"], _float(t["power_w"])
            energy_source = f"predicted ({device})"
            if energy is None:  # some modeled kind has a runtime model but no power model
                raise NeuralPowerError(f"predictor {device!r} has no power model for some of "
                                       f"{net}'s modeled layers, so it cannot predict its energy")
        else:
            energy, power = power_w * t["runtime_ms"], power_w
            energy_source = f"assumed {power_w:g} W (stated by the user)"
        rows.append({"network": net, "top1_error": error, "error_source": source,
                     "runtime_ms": t["runtime_ms"], "power_w": power, "energy_mj": energy,
                     "energy_source": energy_source,
                     "layers_unmodeled": t["layers_unmodeled"]})
    return {"device": device, "input": ["x".join(map(str, s)) for s in shapes],
            **rank_table(rows, alphas)}


# ---------------------------------------------------------------- views

def rank_text(result: dict, show: int = 30) -> str:
    """The ranking as text: one row per network, EPR and rank per alpha side by side (``*``:
    the winner at that alpha), the Pareto flag, then the winners, where they change, and the
    sources of every error and energy figure. Of more than ``show`` networks (a search space),
    only those in the top ``show`` at some alpha are listed, best first."""
    alphas, rows = result["alphas"], result["networks"]
    total = len(rows)
    if total > show:
        best = {id(r): min(r["rank"].values()) for r in rows}
        rows = sorted((r for r in rows if best[id(r)] <= show), key=lambda r: best[id(r)])
    table = pd.DataFrame({
        "network": [r["network"] for r in rows],
        "top-1 err %": [f"{100 * r['top1_error']:.2f}" for r in rows],
        "energy_mj": [f"{r['energy_mj']:.4g}" for r in rows],
        "runtime_ms": ["–" if r["runtime_ms"] is None else f"{r['runtime_ms']:.4g}"
                       for r in rows],
    })
    for a in alphas:
        k = _key(a)
        table[f"EPR_mJ(a={a:g})"] = [f"{r['epr'][k]:.4g}" for r in rows]
        star = {result["winners"][k]: "*"}
        table[f"rank(a={a:g})"] = [f"{r['rank'][k]}{star.get(r['network'], '')}" for r in rows]
    table["pareto"] = ["yes" if r["pareto"] else "" for r in rows]
    where = [f"device: {result['device']}"] if "device" in result else []
    if result.get("input"):
        where.append(f"input {', '.join(result['input'])}")
    out = []
    if where:
        out.append("; ".join(where))
    out += ["EPR = top1_error^alpha * energy_mj (error as a fraction; lower is better); "
            "* = lowest EPR at that alpha; pareto = no other network is as good in energy and "
            "error and better in one", "", table.to_string(index=False), ""]
    if total > len(rows):
        out.append(f"({len(rows)} of {total} networks shown: those in the top {show} at some "
                   "alpha; --json lists all)")
    out.append("winner: " + ", ".join(f"alpha={a:g} {result['winners'][_key(a)]}"
                                      for a in alphas))
    for c in result["winner_changes"]:
        out.append(f"winner changes between alpha={c['alpha_from']:g} and "
                   f"alpha={c['alpha_to']:g}: {c['from']} -> {c['to']}")
    if not result["winner_changes"] and len(alphas) > 1:
        out.append(f"the winner is the same at every alpha from {alphas[0]:g} to {alphas[-1]:g}")
    front = [r["network"] for r in result["networks"] if r["pareto"]]
    out.append(f"Pareto front (energy_mj, top-1 error; {len(front)}): " + ", ".join(front[:show])
               + (", ..." if len(front) > show else ""))
    errors = {r["error_source"] or "not stated" for r in rows}
    if len(errors) == 1 and total > 1:
        out.append(f"top-1 error: {errors.pop()}")
    else:
        out += ["", "top-1 error:"] + [f"  {r['network']}: {r['error_source'] or 'not stated'}"
                                       for r in rows]
    energy = {r["energy_source"] or "not stated" for r in rows}
    if len(energy) == 1:
        out.append(f"energy: {energy.pop()}")
    else:
        out += ["energy:"] + [f"  {r['network']}: {r['energy_source'] or 'not stated'}"
                              for r in rows]
    left_out = [f"{r['network']} ({r['layers_unmodeled']})" for r in rows
                if r.get("layers_unmodeled")]
    if left_out:
        out.append("energy leaves out the ops the predictor has no model for: "
                   + ", ".join(left_out))
    return "\n".join(out)


def plot_rank(result: dict, path) -> None:
    """Top-1 error (%) against energy per inference (mJ, log scale) as a PNG, every network
    named, the Pareto front drawn as a step line through its highlighted points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = result["networks"]
    fig, ax = plt.subplots(figsize=(7, 5))
    rest = [r for r in rows if not r["pareto"]]
    front = sorted((r for r in rows if r["pareto"]),
                   key=lambda r: (r["energy_mj"], r["top1_error"]))
    if rest:
        ax.scatter([r["energy_mj"] for r in rest], [100 * r["top1_error"] for r in rest],
                   color="0.6", zorder=3, label="dominated")
    if front:
        x, y = [r["energy_mj"] for r in front], [100 * r["top1_error"] for r in front]
        # everything above and right of the steps is beaten on both counts by a front network
        ax.plot(x, y, drawstyle="steps-post", color="C3", lw=1.5, zorder=2)
        ax.scatter(x, y, color="C3", s=50, zorder=4, label="Pareto front")
    named = rows if len(rows) <= 40 else front[:20]  # a search space: name the front only
    for r in named:
        ax.annotate(r["network"].split(":")[-1], (r["energy_mj"], 100 * r["top1_error"]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, not 2x10^1
    ax.xaxis.set_major_formatter(plain)
    energies = [r["energy_mj"] for r in rows]
    if max(energies) / min(energies) < 30:  # within a decade or so only minor ticks show values
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.12, y=0.08)  # room for the names
    ax.set_xlabel("energy per inference (mJ)")
    ax.set_ylabel("top-1 error (%)")
    ax.legend(loc="best", fontsize=8)
    # each winner once, with the alphas it wins at, to keep the title to one line
    wins = {}
    for a in result["alphas"]:
        wins.setdefault(result["winners"][_key(a)], []).append(f"{a:g}")
    winners = "; ".join(f"{n.split(':')[-1]} (α={', '.join(a)})" for n, a in wins.items())
    title = result.get("device", "")
    if result.get("input"):
        title += f", input {', '.join(result['input'])}"
    ax.set_title("\n".join(filter(None, [title, f"lowest EPR = error^α × energy: {winners}"])),
                 fontsize=9)
    ax.grid(True, which="both", color="0.92", lw=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

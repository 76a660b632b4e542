"""Where a network spends its time and energy: per block, per kind, the costliest layers.

Text for a terminal, one PNG chart, and a self-contained HTML page. Units follow DESIGN.md:
runtime in ms, power in W, energy in mJ, shares in percent of the modeled total. Energy appears
only where the predictor predicts power for every modeled layer (the same rule as
``Prediction.totals``): an energy share of a partial total would mislead, and an assumed power is
never shown as a predicted one.
"""
from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import tempfile
from pathlib import Path

import pandas as pd

from . import inputs
from .errors import NeuralPowerError
from .predict import Prediction

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUP_COLUMNS = ["layers", "macs", "runtime_ms", "runtime_share_pct", "energy_mj",
                 "energy_share_pct", "power_w"]
LAYER_COLUMNS = ["name", "kind", "module", "input_shape", "output_shape", "macs", "runtime_ms",
                 "power_w", "energy_mj", "runtime_share_pct", "energy_share_pct"]
ENERGY_COLUMNS = {"energy_mj", "energy_share_pct", "power_w"}


def has_energy(p: Prediction) -> bool:
    """True when every modeled layer has a power prediction, so energies and shares are whole."""
    return p.totals.get("energy_mj") is not None


def hotspots(prediction: Prediction, top: int = 5, depth: int = 1) -> dict[str, pd.DataFrame]:
    """The hotspot tables of one prediction, over its modeled layers.

    - ``by_block``: layers grouped by module path cut to ``depth`` components (``layer1`` at
      depth 1, ``layer1.0`` at depth 2; ops of the top module are ``<top>``), costliest first
      (by energy when known, else by runtime);
    - ``by_kind``: the same per layer kind;
    - ``top_runtime``: the ``top`` layers with the longest runtime;
    - ``top_energy``: the ``top`` layers using the most energy (empty without power).

    Columns: ``layers`` (count), ``macs`` (multiply-accumulates), ``runtime_ms``,
    ``energy_mj``, ``power_w`` (energy / runtime of the group), ``runtime_share_pct`` and
    ``energy_share_pct`` (percent of the modeled totals). Energy columns are NaN without power.
    """
    _check(top, depth)
    energy = has_energy(prediction)
    modeled = prediction.modeled
    runtime_total = float(modeled.runtime_ms.sum())
    energy_total = float(modeled.energy_mj.sum()) if energy else math.nan

    def groups(g: pd.DataFrame, key: str) -> pd.DataFrame:
        g = _shares(g, runtime_total, energy_total, energy)
        # costliest first by what the report ranks by, as Prediction.top does
        g = g.sort_values("energy_mj" if energy else "runtime_ms", ascending=False, kind="stable")
        return g[[key, *GROUP_COLUMNS]].reset_index(drop=True)

    def layers(by: str) -> pd.DataFrame:
        rows = _shares(prediction.top(top, by), runtime_total, energy_total, energy)
        return rows[LAYER_COLUMNS].reset_index(drop=True)

    return {
        "by_block": groups(prediction.by_module(depth), "block"),
        "by_kind": groups(prediction.by_kind(), "kind"),
        "top_energy": layers("energy_mj") if energy else layers("runtime_ms").iloc[:0],
        "top_runtime": layers("runtime_ms"),
    }


def _check(top, depth) -> None:
    # the CLI passes these straight from the user: refuse in one line
    if not isinstance(top, numbers.Integral) or top < 1:
        raise NeuralPowerError(f"top must be a positive number of layers, not {top!r}")
    if not isinstance(depth, numbers.Integral) or depth < 1:
        raise NeuralPowerError(f"depth must be a positive number of module path components, "
                               f"not {depth!r}")


def _shares(rows: pd.DataFrame, runtime_total: float, energy_total: float,
            energy: bool) -> pd.DataFrame:
    rows = rows.assign(runtime_share_pct=100 * rows.runtime_ms / runtime_total
                       if runtime_total > 0 else math.nan)
    if energy and energy_total > 0:
        return rows.assign(energy_share_pct=100 * rows.energy_mj / energy_total)
    # without a whole energy total the energy figures are unknown, not zero
    return rows.assign(energy_mj=math.nan, power_w=math.nan, energy_share_pct=math.nan)


def _power_note(p: Prediction) -> str | None:
    """Why energy is left out, or None when it is shown."""
    if has_energy(p):
        return None
    if not p.has_power:
        return (f"No power model in this predictor ({p.device}): runtime only; power and "
                "energy are left out.")
    return (f"This predictor ({p.device}) predicts power for only some of the modeled layers: "
            "power and energy are left out.")


def _describe(p: Prediction) -> str:
    """``NET on DEVICE, input 1x3x224x224``, and whether the figures are a training step."""
    text = (f"{p.network} on {p.device}, input "
            + inputs.text(p.input_shape).replace(",", ", "))
    if getattr(p, "mode", "inference") == "train":
        text += ", one training step (forward + backward)"
    return text


def _totals_line(p: Prediction) -> str:
    t = p.totals
    line = f"Total over {t['layers_modeled']} modeled layers: runtime {t['runtime_ms']:.3f} ms"
    if has_energy(p):
        line += f", power {t['power_w']:.1f} W, energy {t['energy_mj']:.3f} mJ"
    if t["layers_unmodeled"]:
        line += f"; {t['layers_unmodeled']} unmodeled ops not included"
    return line


# Terminal column names carry their unit; MACs are shown in millions to stay narrow.
_TEXT_NAMES = {"macs": "MMACs", "runtime_share_pct": "runtime_%", "energy_share_pct": "energy_%"}
_TEXT_FORMATS = {"MMACs": "{:.1f}".format, "runtime_ms": "{:.4f}".format,
                 "runtime_%": "{:.1f}".format, "energy_mj": "{:.3f}".format,
                 "energy_%": "{:.1f}".format, "power_w": "{:.1f}".format}


def _text_table(df: pd.DataFrame, energy: bool) -> str:
    if df.empty:
        return "  (none)"
    df = df.drop(columns=[] if energy else [c for c in df.columns if c in ENERGY_COLUMNS])
    df = df.assign(macs=df.macs / 1e6).rename(columns=_TEXT_NAMES)
    if "input_shape" in df.columns:  # narrow enough for a terminal: one shape column, and no
        # module column (the layer's name already starts with its module path)
        df = df.assign(input_shape=df.input_shape + " -> " + df.output_shape)
        df = df.drop(columns=["output_shape", "module"]).rename(columns={"input_shape": "shape"})
    return df.to_string(index=False, formatters=_TEXT_FORMATS, na_rep="–")


def hotspot_text(prediction: Prediction, top: int = 5, depth: int = 1) -> str:
    """The hotspot tables for a terminal, each headed, every column naming its unit
    (``runtime_ms`` ms, ``energy_mj`` mJ, ``power_w`` W, ``MMACs`` millions of MACs, ``_%``
    percent of the modeled total). Without power the energy columns are left out and a note
    says why, once."""
    h = hotspots(prediction, top, depth)
    energy = has_energy(prediction)
    out = [_describe(prediction), _totals_line(prediction)]
    clocks_note = prediction.host_bound_note()
    if clocks_note:
        out.append(clocks_note)
    note = _power_note(prediction)
    if note:
        out.append(note)
    sections = [(f"By block (module path, depth {depth}):", h["by_block"]),
                ("By kind:", h["by_kind"])]
    if energy:
        sections.append((f"Top {len(h['top_energy'])} layers by energy:", h["top_energy"]))
    sections.append((f"Top {len(h['top_runtime'])} layers by runtime:", h["top_runtime"]))
    for heading, df in sections:
        out += ["", heading, _text_table(df, energy)]
    return "\n".join(out)


def _short(label: str, width: int = 42) -> str:
    # the end of a module path is the part that tells layers apart
    return label if len(label) <= width else "…" + label[-(width - 1):]


def chart_png(prediction: Prediction, top: int = 10, depth: int = 1) -> bytes:
    """The hotspot bar chart as PNG bytes (see ``plot_hotspots``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = hotspots(prediction, top, depth)
    energy = has_energy(prediction)
    col, label, top_layers = (("energy_mj", "energy (mJ)", h["top_energy"]) if energy
                              else ("runtime_ms", "runtime (ms)", h["top_runtime"]))
    share = col.split("_")[0] + "_share_pct"

    def first(df: pd.DataFrame, what: str):  # already sorted by col, costliest first
        shown = f"all {len(df)}" if len(df) <= top else f"top {top} of {len(df)}"
        return f"{what}, {shown}", df.head(top)

    panels = [(f"top {len(top_layers)} layers", top_layers, "name"),
              (*first(h["by_block"], f"per block (depth {depth})"), "block"),
              (*first(h["by_kind"], "per kind"), "kind")]
    heights = [max(len(df), 1) for _, df, _ in panels]
    fig, axes = plt.subplots(3, 1, figsize=(8, 1.6 + 0.28 * sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, df, key) in zip(axes, panels):
        if df.empty:
            ax.text(0.5, 0.5, "no modeled layers", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_yticks([])
        else:
            bars = ax.barh([_short(str(v)) for v in df[key]], df[col],
                           color="tab:orange" if energy else "tab:blue")
            ax.bar_label(bars, labels=[f"{v:.1f} %" for v in df[share]], fontsize=7, padding=2)
            ax.margins(x=0.1)  # room for the share labels
            ax.invert_yaxis()  # costliest on top
            ax.tick_params(axis="y", labelsize=8)
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_xlabel(f"{label}  (bar labels: share of the modeled total)", fontsize=8)
    what = ("energy" if energy else "runtime (no power model)" if not prediction.has_power
            else "runtime (power for only some layers)")
    fig.suptitle(f"{_describe(prediction)}: {what}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_hotspots(prediction: Prediction, path, top: int = 10, depth: int = 1) -> None:
    """Write one PNG: horizontal bars of the ``top`` costliest layers, blocks and kinds, by
    energy in mJ when the predictor has power, else by runtime in ms."""
    _write_atomic(Path(path), chart_png(prediction, top, depth))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
p { white-space: pre-line; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f2f2f2; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; height: auto; }
"""
# No script, no fetch: the page works from a file, an e-mail or an archive, and a browser
# enforces it.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _number(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:,.1f}" if abs(v) >= 1000 else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, numbers.Integral) else str(v)


def _table_html(df: pd.DataFrame) -> str:
    plain_index = isinstance(df.index, pd.RangeIndex)
    fmt = {c: _number for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
           and not pd.api.types.is_bool_dtype(df[c])}
    table = df.to_html(index=not plain_index, escape=True, na_rep="–", border=0,
                       formatters=fmt)
    return f'<div class="scroll">{table}</div>'


def _png_bytes(item, heading: str) -> bytes:
    if isinstance(item, Path):
        try:
            data = item.read_bytes()
        except OSError as e:
            raise NeuralPowerError(f"image {str(item)!r} for {heading!r}: {e.strerror}") from None
    else:
        data = bytes(item)
    if not data.startswith(PNG_SIGNATURE):
        raise NeuralPowerError(f"image for {heading!r} is not a PNG")
    return data


def _item_html(item, heading: str) -> str:
    if isinstance(item, pd.DataFrame):
        return _table_html(item)
    if isinstance(item, str):
        return f"<p>{html.escape(item)}</p>"
    if isinstance(item, (Path, bytes, bytearray)):
        data = base64.b64encode(_png_bytes(item, heading)).decode("ascii")
        alt = heading if not isinstance(item, Path) else f"{heading} ({item.name})"
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
    raise TypeError(f"html_page: cannot render a {type(item).__name__} in {heading!r} "
                    "(give a DataFrame, a str, a pathlib.Path or bytes of a PNG)")


def html_page(title: str, sections, path) -> None:
    """Write one self-contained HTML file (no JavaScript, nothing fetched).

    ``sections`` is a list of ``(heading, items)``; each item (or a single item in place of the
    list) is a pandas DataFrame (a table), a str (a paragraph; line breaks kept) or a PNG as a
    ``pathlib.Path`` or ``bytes`` (embedded as a data: URI, the heading as alt text). All text is
    escaped. The file is written to a temporary file and moved into place, so a failure never
    leaves half a page.
    """
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for heading, items in sections:
        if isinstance(items, (pd.DataFrame, str, Path, bytes, bytearray)):
            items = [items]
        parts.append(f"<h2>{html.escape(str(heading))}</h2>")
        parts += [_item_html(item, str(heading)) for item in items]
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")
    _write_atomic(Path(path), page.encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a report meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def html_report(prediction: Prediction, path, top: int = 5, depth: int = 1) -> None:
    """The hotspot report of one prediction as one HTML page: totals, the per-block, per-kind and
    top-``top`` tables, the bar chart, the unmodeled ops and the full per-layer table."""
    p = prediction
    h = hotspots(p, top, depth)
    energy = has_energy(p)

    def shown(df: pd.DataFrame) -> pd.DataFrame:
        return df if energy else df.drop(columns=[c for c in df.columns if c in ENERGY_COLUMNS])

    t = p.totals
    totals = pd.DataFrame([{k: t[k] for k in ("runtime_ms", "power_w", "energy_mj", "macs",
                                              "layers_modeled", "layers_unmodeled",
                                              "layers_free", "unmodeled_macs")}])
    summary = [_describe(p) + ".", _totals_line(p) + "."]
    if _power_note(p):
        summary.append(_power_note(p))
    sections = [("Totals", ["\n".join(summary), shown(totals)]),
                (f"By block (module path, depth {depth})", shown(h["by_block"])),
                ("By kind", shown(h["by_kind"]))]
    # the name already starts with the module path: without it the top tables fit a screen
    if energy:
        sections.append((f"Top {len(h['top_energy'])} layers by energy",
                         h["top_energy"].drop(columns="module")))
    sections.append((f"Top {len(h['top_runtime'])} layers by runtime",
                     shown(h["top_runtime"].drop(columns="module"))))
    chart = chart_png(p, top, depth)
    sections.append(("Chart: " + ("energy" if energy else "runtime"), chart))
    un = p.unmodeled
    sections.append(("Unmodeled ops", [
        "Ops of kinds this predictor has no model for; they are not in the totals.", un]
        if len(un) else "Every op that does work is modeled."))
    layers = p.layers[["name", "kind", "module", "input_shape", "output_shape", "macs",
                       "runtime_ms", "power_w", "energy_mj", "modeled"]]
    sections.append((f"All {len(layers)} layers", shown(layers)))
    html_page(f"{p.network} on {p.device}: hotspots", sections, path)

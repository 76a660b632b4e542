"""Read measurement CSVs (DESIGN.md schema) and refuse what cannot be trusted, on one line."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import NeuralPowerError, first_line
from .features import INPUT_COLUMNS, SHAPE_COLUMNS, TARGETS, shapes_seen

# Larger than any real layer size or runtime (2**31 elements; a layer running 10^7 ms = 2.8 h):
# such a value is a unit or parsing mistake, not a measurement.
MAX_SIZE = 2**31
MAX_RUNTIME_MS = 1e7
MAX_POWER_W = 1e5
# A row measured while the speed probe ran more than this many times off the campaign's median
# is not used (see at_reference_speed).
DISTURBED = 2.0


def load(paths) -> pd.DataFrame:
    """Rows of one or more measurement CSVs, checked, with a ``source_file`` column added."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    seen = set()
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise NeuralPowerError(f"measurement file {str(p)!r} is given twice")
        seen.add(key)
    frames = [with_source(with_shapes_seen(with_traced(
        with_allocator(with_idle_power(_read_one(Path(p)), p), p), p)))
        for p in paths]
    return pd.concat(frames, ignore_index=True)


def sidecar(path) -> dict:
    """The campaign sidecar JSON beside measurement file ``path`` ({} where there is none or
    it cannot be read): ``x.json`` beside ``x.csv``, ``x.csv.gz.json`` or ``x.json`` beside
    ``x.csv.gz``."""
    from .profiling.campaign import sidecar_path

    name = Path(path).name.removesuffix(".gz").removesuffix(".csv")
    for side in (sidecar_path(path), Path(path).with_name(name + ".json")):
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict):
            return meta
    return {}


def with_idle_power(d: pd.DataFrame, path) -> pd.DataFrame:
    """``d`` with the device's idle power (``idle_power_w``) its campaign's sidecar recorded,
    where it did and the file has no such column: what a layer's power reading holds whether
    the layer runs or the device waits (``predict``, network power on two clocks)."""
    if "idle_power_w" in d:
        return d
    idle = (sidecar(path).get("power") or {}).get("idle_power_w")
    return d.assign(idle_power_w=float(idle)) if isinstance(idle, (int, float)) and idle > 0 else d


def with_allocator(d: pd.DataFrame, path) -> pd.DataFrame:
    """``d`` with the size above which its campaign's allocator mapped tensors fresh on every
    run (``fresh_memory.COLUMN``), where the sidecar recorded it (CPU campaigns)."""
    from .fresh_memory import COLUMN, threshold

    above = threshold(sidecar(path))
    return d.assign(**{COLUMN: above}) if above and COLUMN not in d else d


def with_traced(d: pd.DataFrame, path=None) -> pd.DataFrame:
    """``d`` with the columns the tracer gives a row and older campaigns lack, filled in: the
    context column ``kind_gap`` (``trace.kind_gaps``) and, in a CPU campaign's rows (those
    with ``fresh_memory.COLUMN``), the memory column ``fresh_mib`` (``fresh_memory.Events``).
    Each network is traced again (a zoo network at its input; a synthetic one from its seed,
    index, kinds and limits, which the campaign's sidecar beside ``path`` keeps), and a row
    takes its module's values where the module is of the row's kind. Rows of no network
    (public data), or of a network that cannot be rebuilt, stay empty: the neutral value (for
    ``fresh_mib``, the sizes alone: ``fresh_memory.units``). A file with a column is taken as
    it is (an empty value there is one that could not be derived)."""
    from .fresh_memory import COLUMN
    wanted = [c for c in ("kind_gap", "fresh_mib") if c not in d
              and (c == "kind_gap" or COLUMN in d)]
    if not wanted or not {"network", "layer"} <= set(d.columns):
        return d
    filled = pd.DataFrame(np.nan, index=d.index, columns=wanted)
    missing = d[d["network"].notna()]
    if missing.empty:
        return d
    from .profiling import synthetic, zoo
    settings = (sidecar(path).get("settings") or {}) if path is not None else {}
    inputs = zoo.network_inputs(missing)
    for net_id, part in missing.groupby("network", sort=False):
        net = zoo.net_of(net_id)
        try:
            if net is not None and net_id in inputs:
                shape = inputs[net_id]   # with its dtype: a text network's takes token ids
                table = zoo.trace_spec({"zoo": net, "input": list(shape), "dtype": shape.dtype})
            elif (spec := synthetic.campaign_spec(net_id, settings)) is not None:
                table = synthetic.trace_spec(spec)
            else:
                continue
        except (NeuralPowerError, TypeError, ValueError):
            continue
        work = table[table.kind != "free"].groupby("module").first()
        layer = part["layer"].astype(str)
        same = layer.map(work.kind).eq(part["kind"])   # the network rebuilt is the one measured
        for c in wanted:
            filled.loc[part.index, c] = layer.map(work[c]).where(same)
    return d.assign(**{c: filled[c] for c in wanted})


def with_new_kinds(base: pd.DataFrame, extra: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``base`` with the rows of ``extra`` of the kinds ``base`` has none of, and those kinds: a
    campaign of kinds added later (``fit --new-kinds-from``) teaches them, while the models of
    the kinds ``base`` has stay fitted on ``base`` (the later campaign's linear layers ran in
    other networks, on another day of the VM). The rows taken keep no whole-network time: their
    networks' other layers are left out, so the layers kept no longer add up to it."""
    new = sorted(set(extra["kind"].dropna()) - set(base["kind"].dropna()))
    rows = extra[extra["kind"].isin(new)]
    rows = rows.assign(**{c: np.nan for c in ("network_runtime_ms", "network_host_ms")
                          if c in rows}, **{ADDED: True})
    return pd.concat([base.assign(**{ADDED: False}), rows], ignore_index=True), new


# Rows taken for their new kinds only (``with_new_kinds``): the device's speed, its phase and
# the probe's power are the base files' (``base_rows``), so that adding a kind moves no other
# model (a masks campaign in a faster phase of the VM moved the power 0.395 -> 0.388 and, through
# it, the refitted conv models: the 05:24 run's six medians summed 30.5 -> 39.9 %).
ADDED = "new_kind_row"


def base_rows(d: pd.DataFrame) -> pd.DataFrame:
    """The rows not taken from a later campaign for their new kinds alone."""
    return d[~d[ADDED].fillna(False).astype(bool)] if ADDED in d else d


def network_runs(d: pd.DataFrame) -> pd.Series:
    """Which network run each row was measured in, told apart across files: campaigns of one
    seed name their synthetic networks alike (``s0-000007`` of a campaign of every kind and of
    one of norms alone are different networks), so a network's rows are those of its id in
    its own file. Empty for rows of no network."""
    if "source_file" not in d:
        return d["network"]
    return (d["source_file"].astype("string") + "/" + d["network"].astype("string")).where(
        d["network"].notna())


def with_source(d: pd.DataFrame) -> pd.DataFrame:
    """``d`` with ``synthetic`` (features.py): 1 for a row of a synthetic network (id
    ``s<seed>-<index>``), 0 for one of a real network (a zoo campaign's), empty for a row of
    no network."""
    if "network" not in d or "synthetic" in d:
        return d
    from .profiling.synthetic import NETWORK_ID
    flag = d["network"].astype("string").str.fullmatch(NETWORK_ID.pattern).astype(float)
    return d.assign(synthetic=flag.where(d["network"].notna()))


def with_shapes_seen(d: pd.DataFrame) -> pd.DataFrame:
    """``d`` with ``shape_seen`` (features.py) derived from its own rows: 1 where a row of the
    same network, kind and shape comes before it (by ``position``, else file order), else 0;
    empty (neutral) for rows of no network. The tracer counts every op of a run; a zoo
    network's rows are its timed layers only, which its convolutions, pools and linear layers
    all are, bar a module run twice per pass."""
    if "network" not in d or "shape_seen" in d:
        return d
    keys = ["network", "kind", *[c for c in SHAPE_COLUMNS if c in d]]
    part = d[d["network"].notna()]
    if "position" in part:
        part = part.sort_values("position", kind="stable")
    seen = shapes_seen(part[keys].fillna(-1.0).itertuples(index=False, name=None))
    return d.assign(shape_seen=pd.Series(seen, index=part.index, dtype=float))


def _read_one(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise NeuralPowerError(f"measurement file {str(path)!r} not found")
    try:
        with warnings.catch_warnings():
            # a line with more fields than the header: pandas would shift it into an index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            d = pd.read_csv(path, low_memory=False, index_col=False)
    except pd.errors.EmptyDataError:
        raise NeuralPowerError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, OSError,
            EOFError) as e:  # (a damaged .csv.gz: BadGzipFile is an OSError, a cut one EOF)
        raise NeuralPowerError(f"{path}: not a readable CSV "
                               f"({first_line(e, (Exception,))})") from None
    if d.empty:
        raise NeuralPowerError(f"{path}: no data rows")
    missing = [c for c in ("kind", "runtime_ms") if c not in d.columns]
    if missing:
        raise NeuralPowerError(f"{path}: missing column(s) {', '.join(missing)}; see the "
                               "measurement CSV schema in DESIGN.md")
    _check_duplicates(d, path)
    if "status" in d.columns:  # the profiler marks failed configurations; they carry no target
        status = d["status"]
        d = d[status.isna() | status.astype(str).str.strip().eq("ok")]
        if d.empty:
            raise NeuralPowerError(f"{path}: no measured rows: none of its {len(status)} "
                                   "row(s) has status ok")
    kind = d["kind"].where(d["kind"].notna(), "").astype(str).str.strip()
    if kind.eq("").any():
        raise NeuralPowerError(f"{path}: line {_line(kind.eq(''))}: row has no kind")
    d = d.assign(kind=kind)
    for c in TARGETS:
        d[c] = _numeric(d, c, path) if c in d.columns else np.nan
        _check_range(d, c, path, low_exclusive=0.0,
                     high=MAX_RUNTIME_MS if c == "runtime_ms" else MAX_POWER_W)
    no_runtime = d["runtime_ms"].isna()  # power may be missing (no sensor); runtime may not
    if no_runtime.any():
        raise NeuralPowerError(f"{path}: line {_line(no_runtime)}: "
                               f"{d.loc[no_runtime, 'kind'].iloc[0]} row has no runtime_ms")
    for c in SHAPE_COLUMNS:  # numbers in every row (text anywhere is a broken file)
        if c in d.columns:
            d[c] = _numeric(d, c, path)
    for kind, cols in INPUT_COLUMNS.items():
        rows = d["kind"] == kind
        if not rows.any():
            continue
        absent = [c for c in cols if c not in d.columns]
        if absent:
            raise NeuralPowerError(f"{path}: {kind} rows need column(s) {', '.join(absent)}")
        for c in cols + [c for c in ("pad_h", "pad_w", "groups", "dilation_h", "dilation_w")
                         if c in d.columns]:
            values = d.loc[rows, c]
            if c in cols and values.isna().any():
                raise NeuralPowerError(f"{path}: line {_line(values.isna())}: {kind} row has no {c}")
            bad = invalid_size(values, c)
            if bad.any():
                v = values[bad].iloc[0]
                why = ("is not a whole number" if lowest_size(c) <= v <= MAX_SIZE
                       else "is out of range")
                raise NeuralPowerError(f"{path}: line {_line(bad)}: {c} = {v:g} {why}")
    d["source_file"] = path.name
    return d


def lowest_size(column: str) -> int:
    """Padding may be 0; every other size starts at 1."""
    return 0 if column.startswith("pad") else 1


def invalid_size(values: pd.Series, column: str) -> pd.Series:
    """Where a layer size is not a whole number from ``lowest_size`` to ``MAX_SIZE`` (missing
    values are not flagged: whether one may be missing is the caller's rule)."""
    return values.notna() & ((values < lowest_size(column)) | (values > MAX_SIZE)
                             | (values % 1 != 0))


def _check_duplicates(d: pd.DataFrame, path: Path) -> None:
    """Refuse a row repeated exactly, measured values and all: real repeats differ in their
    timings, so an exact copy is a file concatenated twice or rows written twice, and it would
    weigh those layers double in the fit."""
    rows = pd.util.hash_pandas_object(d, index=False)  # one hash per row, NaN == NaN
    dup = rows.duplicated()
    if dup.any():
        again = rows.index[dup.to_numpy()][0]
        first = rows.index[(rows == rows[again]).to_numpy()][0]
        raise NeuralPowerError(f"{path}: line {again + 2} repeats line {first + 2} exactly (a "
                               "file concatenated twice, or rows written twice?)")


def _numeric(d: pd.DataFrame, column: str, path: Path) -> pd.Series:
    if pd.api.types.is_bool_dtype(d[column]):  # pandas reads a column of True/False as bool
        raise NeuralPowerError(f"{path}: line 2: {column} = {d[column].iloc[0]!r} is not a number")
    values = pd.to_numeric(d[column], errors="coerce")
    text = values.isna() & d[column].notna() & d[column].astype(str).str.strip().ne("")
    if text.any():
        raise NeuralPowerError(f"{path}: line {_line(text)}: {column} = "
                               f"{d.loc[text, column].iloc[0]!r} is not a number")
    return values


def _check_range(d: pd.DataFrame, column: str, path: Path, low_exclusive: float, high: float):
    v = d[column]
    bad = v.notna() & (~np.isfinite(v) | (v <= low_exclusive) | (v > high))
    if bad.any():
        raise NeuralPowerError(f"{path}: line {_line(bad)}: {column} = {v[bad].iloc[0]:g} is not a "
                               f"plausible measurement (must be > {low_exclusive:g} and <= {high:g})")


def _line(mask: pd.Series) -> int:
    """1-based file line of the first flagged row (header is line 1)."""
    return int(mask[mask].index[0]) + 2


# The speed probe's exponent (speed_exponent) is used where its standard error is at most this,
# from at least that many network runs (a clustered error from a few runs means nothing: two
# runs of one shape give an error of 0); else a device's layers are taken to follow the probe
# one to one, as they were before it.
SPEED_EXPONENT_SE = 0.1
SPEED_EXPONENT_RUNS = 30


def speed_exponent(d: pd.DataFrame) -> dict | None:
    """How a layer's time follows the speed probe on this device, ``runtime ~ reference_ms **
    exponent``: log runtime on log probe within each layer shape (kind, every size, synthetic
    or real network) timed in at least two network runs, each run with its own probe, rows more
    than ``DISTURBED`` times off the median probe left out. The standard error is clustered by
    network run (a run's layers share its probe). None without such rows.

    Why: on a shared VM the probe (a fixed convolution) and the layers need not slow alike. On
    the Xeon VM of family 6 model 207 its predictor's five files give 0.39 (standard error
    0.05), and taking predictions to a measurement's speed one to one overshot: the probe swung
    1.86 times from its fastest quarter to its slowest, the networks 1.34-1.41."""
    need = {"reference_ms", "runtime_ms", "network", "kind"}
    if not need <= set(d.columns):
        return None
    ref = pd.to_numeric(d["reference_ms"], errors="coerce")
    t = pd.to_numeric(d["runtime_ms"], errors="coerce")
    ok = (ref > 0) & (t > 0) & d["network"].notna()
    if not ok.any():
        return None
    median = ref[ok].median()
    ok &= ref.between(median / DISTURBED, median * DISTURBED)
    rows = d[ok]
    keys = ["kind", *[c for c in (*SHAPE_COLUMNS, "synthetic") if c in rows]]
    g = pd.DataFrame({"shape": rows.groupby(keys, dropna=False, sort=False).ngroup().to_numpy(),
                      "run": network_runs(rows).to_numpy(), "x": np.log(ref[ok].to_numpy()),
                      "y": np.log(t[ok].to_numpy())})
    g = g[g.groupby("shape").run.transform("nunique") >= 2]
    if g.empty:
        return None
    by = g.groupby("shape")
    x, y = g.x - by.x.transform("mean"), g.y - by.y.transform("mean")
    sxx = float((x * x).sum())
    if sxx <= 0:
        return None
    b = float((x * y).sum()) / sxx
    score = (x * (y - b * x)).groupby(g.run).sum()   # per-run score, for the clustered error
    return {"exponent": b, "se": float(np.sqrt((score ** 2).sum()) / sxx), "rows": int(len(g)),
            "shapes": int(g["shape"].nunique()), "runs": int(g.run.nunique())}


def trusted(found: dict | None) -> bool:
    """Whether a :func:`speed_exponent` estimate is used."""
    return (found is not None and found["se"] <= SPEED_EXPONENT_SE
            and found["runs"] >= SPEED_EXPONENT_RUNS)


def fitted_speed_exponent(d: pd.DataFrame) -> tuple[float, dict | None]:
    """The exponent a fit on ``d`` brings its rows to one speed with, and the estimate
    (:func:`speed_exponent`): the data's own, within [0, 1], where its standard error is at
    most ``SPEED_EXPONENT_SE`` over at least ``SPEED_EXPONENT_RUNS`` network runs; else 1 (the
    probe's ratio as it is)."""
    found = speed_exponent(d)
    if not trusted(found):
        return 1.0, found
    return float(np.clip(found["exponent"], 0.0, 1.0)), found


def at_reference_speed(d: pd.DataFrame, nominal: float | None = None, exponent: float = 1.0
                       ) -> tuple[pd.DataFrame, float | None]:
    """Runtimes brought to one speed of the device: a campaign records, beside each network, the
    time of a fixed probe run between its repeats (``reference_ms``, see
    ``profiling.timing.Reference``); each row's runtimes are scaled by the median probe time over
    its own. Rows whose probe ran more than ``DISTURBED`` times slower or faster than that
    median are left out: the machine was disturbed then (another process, a stall), and the
    probe and the layers need not have been slowed alike (on the development VM the probe once
    ran 100 times slower while the network beside it ran at its usual speed). Returns the scaled
    copy and that median (None, and ``d`` unchanged, for data with no probe: public data, older
    campaigns). With ``nominal``, the rows are brought to the speed where the probe takes that
    long instead (another campaign's, a predictor's). With ``exponent`` (a predictor's
    ``speed_exponent``), by that power of the probes' ratio."""
    if "reference_ms" not in d.columns:
        return d, None
    ref = pd.to_numeric(d["reference_ms"], errors="coerce")
    ref = ref.where(ref > 0)
    if ref.isna().all():
        return d, None
    nominal = float(ref.median()) if nominal is None else float(nominal)
    keep = ref.isna() | ref.between(nominal / DISTURBED, nominal * DISTURBED)
    factor = ((nominal / ref[keep]) ** exponent).fillna(1.0)  # a row without a probe: as measured
    out = d[keep].copy()
    # (a GPU's kernel time, gpu_ms, is not the host's and stays as measured: on a GPU the probe
    # waits on the host, profiling/timing.py)
    for c in ("runtime_ms", "network_runtime_ms", "host_ms", "network_host_ms"):
        if c in out.columns:
            out[c] = pd.to_numeric(out[c], errors="coerce") * factor
    out["reference_ms"] = nominal  # now measured at that speed: scaling again changes nothing
    return out, nominal

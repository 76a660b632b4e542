"""The ``neuralpower`` command. Bad input ends in one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import NeuralPowerError


def _fit(args) -> None:
    from . import data
    from .predictor import Predictor, card_markdown

    rows = data.load(args.data)
    print(f"fitting on {len(rows)} rows from {', '.join(args.data)}", file=sys.stderr)
    predictor = Predictor.fit(rows, log=lambda m: print(m, file=sys.stderr))
    predictor.save(args.output)
    if args.card:
        with open(args.card, "w") as f:
            f.write(card_markdown(predictor.card))
    print(f"wrote {args.output}" + (f" and {args.card}" if args.card else ""))


def _score(args) -> None:
    from . import data
    from .predictor import Predictor
    from .report import scores_text

    predictor = Predictor.load(args.model)
    scores = predictor.score(data.load(args.data))
    print(json.dumps(scores, indent=2) if args.json else scores_text(scores))


def _predict(args) -> None:
    from . import nets
    from .predict import predict
    from .predictor import Predictor
    from .report import prediction_json, prediction_text

    if args.top < 0:
        raise NeuralPowerError("--top must be >= 0")
    predictor = Predictor.load(args.model)
    shapes = nets.parse_input(args.input)
    model = nets.build(args.net)
    p = predict(model, shapes if len(shapes) > 1 else shapes[0], predictor, network=args.net)
    if p.totals["layers_modeled"] == 0:
        raise NeuralPowerError(f"{args.net}: no layer of a kind this predictor models "
                               f"({', '.join(sorted({k for k, _ in predictor.models}))})")
    print(json.dumps(prediction_json(p, args.top), indent=2) if args.json
          else prediction_text(p, args.top))


def _profile(args) -> None:
    from .profiling import PROFILED_KINDS, Campaign, sidecar_path

    kinds = ([k.strip() for group in args.kinds for k in group.split(",") if k.strip()]
             or PROFILED_KINDS)
    campaign = Campaign(args.output, device=args.device, kinds=kinds, seed=args.seed,
                        threads=args.threads, power_window_s=args.power_window,
                        command=" ".join(["neuralpower", *sys.argv[1:]]))
    s = campaign.run(budget_s=args.budget, progress=not args.quiet)
    print(f"{s['ended']}: {s['networks']} networks, {s['rows']} rows ({s['failed']} failed "
          f"networks) in {s['seconds']:.0f} s; wrote {args.output} and "
          f"{sidecar_path(args.output)}")


def _measure(args) -> None:
    from . import nets
    from .measure import measure
    from .profiling.campaign import parse_device

    device = parse_device(args.device)
    shapes = nets.parse_input(args.input)
    model = nets.build(args.net, device=device)
    m = measure(model, shapes if len(shapes) > 1 else shapes[0], device, threads=args.threads)
    out = {"network": args.net, "device": m["device"], "input": args.input,
           "totals": {k: m[k] for k in ("runtime_ms", "power_w", "energy_mj")},
           **{k: m[k] for k in ("runtime_iqr_ms", "runtime_min_ms", "repeats", "reference_ms",
                                "power_source", "threads")}}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    power = "not measured" if m["power_w"] is None else f"{m['power_w']:.1f} W"
    energy = "not measured" if m["energy_mj"] is None else f"{m['energy_mj']:.1f} mJ"
    print(f"{args.net} on {m['device']}, input {args.input}\n"
          f"  runtime  {m['runtime_ms']:.3f} ms median of {m['repeats']} runs "
          f"(IQR {m['runtime_iqr_ms']:.3f} ms, min {m['runtime_min_ms']:.3f} ms)\n"
          f"  speed    reference probe {m['reference_ms']:.3f} ms meanwhile (the device's speed)\n"
          f"  power    {power}\n  energy   {energy}\n  source   {m['power_source']}")


def _validate(args) -> None:
    from tqdm.auto import tqdm

    from . import nets
    from .predictor import Predictor
    from .profiling.campaign import parse_device
    from .validate import plot, validate

    predictor = Predictor.load(args.model)
    shapes = nets.parse_input(args.input)
    device = parse_device(args.device)
    for net in args.nets:  # every name resolves before anything is measured
        nets.build(net)
    result = validate(predictor, args.nets, shapes if len(shapes) > 1 else shapes[0], device,
                      threads=args.threads,
                      progress=lambda xs: tqdm(xs, desc="predict + measure", disable=args.json))
    if result["measured_on"] != result["device"]:
        print(f"note: the predictor is for {result['device']!r}; measured on "
              f"{result['measured_on']!r}", file=sys.stderr)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from .report import validation_text

    print(validation_text(result))
    if args.plot:
        print(f"wrote {args.plot}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="neuralpower", description="Predict the runtime, power "
                                 "and energy of a neural network, layer by layer.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="measure the layers of synthetic networks on this device")
    p.add_argument("-o", "--output", required=True, help="measurement CSV to write (or resume)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--budget", type=float, default=600.0, help="seconds to spend (default 600)")
    p.add_argument("--kinds", nargs="+", default=[],
                   help="layer kinds to put in the networks (default: every profiled kind)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network design (default 0)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--power-window", type=float, help="seconds a layer runs back to back for "
                   "one power reading (default: 0.3 or the sensor's minimum)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_profile)

    p = sub.add_parser("measure", help="measure a whole network's runtime, power and energy here")
    p.add_argument("net", help="torchvision:NAME, timm:NAME or path/to/file.py:FUNCTION")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--input", default="1x3x224x224", help="input shape, e.g. 1x3x224x224")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_measure)

    p = sub.add_parser("validate", help="predict and measure networks here; compare")
    p.add_argument("model", help="predictor file")
    p.add_argument("nets", nargs="+", metavar="NET", help="networks, as for predict")
    p.add_argument("--input", default="1x3x224x224", help="input shape (default 1x3x224x224)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--plot", default="validation.png", help="predicted-against-measured PNG "
                   "to write (default validation.png; '' for none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_validate)

    p = sub.add_parser("fit", help="fit a predictor on measurement CSVs")
    p.add_argument("data", nargs="+", help="measurement CSV files (DESIGN.md schema)")
    p.add_argument("-o", "--output", required=True, help="predictor file to write")
    p.add_argument("--card", help="also write the model card as Markdown to this file")
    p.set_defaults(run=_fit)

    p = sub.add_parser("score", help="errors of a predictor on measured rows")
    p.add_argument("model", help="predictor file")
    p.add_argument("data", nargs="+", help="measurement CSV files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_score)

    p = sub.add_parser("predict", help="per-layer runtime, power and energy of a network")
    p.add_argument("model", help="predictor file")
    p.add_argument("net", help="torchvision:NAME, timm:NAME or path/to/file.py:FUNCTION")
    p.add_argument("--input", default="1x3x224x224", help="input shape, e.g. 1x3x224x224 "
                   "(comma-separate several inputs)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--top", type=int, default=5, help="how many hotspot layers to list")
    p.set_defaults(run=_predict)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except NeuralPowerError as e:
        print(f"neuralpower {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"neuralpower {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("NEURALPOWER_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"neuralpower {args.command}: internal error: {type(e).__name__}: {msg} "
              "(set NEURALPOWER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

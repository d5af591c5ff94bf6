"""noiselab's attack suites against an independent implementation (torchattacks) on trained models, same points.

    .venv/bin/python bench/independent_check.py docs/results/weights/*.pt --data mnist \
        --data-root ../shared/data/mnist \
        --limit 300 --eps 0.1 0.2 --out docs/results/full-cpu/independent_check.json

For each checkpoint and eps: robust accuracy under noiselab's strong suite (and the light one, to show what the
default used to report) beside the worst case over torchattacks' APGD-CE, APGD-DLR, APGD-T (9 targets) and PGD-100
(noiselab.experiments.independent). "excess" is noiselab minus the reference: the issue's bar is <= 1 point for the
strong suite. Writes JSON after every model, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from noiselab import data as data_module  # noqa: E402
from noiselab.checkpoint import load_model  # noqa: E402
from noiselab.evaluate import robust_accuracy, worst_case  # noqa: E402
from noiselab.experiments.independent import independent_robust_accuracy  # noqa: E402
from noiselab.experiments.records import environment, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", default="mnist-embedded")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--limit", type=int, default=300, help="test examples (the first N)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--suites", nargs="+", default=["strong", "light"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = data_module.load(args.data, root=args.data_root)
    x, y = data.tensors("test", limit=args.limit)
    report = {"benchmark": "independent_check", "data": args.data, "limit": args.limit, "eps": args.eps,
              "environment": environment(), "models": []}
    for path in args.checkpoints:
        model, state = load_model(path)
        model.eval()
        entry = {"checkpoint": str(path), "config": state["config"], "suites": {}}
        for name in args.suites:
            started = time.perf_counter()
            table = worst_case(robust_accuracy(model, x, y, eps=args.eps, attacks=name))
            entry["suites"][name] = {"accuracy": table["accuracy"].tolist(),
                                     "seconds": round(time.perf_counter() - started, 1)}
        started = time.perf_counter()
        reference = independent_robust_accuracy(model, x, y, args.eps, classes=len(data.classes))
        entry["independent"] = {"accuracy": reference["accuracy"].tolist(),
                                "seconds": round(time.perf_counter() - started, 1)}
        entry["excess"] = {name: [round(a - b, 4) for a, b in zip(entry["suites"][name]["accuracy"],
                                                                  entry["independent"]["accuracy"])]
                           for name in args.suites}
        report["models"].append(entry)
        print(f"{Path(path).name}: " + "; ".join(
            f"eps {e:g}: " + ", ".join(f"{name} {entry['suites'][name]['accuracy'][i]:.3f}" for name in args.suites)
            + f", independent {entry['independent']['accuracy'][i]:.3f}" for i, e in enumerate(args.eps)), flush=True)
        if args.out:
            write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

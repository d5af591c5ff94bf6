"""Make the starter models that ship with noiselab, so the lab has trained models the moment it opens.

    python -m noiselab.starter.make_starter            # writes noiselab/starter/*.pt and manifest.json
    python -m noiselab.starter.make_starter --out DIR  # somewhere else (e.g. to compare with the shipped ones)

Each model is trained by noiselab's own CLI (`noiselab train`, in a subprocess) on the embedded MNIST subset, on
the CPU, seed 0: LeNet5 with cross-entropy, with the paper's noise training at two sigmas (paper rules), and with
Madry's PGD adversarial training at eps = 0.3 (eps ramped up over the first half of training, as the CLI advises
for short runs at eps = 0.3). The checkpoint is then cut to what the lab needs (config, weights, per-epoch history;
Adam's moment estimates, two thirds of the file, are dropped), its clean accuracy is measured on the embedded test
split, and manifest.json records, per model: name, file, the exact command, sigma, the accuracy and a sha256.

Budget (2-core CPU): 5 epochs each. Unloaded, vanilla takes about 4 s an epoch and noise training about 7 s; PGD-AT
runs 5 attack steps per batch (not the CLI's default 10) to stay at roughly 30 s an epoch; the set then trains in
about 4 minutes. Four LeNet5 checkpoints of 0.7 MB make about 3 MB in all. An interrupted run continues where it
stopped (the commands use --resume; finished models are not retrained).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
FORMAT = "noiselab-starter"
VERSION = 1
# Settings every starter shares; written out in full in each command so the command stands alone.
# Full checkpoints go outside the package (never shipped, never committed by accident); kept for --resume.
DEFAULT_WORK = Path.home() / ".cache" / "noiselab" / "starter-work"
COMMON = ["--model", "lenet5", "--dataset", "mnist-embedded", "--seed", "0", "--device", "cpu"]


@dataclass(frozen=True)
class Starter:
    name: str                 # shown in the lab's dropdowns
    file: str
    arguments: list[str] = field(default_factory=list)
    sigma: float = 0.0        # the training noise (0: none)


STARTERS = [
    Starter("vanilla", "vanilla.pt", ["--method", "vanilla", "--epochs", "5"]),
    Starter("noise σ=0.3", "noise-0.3.pt",
            ["--method", "noise", "--sigma", "0.3", "--relu", "paper", "--pool", "paper", "--epochs", "5"], 0.3),
    Starter("noise σ=0.8", "noise-0.8.pt",
            ["--method", "noise", "--sigma", "0.8", "--relu", "paper", "--pool", "paper", "--epochs", "5"], 0.8),
    Starter("PGD-AT ε=0.3", "pgd-at-0.3.pt",
            ["--method", "pgd_at", "--eps", "0.3", "--eps-warmup", "0.5", "--pgd-steps", "5", "--epochs", "5"]),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def command_for(starter: Starter) -> list[str]:
    """The CLI command that trains `starter` into its file in the current folder."""
    return ["noiselab", "train", *COMMON, *starter.arguments, "--out", starter.file, "--resume", "--quiet"]


def make(out: Path = HERE, work: Path | None = None) -> dict:
    """Train (or finish training) every starter, slim and evaluate it, and write `out`/manifest.json."""
    from noiselab import __version__
    from noiselab.checkpoint import load_checkpoint, load_model, save_weights_only
    from noiselab.data import load
    from noiselab.train import accuracy

    out = Path(out)
    work = Path(work) if work is not None else DEFAULT_WORK  # full checkpoints (with Adam's state), for --resume
    work.mkdir(parents=True, exist_ok=True)
    test_images, test_labels = load("mnist-embedded").split("test")
    entries = []
    for starter in STARTERS:
        command = command_for(starter)
        print(f"{starter.name}: {shlex.join(command)}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # `python -m noiselab.cli` is the `noiselab` script's code without needing the script on PATH
        subprocess.run([sys.executable, "-m", "noiselab.cli", *command[1:]], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        state = load_checkpoint(work / starter.file)
        save_weights_only(out / starter.file, state)
        model, _ = load_model(out / starter.file)
        test_accuracy = accuracy(model, test_images, test_labels)
        train_seconds = sum(row["seconds"] for row in state["history"])
        print(f"  test accuracy {test_accuracy:.4f}; trained in {train_seconds:.0f} s", file=sys.stderr, flush=True)
        entries.append({
            "name": starter.name,
            "file": starter.file,
            "command": shlex.join(command),
            "method": state["config"]["method"],
            "sigma": starter.sigma,
            "epochs": state["config"]["epochs"],
            "test_accuracy": round(test_accuracy, 4),
            "test_split": f"mnist-embedded test ({len(test_labels)} digits)",
            "train_seconds": round(train_seconds, 1),   # summed epoch times, as measured when it was trained
            "make_seconds": round(wall, 1),             # this run's wall time (near 0 when already trained)
            "bytes": (out / starter.file).stat().st_size,
            "sha256": sha256(out / starter.file),
        })
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "about": "LeNet5 models trained on noiselab's embedded MNIST subset by noiselab/starter/make_starter.py; "
                 "the .pt files are weights-only noiselab checkpoints (config, weights, history; no optimizer state).",
        "made_with": {"noiselab": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "models": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .pt files and manifest.json")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"folder for full checkpoints ({DEFAULT_WORK})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = make(args.out, args.work)
    for entry in manifest["models"]:
        print(f"{entry['name']:<14} {entry['test_accuracy']:.4f}  {entry['file']}")
    print(f"done in {time.perf_counter() - start:.0f} s; the work folder (full checkpoints) can be deleted",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

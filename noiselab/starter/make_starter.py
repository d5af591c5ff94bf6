"""Make the starter models that ship with noiselab, so the lab has trained models the moment it opens.

    python -m noiselab.starter.make_starter            # writes noiselab/starter/*.pt and manifest.json
    python -m noiselab.starter.make_starter --out DIR  # somewhere else (e.g. to compare with the shipped ones)

The starters are models of the full-scale verdict (docs/results.md): LeNet5 trained on all 60,000 MNIST training
digits for 10 epochs (batch 128, Adam at lr 1e-3, on the CPU; seed 0, vanilla seed 2) with cross-entropy, with the
paper's noise training at two sigmas (paper rules), and with Madry's PGD adversarial training at eps = 0.3 (10 steps,
eps ramped up over the first 30% of the steps): the settings of `noiselab reproduce fig4`'s full preset.

Each is made by noiselab's own CLI (`noiselab train ... --resume`, in a subprocess). Where the verdict's committed
weights-only checkpoint of that very training exists (`--adopt`, default docs/results/weights/), it is put in the
work folder first and the CLI takes it as the finished training (it refuses one made with other settings), so the
shipped starters are the verdict's models, not retrainings of them. The checkpoint is then cut to what the lab needs
(config, weights, per-epoch history), its clean accuracy is measured on the embedded test split (2,000 digits that
MNIST's test split holds, never trained on), and manifest.json records, per model: name, file, the command, sigma,
the accuracy and a sha256.

Budget (2-core CPU) when nothing is adopted: vanilla about 3-5 minutes, noise training about 7, PGD-AT 40-50. An
interrupted run continues where it stopped (the commands use --resume; finished models are not retrained).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
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
# Settings every starter shares (fig4's full preset); written out in full in each command so the command stands
# alone. Full checkpoints go outside the package (never shipped, never committed by accident); kept for --resume.
DEFAULT_WORK = Path.home() / ".cache" / "noiselab" / "starter-work"
DEFAULT_DATA_ROOT = "../shared/data/mnist"  # from the project's root
DEFAULT_ADOPT = "docs/results/weights"      # the verdict's committed weights-only checkpoints
COMMON = ["--model", "lenet5", "--dataset", "mnist", "--device", "cpu", "--epochs", "10",
          "--batch-size", "128", "--lr", "0.001", "--lr-schedule", "constant", "--eps-warmup", "0.3"]


@dataclass(frozen=True)
class Starter:
    name: str                 # shown in the lab's dropdowns
    file: str
    arguments: list[str] = field(default_factory=list)
    sigma: float = 0.0        # the training noise (0: none)
    verdict_file: str = ""    # the same training's weights-only checkpoint among the verdict's (--adopt)


STARTERS = [
    # vanilla's seed 0 ended its 10 epochs at 98.85% on MNIST's 10,000 test digits, seed 2 at 99.10%: the lab's
    # vanilla reference is the one at the usual >= 99%
    Starter("vanilla", "vanilla.pt", ["--method", "vanilla", "--seed", "2"], verdict_file="vanilla-seed2.pt"),
    Starter("noise σ=0.3", "noise-0.3.pt", ["--method", "noise", "--sigma", "0.3", "--relu", "paper", "--pool", "paper",
                                            "--seed", "0"],
            0.3, "noise-sigma0.3-seed0.pt"),
    Starter("noise σ=0.8", "noise-0.8.pt", ["--method", "noise", "--sigma", "0.8", "--relu", "paper", "--pool", "paper",
                                            "--seed", "0"],
            0.8, "noise-sigma0.8-seed0.pt"),
    Starter("PGD-AT ε=0.3", "pgd-at-0.3.pt",
            ["--method", "pgd_at", "--eps", "0.3", "--pgd-steps", "10", "--seed", "0"], 0.0,
            "pgd_at-eps0.3-seed0.pt"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def command_for(starter: Starter, data_root: str | Path = DEFAULT_DATA_ROOT) -> list[str]:
    """The CLI command that trains `starter` into its file in the current folder."""
    return ["noiselab", "train", *COMMON, "--data-root", str(data_root), *starter.arguments, "--out", starter.file,
            "--resume", "--quiet"]


def make(out: Path = HERE, work: Path | None = None, data_root: str | Path = DEFAULT_DATA_ROOT,
         adopt: str | Path | None = DEFAULT_ADOPT) -> dict:
    """Train (or finish training, or adopt the verdict's finished training of) every starter, slim and evaluate it,
    and write `out`/manifest.json."""
    from noiselab import __version__
    from noiselab.checkpoint import load_checkpoint, load_model, save_weights_only
    from noiselab.data import load
    from noiselab.train import accuracy

    out = Path(out)
    work = Path(work) if work is not None else DEFAULT_WORK  # full checkpoints (with Adam's state), for --resume
    work.mkdir(parents=True, exist_ok=True)
    test_images, test_labels = load("mnist-embedded").split("test")
    entries = []
    if not any(Path(data_root).glob("train-images*")):
        raise SystemExit(f"no MNIST training files in {data_root}: pass --data-root with the folder of MNIST's IDX "
                         "files (the starters train on the full MNIST)")
    for starter in STARTERS:
        command = command_for(starter, data_root)
        print(f"{starter.name}: {shlex.join(command)}", file=sys.stderr, flush=True)
        adopted = Path(adopt) / starter.verdict_file if adopt else None
        if adopted is not None and adopted.is_file() and not (work / starter.file).exists():
            shutil.copyfile(adopted, work / starter.file)  # the CLI's --resume takes it as the finished training
            print(f"  adopting {adopted} (the verdict's model)", file=sys.stderr, flush=True)
        start = time.perf_counter()
        # `python -m noiselab.cli` is the `noiselab` script's code without needing the script on PATH; run in the
        # work folder, so the data root is made absolute
        run = command_for(starter, Path(data_root).resolve())
        finished = subprocess.run([sys.executable, "-m", "noiselab.cli", *run[1:]], cwd=work,
                                  stdout=subprocess.DEVNULL)
        if finished.returncode != 0:
            raise SystemExit(f"{starter.name}: `noiselab train` stopped with exit status {finished.returncode} (its "
                             f"message is above); the work folder {work} keeps what was done")
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
            "command": shlex.join(command),  # from the project's root
            "trained_on": f"MNIST training split (60,000 digits, {data_root})",
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
        "about": "LeNet5 models trained on all 60,000 MNIST training digits (models of the full-scale "
                 "verdict, docs/results.md) by noiselab/starter/make_starter.py; the .pt files are weights-only "
                 "noiselab checkpoints (config, weights, history; no optimizer state).",
        "made_with": {"noiselab": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "models": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .pt files and manifest.json")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"folder for full checkpoints ({DEFAULT_WORK})")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                        help=f"MNIST's IDX files (default {DEFAULT_DATA_ROOT})")
    parser.add_argument("--adopt", default=DEFAULT_ADOPT,
                        help=f"the verdict's weights-only checkpoints, taken as finished trainings (default "
                             f"{DEFAULT_ADOPT}; '' to train everything)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = make(args.out, args.work, args.data_root, args.adopt or None)
    for entry in manifest["models"]:
        print(f"{entry['name']:<14} {entry['test_accuracy']:.4f}  {entry['file']}")
    print(f"done in {time.perf_counter() - start:.0f} s; the work folder (full checkpoints) can be deleted",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

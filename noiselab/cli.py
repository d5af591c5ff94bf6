"""The `noiselab` command.

    noiselab demo [--model lenet5] [--sigma 0.5] [--samples 4000] [--seed 0]
    noiselab train --method noise --sigma 0.5 --epochs 3 --out runs/noise.pt [--resume]
    noiselab attack runs/noise.pt --eps 0.1 0.2 0.3 [--suite strong|light|thorough] [--checks]
    noiselab sweep --methods noise sampled --sigmas 0.3 0.8 --seeds 2 --out results/sweep [--backend ray]
    noiselab status results/sweep
    noiselab reproduce fig4 [--quick] --out results/

`demo` shows the core at work, offline, in seconds on a CPU: the two ReLU rules against the exact
moments of the censored Gaussian, then first-layer noise propagated through a network in closed form
under each rule set, layer by layer, beside Monte Carlo sampling of the same noise.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch

from .covariance import COVARIANCE_MODES
from .experiments.names import EXPERIMENT_NAMES
from .models import MODELS, build
from .moments import POOL_RULES, RELU_RULES, relu_moments
from .propagate import monte_carlo, propagate


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _relative_error(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float((estimate - reference).abs().mean() / reference.abs().mean().clamp_min(1e-12))


@torch.no_grad()
def demo(model_name: str, sigma: float, samples: int, seed: int, out=sys.stdout) -> None:
    print("ReLU(Z), Z ~ N(mu, 1): the two rules against the exact moments", file=out)
    print(f"{'mu':>6} {'exact mean':>11} {'paper mean':>11} {'exact var':>10} {'paper var':>10}", file=out)
    mu = torch.tensor([-3.5, -2.0, -1.0, 0.0, 1.0, 2.0, 3.5], dtype=torch.float64)
    ones = torch.ones_like(mu)
    exact_mean, exact_var = relu_moments(mu, ones, "moment")
    paper_mean, paper_var = relu_moments(mu, ones, "paper")
    for row in zip(mu, exact_mean, paper_mean, exact_var, paper_var):
        print(f"{row[0]:6.1f} {row[1]:11.4f} {row[2]:11.4f} {row[3]:10.4f} {row[4]:10.4f}", file=out)

    torch.manual_seed(seed)
    model = build(model_name).eval()
    x = torch.rand(4, *model.input_shape)  # an untrained model and random images: the rules, not a task
    print(
        f"\n{type(model).__name__} (untrained, seed {seed}), 4 random inputs, sigma = {sigma}: "
        f"closed form vs Monte Carlo ({samples} samples)",
        file=out,
    )
    start = time.perf_counter()
    reference, reference_layers = monte_carlo(model, x, sigma, samples, seed=seed, return_layers=True)
    mc_seconds = time.perf_counter() - start
    rule_sets = [("paper", "paper"), ("moment", "paper"), ("paper", "clark"), ("moment", "clark")]
    results = {}
    for relu, pool in rule_sets:
        start = time.perf_counter()
        output, layers = propagate(model, x, sigma, relu=relu, pool=pool, return_layers=True)
        results[(relu, pool)] = (output, layers, time.perf_counter() - start)

    header = " ".join(f"{r + '/' + p:>13}" for r, p in rule_sets)
    print(f"relative error of the propagated mean / variance, per layer (relu/pool rules)\n{'layer':<14} {header}",
          file=out)
    for i, ref in enumerate(reference_layers):
        cells = []
        for key in rule_sets:
            layer = results[key][1][i]
            cells.append(f"{_relative_error(layer.mean, ref.mean):6.3f}/{_relative_error(layer.var, ref.var):6.3f}")
        print(f"{ref.name + ' ' + ref.kind:<14} " + " ".join(f"{c:>13}" for c in cells), file=out)
    timing = ", ".join(f"{r}/{p} {results[(r, p)][2] * 1e3:.1f} ms" for r, p in rule_sets)
    print(f"\ntime: Monte Carlo {mc_seconds:.2f} s; closed form {timing}", file=out)
    predicted = model(x).argmax(1)
    agree = (reference.mean.argmax(1) == predicted).float().mean()
    print(f"expectation model's class = Monte Carlo mean's class for {agree:.0%} of the inputs", file=out)


def _eps(text: str) -> float:
    value = _nonnegative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1] (images are in [0, 1]), got {text}")
    return value


METHODS_NAMES = ("vanilla", "noise", "sampled", "pgd_at", "fgsm_rs")


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .data import DATASETS
    from .propagate import NOISE_PLACEMENTS
    from .train import LR_SCHEDULES, METHODS, NOISE_LOSSES, SIGMA_MODES, TrainConfig

    defaults = TrainConfig()
    parser.add_argument("--method", choices=list(METHODS), default=defaults.method)
    parser.add_argument("--model", choices=sorted(MODELS), default=defaults.model)
    parser.add_argument("--dataset", choices=DATASETS, default=defaults.dataset)
    parser.add_argument("--data-root", default=None, help="folder holding the data set's files")
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    parser.add_argument("--lr", type=_nonnegative_float, default=defaults.lr,
                        help="Adam's learning rate (the schedule's peak)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                        help="onecycle: up over the first 20%% of the steps, then down along a cosine; constant")
    parser.add_argument("--sigma", type=_nonnegative_float, default=defaults.sigma,
                        help="noise std at the first pre-activation (noise, sampled); the start if learnable")
    parser.add_argument("--learnable-sigma", action="store_true")
    parser.add_argument("--bimodel-alpha", type=_nonnegative_float, default=defaults.bimodel_alpha)
    parser.add_argument("--relu", choices=RELU_RULES, default=defaults.relu)
    parser.add_argument("--pool", choices=POOL_RULES, default=defaults.pool)
    parser.add_argument("--covariance", choices=COVARIANCE_MODES, default=defaults.covariance,
                        help="noise: the closed form's units taken as independent (diagonal, the paper) or their "
                             "covariance carried (full-linear, full: far closer to sampling, hundreds of times "
                             "dearer; docs/propagation.md)")
    parser.add_argument("--loss", choices=list(NOISE_LOSSES), default=defaults.loss,
                        help="noise: the stochastic loss, one of its terms alone, or cross-entropy on the means")
    parser.add_argument("--noise-at", choices=NOISE_PLACEMENTS, default=defaults.noise_at,
                        help="noise, sampled: the first pre-activation (the paper) or the input")
    parser.add_argument("--sigma-mode", choices=SIGMA_MODES, default=defaults.sigma_mode,
                        help="noise, sampled: sigma as is, or times each channel's std (relative)")
    parser.add_argument("--eps", type=_eps, default=defaults.eps, help="budget of pgd_at and fgsm_rs")
    parser.add_argument("--eps-warmup", type=_eps, default=defaults.eps_warmup,
                        help="ramp eps up linearly over this fraction of the steps (pgd_at, fgsm_rs)")
    parser.add_argument("--pgd-steps", type=_positive_int, default=defaults.pgd_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-limit", type=_positive_int, default=None, help="train on the first N examples")
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA when present), cpu, cuda")


def _config_from(args: argparse.Namespace):
    from .train import TrainConfig

    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def _stop_on_interrupt() -> threading.Event:
    """Ctrl-C (or SIGTERM) asks training to stop after the current batch, checkpoint included."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this batch (press Ctrl-C again to abort at once)", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .train import train

    config = _config_from(args).validate()
    out = Path(args.out)
    bar = tqdm(total=None, unit="batch", desc=f"{config.method}", file=sys.stderr, disable=args.quiet)

    def progress(p):
        if bar.total is None:
            bar.total = p.total_steps
        bar.update(p.step - bar.n)
        bar.set_postfix(epoch=p.epoch + 1, loss=f"{p.loss:.4f}", acc=f"{p.accuracy:.3f}", sigma=f"{p.sigma:.3f}")

    result = train(config, progress=None if args.quiet else progress, stop=_stop_on_interrupt(), checkpoint=out,
                   resume=args.resume, progress_every=args.progress_every)
    bar.close()
    for row in result.history:
        print(json.dumps(row))
    if result.stopped:
        print(f"stopped at step {result.steps}; saved to {out}. Continue with the same command and --resume.",
              file=sys.stderr)
        return 130
    print(f"saved {out}", file=sys.stderr)
    return 0


def attack_command(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import load
    from .evaluate import masking_checks, robust_accuracy
    from .train import resolve_device

    device = resolve_device(args.device)
    model, state = load_model(args.checkpoint, map_location=device)
    config = state["config"]
    data = load(args.dataset or config["dataset"], root=args.data_root or config.get("data_root"), device=device)
    x, y = data.tensors("test", limit=args.limit)
    attacks = _chosen_attacks(args, "attack")

    def progress(eps: float, stage: str) -> None:
        if not args.quiet:
            print(f"eps {eps:g}: {stage} done", file=sys.stderr, flush=True)

    table = robust_accuracy(model, x, y, eps=args.eps, attacks=attacks, seed=args.seed, progress=progress)
    print(table.to_string(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    if args.checks:
        for flag in masking_checks(model, x, y, table, classes=len(data.classes)):
            detail = f": {flag.message}" if flag.flagged else ""
            print(f"{'FLAGGED' if flag.flagged else 'ok':>8} {flag.name}{detail}")
    return 0


def _suite(text: str) -> str:
    from .attacks import check_suite

    try:
        return check_suite(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _chosen_attacks(args: argparse.Namespace, command: str) -> list:
    """--attacks (each with --steps and --restarts where it takes them) if given, else the suite --suite names;
    a note on stderr whenever the choice is not the strong suite, whose numbers are the ones to quote."""
    from .attacks import SUITES, suite

    if args.attacks is None:
        if SUITES[args.suite].light:
            print(f"noiselab {command}: note: the {args.suite!r} suite is {SUITES[args.suite].description}",
                  file=sys.stderr)
        return suite(args.suite)
    options = {key: value for key, value in (("steps", args.steps), ("restarts", args.restarts)) if value}
    print(f"noiselab {command}: note: --attacks replaces the strong suite; robust accuracy from a hand-picked "
          "list can overstate robustness (noise-trained models most)", file=sys.stderr)
    return [name if name == "fgsm" else [name, dict(options)] for name in args.attacks]


def _add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    from .attacks import ATTACKS, DEFAULT_SUITE, SUITES

    group = parser.add_argument_group("how models are attacked")
    group.add_argument("--suite", type=_suite, default=DEFAULT_SUITE,
                       help=f"a named attack suite, one of {', '.join(SUITES)} (default {DEFAULT_SUITE}: "
                            f"{SUITES[DEFAULT_SUITE].description})")
    group.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=None,
                       help="attack with these instead of the suite (a quick look, not a number to quote)")
    group.add_argument("--steps", type=_positive_int, default=None, help="with --attacks: steps of pgd/apgd")
    group.add_argument("--restarts", type=_positive_int, default=None, help="with --attacks: restarts of pgd/apgd")
    group.add_argument("--limit", type=_positive_int, default=1000, help="test examples attacked")


def _hooks() -> dict:
    """Progress for sweeps: a bar over the training steps of the cell in hand, and a line per cell and phase."""
    from tqdm import tqdm

    bar = None

    def on_train_progress(overrides: dict, p) -> None:
        nonlocal bar
        if bar is None or bar.total != p.total_steps or p.step <= bar.n:
            if bar is not None:
                bar.close()
            bar = tqdm(total=p.total_steps, initial=p.step - 1, unit="batch", file=sys.stderr, leave=False)
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.3f}", acc=f"{p.accuracy:.2f}")

    def progress(message: str) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        print(message, file=sys.stderr, flush=True)

    return {"progress": progress, "on_train_progress": on_train_progress, "stop": _stop_on_interrupt()}


def _sweep_hooks(backend: str) -> tuple[dict, Callable[[], None]]:
    """The progress hooks for a sweep on `backend`, and what closes their bar when it ends."""
    if backend == "local":
        return _hooks(), lambda: None
    return _cell_bar_hooks()


def _cell_bar_hooks() -> tuple[dict, Callable[[], None]]:
    """Progress for sweeps on Ray: a bar over the cells (running and failed counts beside it), a line per event."""
    from tqdm import tqdm

    bar = None

    def on_status(status) -> None:
        nonlocal bar
        counts = status.counts()
        if bar is None:
            bar = tqdm(total=len(status.payload["cells"]), unit="cell", file=sys.stderr, desc="cells")
        bar.n = counts["done"]
        bar.set_postfix(running=counts["training"] + counts["attacking"], failed=counts["failed"], refresh=False)
        bar.refresh()

    def progress(message: str) -> None:
        (bar.write if bar is not None else print)(message, file=sys.stderr)

    def close() -> None:
        if bar is not None:
            bar.close()

    return {"progress": progress, "on_status": on_status, "stop": _stop_on_interrupt()}, close


def _backend_arguments(args: argparse.Namespace) -> dict:
    if args.backend == "local":
        if args.address is not None:
            raise ValueError("--address names a Ray cluster to join: add --backend ray")
        return {"backend": "local"}
    from .experiments.ray_backend import RayOptions

    options = RayOptions(address=args.address, num_cpus=args.ray_cpus, cpus_per_cell=args.cpus_per_cell,
                         gpus_per_cell=args.gpus_per_cell, max_retries=args.max_retries,
                         report_interval=args.report_interval).validate()
    return {"backend": "ray", "ray_options": options}


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the cells run")
    group.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="local: one after another in this process (default); ray: each cell a Ray task "
                            '(pip install "noiselab[ray]")')
    group.add_argument("--address", default=None,
                       help="ray: a cluster to join (auto, HOST:6379, ray://HOST:10001); default: start one here")
    group.add_argument("--ray-cpus", type=_positive_int, default=None, help="ray: CPUs of the local Ray (default all)")
    group.add_argument("--cpus-per-cell", type=_positive_float, default=1.0, help="ray: CPUs each cell holds")
    group.add_argument("--gpus-per-cell", type=_positive_float, default=1.0,
                       help="ray: GPU share of each cell where the cluster has GPUs (0.25: four cells a GPU)")
    group.add_argument("--max-retries", type=int, default=3, help="ray: reruns of a cell whose worker died")
    group.add_argument("--report-interval", type=_positive_float, default=1.0,
                       help="ray: seconds between a running cell's reports to status.json (default 1)")


def sweep_command(args: argparse.Namespace) -> int:
    from .experiments import EvalSpec, robust_table, run_sweep, summarize
    from .experiments.sweep import CellsFailed

    base = _config_from(args).validate()
    cells = []
    for seed in range(args.seed, args.seed + args.seeds):
        for method in args.methods:
            if method in ("noise", "sampled"):
                cells += [{"method": method, "sigma": s, "seed": seed} for s in args.sigmas]
            elif method in ("pgd_at", "fgsm_rs"):
                cells += [{"method": method, "eps": e, "seed": seed} for e in args.train_eps]
            else:
                cells.append({"method": method, "seed": seed})
    evaluation = EvalSpec(list(args.eval_eps), _chosen_attacks(args, "sweep"), args.limit)
    backend = _backend_arguments(args)
    hooks, close_bar = _sweep_hooks(args.backend)
    try:
        results = run_sweep("sweep", base, cells, evaluation, args.out, **backend, **hooks)
    except CellsFailed as error:
        close_bar()
        print(f"noiselab sweep: error: {error}", file=sys.stderr)
        return 2
    close_bar()
    summary = summarize(robust_table(results)) if results["cells"] else None
    if summary is not None:
        print(summary.to_string(index=False))
        _save_sweep_summary(summary, Path(args.out))
    done = len(results["cells"])
    print(f"{done} of {len(cells)} cells done; results in {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0 if done == len(cells) else 130


def _save_sweep_summary(summary, out: Path) -> None:
    """The finished cells' summary as <out>/summary.csv and its chart, robust accuracy against eps (sweep.html,
    sweep.png); without Altair (a machine with the core only) the CSV alone, saying so."""
    summary.to_csv(out / "summary.csv", index=False)
    try:
        from .charts import robustness_chart, save_chart
    except ImportError as error:
        print(f"no chart of the sweep ({error}); the summary is in {out / 'summary.csv'}", file=sys.stderr)
        return
    files = save_chart(robustness_chart(summary, f"robust accuracy against ε — {out.name}"), out, "sweep")
    print(f"summary in {out / 'summary.csv'}, chart in {', '.join(str(f) for f in files)}", file=sys.stderr)


def reproduce_command(args: argparse.Namespace) -> int:
    from .experiments.reproduce import reproduce
    from .experiments.sweep import CellsFailed

    hooks, close_bar = _sweep_hooks(args.backend)
    try:
        output = reproduce(args.experiment, args.out, quick=args.quick, data_root=args.data_root,
                           device=args.device, epochs=args.epochs, train_limit=args.train_limit,
                           test_limit=args.test_limit, suite=args.suite, eval_eps=args.eval_eps,
                           **_backend_arguments(args), **hooks)
    except CellsFailed as error:
        close_bar()
        print(f"noiselab reproduce: error: {error}", file=sys.stderr)
        return 2
    close_bar()
    print(output["summary"].to_string(index=False, max_rows=60))
    for path in output["files"]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def status_command(args: argparse.Namespace) -> int:
    from .experiments.status import format_status, read_status

    print(format_status(read_status(args.out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="noiselab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="the closed forms beside Monte Carlo, on the CPU, offline")
    demo_parser.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    demo_parser.add_argument("--sigma", type=_nonnegative_float, default=0.5, help="noise std (default 0.5)")
    demo_parser.add_argument("--samples", type=_positive_int, default=4000, help="Monte Carlo draws (default 4000)")
    demo_parser.add_argument("--seed", type=int, default=0)

    train_parser = commands.add_parser("train", help="train a model; progress, Ctrl-C stops with a checkpoint")
    _add_train_arguments(train_parser)
    train_parser.add_argument("--out", required=True, help="checkpoint file (written atomically each epoch)")
    train_parser.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    train_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    train_parser.add_argument("--progress-every", type=_positive_int, default=10,
                              help="update the progress bar every N batches (each update waits for the device)")

    attack_parser = commands.add_parser("attack", help="robust accuracy of a trained model under attacks")
    attack_parser.add_argument("checkpoint")
    attack_parser.add_argument("--eps", type=_eps, nargs="+", default=[0.1, 0.2, 0.3])
    _add_attack_arguments(attack_parser)
    attack_parser.add_argument("--dataset", default=None, help="default: the checkpoint's")
    attack_parser.add_argument("--data-root", default=None)
    attack_parser.add_argument("--device", default="auto")
    attack_parser.add_argument("--seed", type=int, default=0)
    attack_parser.add_argument("--checks", action="store_true", help="run the gradient-masking checks")
    attack_parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    attack_parser.add_argument("--out", default=None, help="write the table as CSV")

    sweep_parser = commands.add_parser("sweep", help="train and attack a grid of settings; resumable")
    _add_train_arguments(sweep_parser)
    sweep_parser.add_argument("--methods", nargs="+", choices=list(METHODS_NAMES), default=["vanilla", "noise"])
    sweep_parser.add_argument("--sigmas", type=_nonnegative_float, nargs="+", default=[0.3, 0.8])
    sweep_parser.add_argument("--train-eps", type=_eps, nargs="+", default=[0.3], help="eps of pgd_at/fgsm_rs")
    sweep_parser.add_argument("--seeds", type=_positive_int, default=1, help="seeds from --seed on")
    sweep_parser.add_argument("--eval-eps", type=_eps, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    _add_attack_arguments(sweep_parser)
    sweep_parser.add_argument("--out", required=True, help="output folder (a rerun skips finished cells)")
    _add_backend_arguments(sweep_parser)

    status_parser = commands.add_parser("status", help="where each cell of a sweep stands (while it runs too)")
    status_parser.add_argument("out", help="the sweep's output folder")

    reproduce_parser = commands.add_parser("reproduce", help="one of the paper's figures or tables, or an ablation")
    reproduce_parser.add_argument("experiment", choices=EXPERIMENT_NAMES)
    reproduce_parser.add_argument("--quick", action="store_true", help="minutes on a CPU: small data, few epochs")
    reproduce_parser.add_argument("--out", default="results", help="writes into OUT/EXPERIMENT/")
    reproduce_parser.add_argument("--data-root", default=None, help="folder of the data set (full runs)")
    reproduce_parser.add_argument("--device", default="auto")
    scale = reproduce_parser.add_argument_group("between quick and full (results in a folder of their own)")
    scale.add_argument("--epochs", type=_positive_int, default=None, help="train every model this many epochs")
    scale.add_argument("--train-limit", type=_positive_int, default=None, help="on the first N training examples")
    scale.add_argument("--test-limit", type=_positive_int, default=None, help="attack the first N test examples")
    scale.add_argument("--suite", type=_suite, default=None,
                       help="attack with this named suite (default: the preset's; strong for full runs, light for "
                            "--quick)")
    scale.add_argument("--eval-eps", type=_eps, nargs="+", default=None,
                       help="attack at these eps (0, the clean accuracy, is always kept; default: the preset's)")
    _add_backend_arguments(reproduce_parser)

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            demo(args.model, args.sigma, args.samples, args.seed)
            return 0
        if args.command == "train":
            return train_command(args)
        if args.command == "sweep":
            return sweep_command(args)
        if args.command == "reproduce":
            return reproduce_command(args)
        if args.command == "status":
            return status_command(args)
        return attack_command(args)
    # bad input or a missing optional extra: one clear line, no traceback
    # (a diverged training run, FloatingPointError, is no usage error: exit 1)
    except (ValueError, FileNotFoundError, OSError, ImportError, FloatingPointError) as error:
        print(f"noiselab {args.command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, FloatingPointError) else 2


if __name__ == "__main__":
    raise SystemExit(main())

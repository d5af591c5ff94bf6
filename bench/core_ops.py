"""The measurements behind issue 6's "make it fast" list, each variant timed side by side in one run:

    .venv/bin/python bench/core_ops.py                      # on CUDA when present
    .venv/bin/python bench/core_ops.py --device cpu --only rules,conv

1. rules: the moment rules (moment ReLU, Clark's 2x2 max-pool) and the paper's, forward and forward+backward, on
   a tensor the size of LeNet5's first activation in a batch of 128 (128 x 16 x 28 x 28), channels-last as the loss
   surface runs them;
2. conv: a convolution's mean and variance as two convolutions (what noiselab does: W on the mean, W^2 on the
   variance) against one grouped convolution over both (mean and variance stacked as channels, groups=2), forward
   and forward+backward, for LeNet5's second and third convolutions and a wider one (64 -> 128 on 16 x 16);
3. square: the share of a noise training step spent squaring the weights (done once per layer per step);
4. syncs: one epoch of noise training (LeNet5, 40 steps of 128, epoch-end evaluation included) with a progress
   report, the one host sync, after every batch, every 20 batches, or none (train(progress=None));
5. precision: the closed-form loss's forward+backward in float32, under autocast (bfloat16 on a CPU, float16 on
   CUDA) and with channels-last weights and inputs: time, and the loss's and gradient's difference from float32;
6. compile: the same step through torch.compile against eager: the first call's time (compiling) and the steady
   state; a compile that fails is recorded with its error and the eager figure stands (minutes on a CPU);
7. native (a CPU): the moment ReLU (with one variance everywhere, as where the noise enters, and with a variance
   per element), Clark's 2x2 pool, and the two in turn with one variance (LeNet5's first ReLU and pool: one kernel),
   as torch ops and as noiselab.native's fused kernels, forward and forward+backward, in the usual layout as
   training runs them, at LeNet5's first activation's size.

Variants are interleaved over --rounds rounds and the median reported, so a machine that slows down for a while
does not favour one. Results as JSON with the config, versions and device (bench/results/core_ops-<device>.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from timing import fused_kernels, timed  # noqa: E402

from noiselab import data as data_module  # noqa: E402
from noiselab.experiments.records import environment, write_json  # noqa: E402
from noiselab.loss import _terms  # noqa: E402
from noiselab.models import build  # noqa: E402
from noiselab.moments import maxpool_moments, relu_maxpool_moments, relu_moments  # noqa: E402
from noiselab.propagate import Rules, propagate_unchecked, sequential_layers  # noqa: E402
from noiselab.train import TrainConfig, resolve_device, train  # noqa: E402


def interleaved(device: torch.device, variants: dict, rounds: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each variant (a callable), the variants taking turns round by round."""
    for function in variants.values():  # warm-up: allocator, kernels
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, function in variants.items():
            times[name].append(timed(device, lambda f=function: [f() for _ in range(repeats)]) / repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def rules_section(device, rounds, repeats) -> list[dict]:
    generator = torch.Generator(device="cpu").manual_seed(0)
    shape = (128, 16, 28, 28)
    mean = torch.randn(shape, generator=generator).to(device).contiguous(memory_format=torch.channels_last)
    var = torch.rand(shape, generator=generator).to(device).contiguous(memory_format=torch.channels_last)

    def forward(rule):
        def run():
            with torch.no_grad():
                rule(mean, var)
        return run

    def backward(rule):
        def run():
            m, v = mean.detach().requires_grad_(True), var.detach().requires_grad_(True)
            out_mean, out_var = rule(m, v)
            (out_mean.sum() + out_var.sum()).backward()
        return run

    rules = {"relu moment": lambda m, v: relu_moments(m, v, "moment"),
             "relu paper": lambda m, v: relu_moments(m, v, "paper"),
             "pool clark": lambda m, v: maxpool_moments(m, v, "clark"),
             "pool paper": lambda m, v: maxpool_moments(m, v, "paper")}
    variants = {f"{name}, forward": forward(rule) for name, rule in rules.items()}
    variants |= {f"{name}, forward+backward": backward(rule) for name, rule in rules.items()}
    medians = interleaved(device, variants, rounds, repeats)
    return [{"what": name, "ms": 1e3 * seconds} for name, seconds in medians.items()]


def _conv_rows(device, rounds, repeats, c_in, c_out, side, kernel, generator) -> list[dict]:
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=generator).to(device).requires_grad_(True)
    bias = torch.randn(c_out, generator=generator).to(device).requires_grad_(True)
    mean = torch.randn(128, c_in, side, side, generator=generator).to(device).requires_grad_(True)
    var = torch.rand(128, c_in, side, side, generator=generator).to(device).requires_grad_(True)

    def two():
        return F.conv2d(mean, weight, bias), F.conv2d(var, weight.square())

    def grouped():
        both = F.conv2d(torch.cat([mean, var], 1), torch.cat([weight, weight.square()]),
                        torch.cat([bias, torch.zeros_like(bias)]), groups=2)
        return both[:, :c_out], both[:, c_out:]

    def forward(function):
        def run():
            with torch.no_grad():
                function()
        return run

    def backward(function):
        def run():
            out_mean, out_var = function()
            (out_mean.sum() + out_var.sum()).backward()
        return run

    with torch.no_grad():
        (m2, v2), (mg, vg) = two(), grouped()
    same = bool(torch.allclose(m2, mg, rtol=1e-4, atol=1e-4) and torch.allclose(v2, vg, rtol=1e-4, atol=1e-4))
    medians = interleaved(device, {"two, forward": forward(two), "grouped, forward": forward(grouped),
                                   "two, forward+backward": backward(two),
                                   "grouped, forward+backward": backward(grouped)}, rounds, repeats)
    layer = f"conv {c_in}->{c_out}, {kernel}x{kernel}, on {side}x{side}"
    return [{"what": f"{layer}, {pass_}", "two_convolutions_ms": 1e3 * medians[f"two, {pass_}"],
             "grouped_ms": 1e3 * medians[f"grouped, {pass_}"],
             "grouped_over_two": medians[f"grouped, {pass_}"] / medians[f"two, {pass_}"], "same_result": same}
            for pass_ in ("forward", "forward+backward")]


def conv_section(device, rounds, repeats) -> list[dict]:
    generator = torch.Generator(device="cpu").manual_seed(0)
    return [row for shape in ((16, 32, 14, 3), (32, 64, 6, 3), (64, 128, 16, 3))
            for row in _conv_rows(device, rounds, repeats, *shape, generator)]


def _loss(mean, var, y):
    """The stochastic loss as training computes it (noiselab.train._noise: no input checks, so no host sync)."""
    mse, prob = _terms(mean, var, y)
    return (mse - prob).mean()


def _noise_step(model, layers, x, y, rules):
    output, _ = propagate_unchecked(layers, x, 0.5, rules)
    loss = _loss(output.mean, output.var, y)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def square_section(device, rounds, repeats) -> list[dict]:
    torch.manual_seed(0)
    model = build("lenet5").to(device)
    layers = sequential_layers(model)
    data = data_module.load(device=device)
    x, y = data.tensors("train", limit=128)
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]

    def squares():
        with torch.no_grad():
            for weight in weights:
                weight.square()

    medians = interleaved(device, {"step": lambda: _noise_step(model, layers, x, y, Rules()),
                                   "squares": squares}, rounds, repeats)
    return [{"what": "LeNet5 noise step (paper rules, batch 128), forward+backward", "ms": 1e3 * medians["step"]},
            {"what": "squaring every weight of LeNet5 once", "ms": 1e3 * medians["squares"],
             "share_of_step": medians["squares"] / medians["step"]}]


def syncs_section(device, rounds, repeats) -> list[dict]:  # one epoch per round: repeats does not apply
    data = data_module.load(device=device)
    config = TrainConfig(model="lenet5", method="noise", sigma=0.5, epochs=1, train_limit=128 * 40,
                         device=str(device))
    variants = {"progress every batch": dict(progress=lambda p: None, progress_every=1),
                "progress every 20 batches": dict(progress=lambda p: None, progress_every=20),
                "no progress reports": dict(progress=None)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    train(config, data=data)  # warm-up
    for _ in range(rounds):
        for name, kwargs in variants.items():
            times[name].append(timed(device, lambda k=kwargs: train(config, data=data, **k)))
    base = statistics.median(times["progress every batch"])
    return [{"what": name, "epoch_seconds": statistics.median(values),
             "ratio_to_every_batch": statistics.median(values) / base} for name, values in times.items()]


def precision_section(device, rounds, repeats) -> list[dict]:
    torch.manual_seed(0)
    data = data_module.load(device=device)
    x, y = data.tensors("train", limit=128)
    model = build("lenet5").to(device)
    layers = sequential_layers(model)
    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    channels_last = build("lenet5").to(device)
    channels_last.load_state_dict(model.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)
    rows = []
    for rules in (Rules("paper", "paper"), Rules("moment", "clark")):
        def float32(rules=rules):
            return _noise_step(model, layers, x, y, rules)

        def autocast(rules=rules):
            with torch.autocast(device.type, dtype=low):
                output, _ = propagate_unchecked(layers, x, 0.5, rules)
            loss = _loss(output.mean.float(), output.var.float(), y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        def last(rules=rules):
            return _noise_step(channels_last, sequential_layers(channels_last), x_last, y, rules)

        reference_loss = float(float32().detach())
        reference_grad = model[0].weight.grad.clone() if isinstance(model[0], torch.nn.Conv2d) else None
        checks = {}
        for name, function, net in (("autocast", autocast, model), ("channels-last", last, channels_last)):
            loss = float(function().detach())
            grad = net[0].weight.grad
            checks[name] = {"loss_relative_difference": abs(loss - reference_loss) / abs(reference_loss),
                            "first_layer_gradient_relative_difference":
                                float((grad - reference_grad).norm() / reference_grad.norm())
                                if reference_grad is not None else None}
        medians = interleaved(device, {"float32": float32, "autocast": autocast, "channels-last": last},
                              rounds, repeats)
        for name in ("float32", "autocast", "channels-last"):
            rows.append({"what": f"{rules.relu}/{rules.pool} step, {name}"
                                 + (f" ({str(low).replace('torch.', '')})" if name == "autocast" else ""),
                         "ms": 1e3 * medians[name], "ratio_to_float32": medians[name] / medians["float32"],
                         **checks.get(name, {})})
    return rows


def compile_section(device, rounds, repeats) -> list[dict]:
    torch.manual_seed(0)
    data = data_module.load(device=device)
    x, y = data.tensors("train", limit=128)
    rows = []
    for rules in (Rules("paper", "paper"), Rules("moment", "clark")):
        model = build("lenet5").to(device)
        layers = sequential_layers(model)

        def loss_of(x, y, layers=layers, rules=rules):
            output, _ = propagate_unchecked(layers, x, 0.5, rules)
            return _loss(output.mean, output.var, y)

        def step(function, model=model):
            loss = function(x, y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        row = {"what": f"{rules.relu}/{rules.pool} step"}
        try:
            compiled = torch.compile(loss_of)
            row["first_call_seconds"] = timed(device, step, compiled)
        except Exception as error:  # the eager step is what noiselab runs; record why compiling did not work
            row["compile_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
            continue
        eager_loss, compiled_loss = float(step(loss_of).detach()), float(step(compiled).detach())
        medians = interleaved(device, {"eager": lambda s=step, f=loss_of: s(f),
                                       "compiled": lambda s=step, f=compiled: s(f)}, rounds, repeats)
        rows.append(row | {"eager_ms": 1e3 * medians["eager"], "compiled_ms": 1e3 * medians["compiled"],
                           "compiled_over_eager": medians["compiled"] / medians["eager"],
                           "loss_relative_difference": abs(compiled_loss - eager_loss) / abs(eager_loss)})
    return rows


def native_section(device, rounds, repeats) -> list[dict]:
    if device.type != "cpu":
        return [{"what": "noiselab.native's kernels are CPU kernels: not timed on " + device.type}]
    generator = torch.Generator().manual_seed(0)
    shape = (128, 16, 28, 28)
    mean, var = torch.randn(shape, generator=generator), torch.rand(shape, generator=generator)
    one_variance = torch.tensor(0.25).expand(shape)
    rules = {"relu moment, one variance": lambda m, v: relu_moments(m, one_variance, "moment"),
             "relu moment": lambda m, v: relu_moments(m, v, "moment"),
             "pool clark 2x2": lambda m, v: maxpool_moments(m, v, "clark"),
             "relu moment then pool clark 2x2, one variance":
                 lambda m, v: relu_maxpool_moments(m, one_variance, "moment", "clark")}

    def run(rule, on, backward):
        def call():
            with fused_kernels(on):
                if not backward:
                    with torch.no_grad():
                        rule(mean, var)
                    return
                m, v = mean.detach().requires_grad_(True), var.detach().requires_grad_(True)
                out_mean, out_var = rule(m, v)
                (out_mean.sum() + out_var.sum()).backward()
        return call

    variants = {f"{name}, {part}, {kind}": run(rule, on, part == "forward+backward")
                for name, rule in rules.items() for part in ("forward", "forward+backward")
                for kind, on in (("torch ops", False), ("fused", True))}
    medians = interleaved(device, variants, rounds, repeats)
    rows = []
    for name in rules:
        for part in ("forward", "forward+backward"):
            ops, fused = medians[f"{name}, {part}, torch ops"], medians[f"{name}, {part}, fused"]
            rows.append({"what": f"{name}, {part}", "torch_ops_ms": 1e3 * ops, "fused_ms": 1e3 * fused,
                         "speedup": ops / fused})
    return rows


SECTIONS = {"rules": rules_section, "conv": conv_section, "square": square_section, "syncs": syncs_section,
            "precision": precision_section, "compile": compile_section, "native": native_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {tuple(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/core_ops-<device>.json)")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {tuple(SECTIONS)}")
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"core_ops-{device.type}.json"
    results = {}
    for section in sections:
        start = time.perf_counter()
        rows = SECTIONS[section](device, args.rounds, args.repeats)
        results[section] = rows
        print(f"\n{section} ({time.perf_counter() - start:.0f} s) on {device}, {torch.get_num_threads()} threads")
        for row in rows:
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        # written after every section: a run stopped at its time limit keeps the sections it finished
        write_json(out, {"benchmark": "core_ops", "config": vars(args), "environment": environment(device),
                         "threads": torch.get_num_threads(), "results": results})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

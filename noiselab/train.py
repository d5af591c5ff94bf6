"""Training: one entry point, `train(config)`, with the methods in a registry.

    >>> result = train(TrainConfig(method="noise", sigma=0.5, epochs=3), progress=print)
    >>> result.model(x)                       # the expectation model

Methods (METHODS):
  vanilla  cross-entropy on the deterministic network.
  noise    the paper: first-layer noise propagated in closed form, the stochastic loss; sigma fixed or learnable
           (learnable_sigma), with the Bimodel term -alpha sigma^2 when bimodel_alpha > 0. For the ablations,
           `loss` picks the stochastic loss (default), its MSE term alone, its probability term alone, or
           cross-entropy on the propagated means (NOISE_LOSSES).
  sampled  the same first-layer noise drawn at random each step, with cross-entropy: the obvious baseline the
           closed form has to beat.
  Both noise methods add the noise at the first pre-activation (noise_at="preact", the paper) or to the input
  (noise_at="input", as randomized smoothing does), with std sigma (sigma_mode="absolute", the paper) or sigma
  times the batch's per-channel std of what it is added to (sigma_mode="relative": the network cannot outgrow the
  noise by scaling its first layer up).
  pgd_at   Madry et al.'s PGD adversarial training at eps (pgd_steps steps of 2.5 eps / steps, random start).
  fgsm_rs  Wong et al.'s fast adversarial training: FGSM from a random start, step 1.25 eps.
  Both can ramp eps up linearly over the first eps_warmup fraction of the steps (common practice on MNIST at
  eps = 0.3, where short runs at the full budget from scratch collapse to a constant prediction).

The default recipe is Adam with a one-cycle learning rate (lr_schedule="onecycle", peak lr 3e-3, lr_at), batch
128, 3 epochs: full-MNIST LeNet5 past 99.0% test accuracy after 2-3 epochs, where Adam at a constant 1e-3 (the
recipe before, lr_schedule="constant", which the reproductions' presets keep) did not reach it in 5
(docs/performance.md, section 7).

Every epoch's row in the history records the first layer's weight norm and the std of its pre-activation on a fixed
probe of training images (the scale the noise is measured against); every progress report the weight norm.

Long runs report through `progress(TrainProgress)` after every batch (or every `progress_every` batches), stop
within one batch when `stop` (a threading.Event) is set, and, given a checkpoint path, save there atomically at
every epoch's end and when stopped; `train(..., resume=True)` continues from it, mid-epoch included, to the same
weights an uninterrupted run reaches (same seed, same device).

The device is asked for numbers (a host sync, which stalls a GPU's queue of work) only at progress reports and at
epochs' ends: the batches' losses and correct counts are summed on the device in between, and a loss that is not
finite is caught at the next report (train(progress=None) reports nothing, so it syncs once per epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_module
from . import native
from ._checks import check_sigma
from .attacks import check_eps
from .attacks._common import project, random_start
from .checkpoint import check_writable, load_checkpoint, save_checkpoint
from .covariance import check_covariance_mode
from .defenses import noisy_passes
from .loss import LearnableSigma, _terms
from .models import MODELS, build
from .moments import CLARK_POOLS, POOL_RULES, RELU_RULES
from .propagate import (
    Rules,
    check_noise_at,
    covariance_width,
    first_preactivation,
    noise_entry,
    preactivation_scale,
    propagate_unchecked,
    sequential_layers,
)

# the noise method's training losses, for the loss ablation: name -> what it is
NOISE_LOSSES = {
    "stochastic": "the paper's stochastic loss: MSE term minus probability term",
    "mse": "the stochastic loss's MSE term alone (the variance plays no part)",
    "prob": "the stochastic loss's probability term alone (maximised)",
    "ce_mean": "cross-entropy on the propagated means",
}
NOISE_METHODS = ("noise", "sampled")
SIGMA_MODES = ("absolute", "relative")
# settings that say where a run's data lies and what it runs on, not what it trains: a checkpoint or a finished sweep
# cell made under other values of these is the same training
PLACE_KEYS = ("data_root", "device")

# settings added after records were written whose default is not what those records were trained with: a record
# without the key was trained as these say (with_defaults fills them in, not the new defaults)
LEGACY = {"lr_schedule": "constant"}

LR_SCHEDULES = ("constant", "onecycle")
ONECYCLE_WARMUP = 0.2  # onecycle: the fraction of all steps the rate climbs, linearly from lr / 25 to lr


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step `step` (0-based) of `total_steps`: a function of the step alone, so a resumed run
    follows the schedule of an unbroken one. "onecycle": up linearly from lr / 25 over the first ONECYCLE_WARMUP of
    the steps, then down along a half cosine to lr / 1000 at the last step (Smith & Topin's one-cycle policy)."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < total_steps:
        raise ValueError(f"step must be an integer in [0, total_steps) = [0, {total_steps}), got {step!r}")
    if config.lr_schedule == "constant":
        return config.lr
    warmup = max(1, round(ONECYCLE_WARMUP * total_steps))
    if step < warmup:
        return config.lr * (0.04 + 0.96 * step / warmup)
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    return config.lr * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def changed_settings(stored: dict, now: dict) -> list[str]:
    """The settings of `now` that `stored` holds otherwise, PLACE_KEYS aside (both as TrainConfig.with_defaults or
    asdict give them)."""
    return sorted(k for k in now if stored.get(k) != now[k] and k not in PLACE_KEYS)


def trains_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether train() runs this configuration on channels-last activations (a speed choice: the same values to float
    rounding, another order of sums like another thread count's; each epoch's record says which): on a CPU, every
    method, noise under the paper's rules only. The LeNet5 step took 0.71x (vanilla), 0.82x (PGD-10 AT), 0.85x
    (FGSM-RS), 0.88x (noise, paper rules) and 0.94x (sampled) of the usual layout's, the moment and Clark rules' 1.23x
    (bench/train_cost.py, 2026-12-07; docs/performance.md, sections 6 and 7)."""
    if device.type != "cpu":
        return False
    return config.method != "noise" or (config.relu, config.pool, config.covariance, config.noise_at) == \
        ("paper", "paper", "diagonal", "preact")


PROBE_EXAMPLES = 512  # training images the history's pre-activation std is measured on, the same every epoch


@dataclass
class TrainConfig:
    """Everything that defines a training run; every field has a default that works offline on a CPU."""

    dataset: str = data_module.DEFAULT_DATASET
    data_root: str | None = None
    model: str = "lenet5"
    method: str = "vanilla"
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3             # Adam; the peak of the schedule
    lr_schedule: str = "onecycle"  # or "constant" (see lr_at)
    sigma: float = 0.5           # noise std at the first pre-activation (noise, sampled); initial value if learnable
    learnable_sigma: bool = False
    bimodel_alpha: float = 0.0   # > 0 adds -alpha sigma^2 (the paper's Bimodel uses 0.25)
    relu: str = "paper"
    pool: str = "paper"
    covariance: str = "diagonal"  # noise: the closed form's units independent, or their covariance carried (propagate)
    loss: str = "stochastic"     # noise: see NOISE_LOSSES
    noise_at: str = "preact"     # noise, sampled: "preact" (the paper) or "input"
    sigma_mode: str = "absolute"  # noise, sampled: sigma as is (the paper) or times the per-channel std ("relative")
    eps: float = 0.3             # pgd_at, fgsm_rs
    eps_warmup: float = 0.0      # pgd_at, fgsm_rs: ramp eps linearly from 0 over this fraction of all steps
    pgd_steps: int = 10
    seed: int = 0
    train_limit: int | None = None  # use only the first N training examples (quick modes)
    device: str = "auto"         # "auto": CUDA when present

    def validate(self) -> TrainConfig:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {tuple(METHODS)}")
        if self.dataset not in data_module.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {data_module.DATASETS}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {tuple(MODELS)}")
        if self.relu not in RELU_RULES or self.pool not in POOL_RULES:
            raise ValueError(f"relu must be one of {RELU_RULES} and pool one of {POOL_RULES}")
        check_covariance_mode(self.covariance)
        if self.covariance != "diagonal" and self.method != "noise":
            raise ValueError(f"covariance={self.covariance!r} applies to the noise method only (method is "
                             f"{self.method!r})")
        if self.loss not in NOISE_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {tuple(NOISE_LOSSES)}")
        if self.loss != "stochastic" and self.method != "noise":
            raise ValueError(f"loss={self.loss!r} applies to the noise method only (method is {self.method!r})")
        check_noise_at(self.noise_at)
        if self.noise_at != "preact" and self.method not in NOISE_METHODS:
            raise ValueError(f"noise_at={self.noise_at!r} applies to the methods {NOISE_METHODS} only "
                             f"(method is {self.method!r})")
        if self.sigma_mode not in SIGMA_MODES:
            raise ValueError(f"sigma_mode must be one of {SIGMA_MODES}, got {self.sigma_mode!r}")
        if self.sigma_mode != "absolute" and self.method not in NOISE_METHODS:
            raise ValueError(f"sigma_mode={self.sigma_mode!r} applies to the methods {NOISE_METHODS} only "
                             f"(method is {self.method!r})")
        for name in ("epochs", "batch_size", "pgd_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        check_sigma(self.sigma)
        if self.learnable_sigma and self.sigma <= 0:
            raise ValueError("sigma (the initial value) must be > 0 when learnable_sigma is set")
        check_eps(self.eps)
        if not (isinstance(self.eps_warmup, (int, float)) and 0 <= self.eps_warmup <= 1):
            raise ValueError(f"eps_warmup must be a fraction of the training in [0, 1], got {self.eps_warmup!r}")
        if not (isinstance(self.bimodel_alpha, (int, float)) and self.bimodel_alpha >= 0):
            raise ValueError(f"bimodel_alpha must be >= 0, got {self.bimodel_alpha!r}")
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 1):
            raise ValueError(f"train_limit must be None or an integer >= 1, got {self.train_limit!r}")
        return self

    @classmethod
    def with_defaults(cls, values: dict) -> dict:
        """A stored config dict (a checkpoint's, a results file's) with the settings added since it was written
        filled in with their defaults, so that old records compare and read like new ones."""
        return asdict(cls()) | LEGACY | values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**values)


@dataclass
class TrainProgress:
    step: int            # batches done, over all epochs
    total_steps: int
    epoch: int           # 0-based epoch of this batch
    loss: float          # mean over the batches since the last report (this batch's with progress_every=1)
    accuracy: float      # the same batches', of the prediction the method trains (the propagated mean for noise)
    sigma: float
    weight_norm: float = float("nan")  # the first Conv2d/Linear's weight norm after this step


@dataclass
class TrainResult:
    model: nn.Module
    sigma: float | LearnableSigma
    config: TrainConfig
    history: list[dict] = field(default_factory=list)  # one row per epoch
    stopped: bool = False
    steps: int = 0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a torch device (try 'cpu', 'cuda' or 'auto')") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return resolved


# ---- the methods: each maps one batch to (loss, logits it is scored by) --------------------------------------

@dataclass
class _Context:
    model: nn.Module
    layers: list
    sigma: float | LearnableSigma
    config: TrainConfig
    generator: torch.Generator  # on the training device: the batch's noise and random starts
    eps: float                  # this step's budget for the adversarial methods (after any warm-up)


def _sigma_value(sigma) -> Tensor | float:
    return sigma() if isinstance(sigma, LearnableSigma) else sigma


def _vanilla(ctx: _Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits = ctx.model(x)
    return F.cross_entropy(logits, y), logits


def _noise(ctx: _Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    sigma = _sigma_value(ctx.sigma)
    output, _ = propagate_unchecked(ctx.layers, x, sigma, Rules(ctx.config.relu, ctx.config.pool),
                                    noise_at=ctx.config.noise_at, relative=ctx.config.sigma_mode == "relative",
                                    covariance=ctx.config.covariance)
    if ctx.config.loss == "ce_mean":
        loss = F.cross_entropy(output.mean, y)
    else:  # with the logits' covariance where it is carried: Var(Y_k - Y_i) = var_k + var_i - 2 Cov(Y_k, Y_i)
        mse, prob = _terms(output.mean, output.var, y, getattr(output, "cov", None))
        loss = {"stochastic": mse - prob, "mse": mse, "prob": -prob}[ctx.config.loss].mean()
    if ctx.config.bimodel_alpha > 0:
        loss = loss - ctx.config.bimodel_alpha * sigma**2
    return loss, output.mean


def _sampled(ctx: _Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    sigma = _sigma_value(ctx.sigma)
    relative = ctx.config.sigma_mode == "relative"
    if ctx.config.noise_at == "input":
        noise = torch.randn(x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
        logits = ctx.model(x + (sigma * preactivation_scale(x) if relative else sigma) * noise)
    else:
        pre = first_preactivation(ctx.layers, x)
        logits = noisy_passes(ctx.layers, pre, sigma * preactivation_scale(pre) if relative else sigma, 1,
                               ctx.generator)[0]
    return F.cross_entropy(logits, y), logits


def _input_gradient_sign(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    x_adv = x_adv.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
    return gradient.sign()


def _pgd_at(ctx: _Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    eps, steps = ctx.eps, ctx.config.pgd_steps
    x_adv = random_start(x, eps, ctx.generator)
    for _ in range(steps):  # Madry: train on the final iterate
        x_adv = project(x_adv + 2.5 * eps / steps * _input_gradient_sign(ctx.model, x_adv, y), x, eps)
    logits = ctx.model(x_adv.detach())
    return F.cross_entropy(logits, y), logits


def _fgsm_rs(ctx: _Context, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    eps = ctx.eps
    x_adv = random_start(x, eps, ctx.generator)
    x_adv = project(x_adv + 1.25 * eps * _input_gradient_sign(ctx.model, x_adv, y), x, eps)
    logits = ctx.model(x_adv.detach())
    return F.cross_entropy(logits, y), logits


METHODS: dict[str, Callable[[_Context, Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "vanilla": _vanilla,
    "noise": _noise,
    "sampled": _sampled,
    "pgd_at": _pgd_at,
    "fgsm_rs": _fgsm_rs,
}


@torch.no_grad()
def first_layer_scale(layers: list, probe: Tensor) -> dict:
    """The first Conv2d/Linear's weight norm and the mean over its channels of its pre-activation's std on `probe`."""
    first = layers[noise_entry(layers)][1]
    pre = first_preactivation(layers, data_module.to_float(probe))
    return {"weight_norm": float(first.weight.norm()), "preact_std": float(preactivation_scale(pre).mean())}


# covariance != "diagonal": what one example's forward and backward keep, in units of its widest covariance (measured
# on LeNet5 with pool="clark-prerelu", bench/covariance_full.py at batch 4: ~5.9 for "full-linear", ~35 for "full"),
# with a margin
COVARIANCE_TRAINING_FACTOR = {"full-linear": 7, "full": 40}


def _available_memory(device: torch.device) -> int | None:
    """Bytes free for a training's tensors on the device (Linux's MemAvailable on a CPU), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_covariance_fits(config: TrainConfig, model: nn.Module, device: torch.device) -> None:
    """covariance != "diagonal": refuse, before any work, a batch whose covariances cannot fit in the memory free."""
    if config.covariance == "diagonal":
        return
    layers = sequential_layers(model)
    width, where = covariance_width(layers, torch.zeros((1, *model.input_shape), device=device), config.noise_at)
    per_example = COVARIANCE_TRAINING_FACTOR[config.covariance] * width * width * 4
    needed, free = per_example * config.batch_size, _available_memory(device)
    if free is not None and needed > free:
        fits = free // per_example
        raise ValueError(
            f"covariance={config.covariance!r} training of {config.model} keeps a {width} x {width} covariance per "
            f"example (after layer {where!r}) and about {per_example / 2**30:.2f} GiB per example for its backward: "
            f"{needed / 2**30:.1f} GiB at batch {config.batch_size}, more than the {free / 2**30:.1f} GiB free on "
            f"{device.type}; " + (f"use --batch-size {fits} or less, " if fits else "") + "or covariance='diagonal'")


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Clean accuracy of the expectation model on uint8 or float images."""
    if images.shape[0] == 0:
        return float("nan")
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = data_module.to_float(images[start : start + batch_size])
        correct += int((model(x).argmax(1) == labels[start : start + batch_size]).sum())
    return correct / images.shape[0]


def _step_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    # one generator per step, seeded from (seed, step): a resumed run draws the same noise as an unbroken one
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def _epoch_order(count: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))


def train(
    config: TrainConfig | None = None,
    data: data_module.Dataset | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    stop=None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress_every: int = 1,
) -> TrainResult:
    """Train a model as `config` says. See the module docstring for the methods, progress, stop and checkpoints.

    progress_every: report every this many batches (and at every epoch's end), each report covering the batches
    since the last; fewer reports mean fewer host syncs, which a GPU running a small model notices."""
    config = (config or TrainConfig()).validate()
    if isinstance(progress_every, bool) or not isinstance(progress_every, int) or progress_every < 1:
        raise ValueError(f"progress_every must be an integer >= 1, got {progress_every!r}")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = build(config.model).to(device)
    check_covariance_fits(config, model, device)
    sigma: float | LearnableSigma = LearnableSigma(config.sigma).to(device) if config.learnable_sigma \
        else float(config.sigma)
    parameters = list(model.parameters()) + (list(sigma.parameters()) if isinstance(sigma, LearnableSigma) else [])
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    history: list[dict] = []
    start_step, weights_only = 0, False
    # the epoch in progress: summed loss, correct predictions, examples seen and seconds spent (kept in a checkpoint
    # taken mid-epoch, so that a resumed epoch's row in the history covers the whole epoch, not only its end)
    partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}

    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None:
        check_writable(checkpoint)
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if checkpoint.exists():
            state = load_checkpoint(checkpoint, map_location=device)
            stored = TrainConfig.with_defaults(state["config"])
            # where the data lies and which device trains do not change what is trained
            changed = sorted(k for k in stored if stored[k] != asdict(config).get(k) and k not in PLACE_KEYS)
            if changed:
                raise ValueError(f"{checkpoint} was written with other settings ({', '.join(changed)}); "
                                 "resume with the same settings or start a new checkpoint")
            model.load_state_dict(state["model"])
            if isinstance(sigma, LearnableSigma):
                sigma.load_state_dict(state["sigma"])
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
            history, start_step = state["history"], state["step"]
            # a weights-only checkpoint (no optimizer state) stands for a finished training, never a half one
            weights_only = "optimizer" not in state
            partial.update(state.get("epoch_partial", {}))

    if data is None:
        data = data_module.load(config.dataset, root=config.data_root, device=device)
    if data.input_shape != model.input_shape:
        raise ValueError(f"{config.model} takes images {model.input_shape} but {data.name} has {data.input_shape}")
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    if config.train_limit is not None:
        images, labels = images[: config.train_limit], labels[: config.train_limit]
    test_images, test_labels = data.test_images.to(device), data.test_labels.to(device)

    # the CPU's convolutions and max-pools are faster on channels-last activations: the vanilla LeNet5 step at batch
    # 128 took 17.6 ms against 24.7 (2 threads, interleaved in one process, 2026-12-07), its max-pools 4x faster. The
    # same values to float rounding; the model goes back to the usual layout when training ends.
    channels_last = trains_channels_last(config, device) and images.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # the moment ReLU and Clark's pool run as noiselab.native's fused kernels on a CPU where they could be built: the
    # same formulas, another rounding (each epoch's record says which ran)
    fused = device.type == "cpu" and config.method == "noise" and \
        (config.relu == "moment" or config.pool in CLARK_POOLS) and native.enabled()
    layers = sequential_layers(model)
    first_weight = layers[noise_entry(layers)][1].weight
    probe = images[:PROBE_EXAMPLES]
    method = METHODS[config.method]
    steps_per_epoch = -(-images.shape[0] // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if resume and weights_only and start_step < total_steps:
        raise ValueError(f"{checkpoint} holds weights only (no optimizer state), taken at step {start_step} of "
                         f"{total_steps}: it cannot be resumed; delete it to train from the start")

    def snapshot(step: int) -> dict:
        return {
            "config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "sigma": sigma.state_dict() if isinstance(sigma, LearnableSigma) else {}, "step": step,
            "history": history,
            "epoch_partial": partial | {"seconds": partial["seconds"] + time.perf_counter() - epoch_start},
        }

    result = TrainResult(model, sigma, config, history, stopped=False, steps=start_step)
    step = start_step
    epoch_start = time.perf_counter()
    model.train()
    order_epoch, order = -1, None
    # summed on the device since the last sync: loss x examples and correct predictions, over `pending["seen"]`
    # examples from step `pending["start"]` on
    pending = {"sums": torch.zeros(2, dtype=torch.float64, device=device), "seen": 0, "start": step}

    def sync(last_step: int) -> tuple[float, float, int]:
        """Fetch the pending sums (the host sync), check the loss is finite, add them to the epoch's."""
        loss_sum, correct = pending["sums"].tolist()
        seen, first = pending["seen"], pending["start"]
        if not math.isfinite(loss_sum):
            where = f"at step {last_step}" if first == last_step else f"between steps {first} and {last_step}"
            kept = f"; {checkpoint} holds the last finished epoch" if checkpoint is not None and history else ""
            raise FloatingPointError(f"the loss became {loss_sum} {where}; lower lr or change sigma{kept}")
        pending["sums"].zero_()
        pending.update(seen=0, start=last_step + 1)
        partial["loss"] += loss_sum
        partial["correct"] += correct
        partial["seen"] += seen
        return loss_sum, correct, seen

    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        if stop is not None and stop.is_set():
            result.stopped = True
            break
        if epoch != order_epoch:
            order_epoch, order = epoch, _epoch_order(images.shape[0], config.seed, epoch).to(device)
        index = order[position * config.batch_size : (position + 1) * config.batch_size]
        x, y = data_module.to_float(images[index]), labels[index]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        warmup_steps = config.eps_warmup * total_steps
        eps_now = config.eps * min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else config.eps
        ctx = _Context(model, layers, sigma, config, _step_generator(device, config.seed, step), eps_now)
        loss, logits = method(ctx, x, y)
        pending["sums"] += torch.stack([loss.detach().double() * y.shape[0],
                                        (logits.detach().argmax(1) == y).sum().double()])
        pending["seen"] += y.shape[0]
        epoch_end = (step + 1) % steps_per_epoch == 0
        report = progress is not None and (step + 1 - pending["start"] >= progress_every or epoch_end)
        if report or epoch_end:  # before this batch's update is applied, so a non-finite loss leaves the weights
            loss_sum, correct, seen = sync(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.lr_schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, total_steps)
        optimizer.step()
        step += 1
        if report or epoch_end:
            sigma_now = float(_sigma_value(sigma).detach()) if isinstance(sigma, LearnableSigma) else sigma
        if report:
            progress(TrainProgress(step, total_steps, epoch, loss_sum / seen, correct / seen,
                                   sigma_now, float(first_weight.detach().norm())))
        if epoch_end:
            model.eval()
            history.append({
                "epoch": epoch + 1, "step": step, "loss": partial["loss"] / max(partial["seen"], 1),
                "train_accuracy": partial["correct"] / max(partial["seen"], 1),
                "test_accuracy": accuracy(model, test_images, test_labels), "sigma": sigma_now,
                "seconds": partial["seconds"] + time.perf_counter() - epoch_start,
                # the CPU's thread count sets the order of float sums: the same seed on another count is another
                # trajectory (measured: 50 steps of noise training, 1 and 2 threads, end at different weights)
                "threads": torch.get_num_threads(),
                "channels_last": channels_last,  # the activations' layout: another order of float sums too
                "fused_kernels": fused,
                **first_layer_scale(layers, probe),
            })
            model.train()
            partial.update(loss=0.0, correct=0.0, seen=0.0, seconds=0.0)
            epoch_start = time.perf_counter()  # the snapshot below holds a next epoch that has not begun
            if checkpoint is not None:
                save_checkpoint(checkpoint, snapshot(step))
            epoch_start = time.perf_counter()  # writing the checkpoint is not the next epoch's time
    if pending["seen"]:  # stopped between syncs: the stopped epoch's sums go into its checkpoint
        sync(step - 1)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
    result.steps = step
    # a weights-only checkpoint that stood for a finished training is left as it is (an optimizer never stepped
    # would pass for the training's own)
    if checkpoint is not None and (result.stopped or (step == start_step and not weights_only)):
        save_checkpoint(checkpoint, snapshot(step))
    return result

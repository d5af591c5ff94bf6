"""Training: every method learns on real data, stop/kill and resume lose nothing, checkpoints are safe."""

import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from cli_support import run_cli_each

from noiselab.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from noiselab.train import METHODS, TrainConfig, train

QUICK = dict(model="demo-cnn", train_limit=2000, batch_size=64, epochs=1, eps=0.1, pgd_steps=3, device="cpu")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_learns_real_digits_above_chance(method):
    result = train(TrainConfig(method=method, **QUICK))
    (row,) = result.history
    assert row["test_accuracy"] > 0.25, row  # chance is 0.10; the embedded data is real MNIST
    assert row["epoch"] == 1 and row["step"] == 32 and not result.stopped


def test_learnable_sigma_moves_and_stays_positive():
    progress = []
    result = train(TrainConfig(method="noise", learnable_sigma=True, sigma=1.9, bimodel_alpha=0.25, lr=1e-2,
                               **{**QUICK, "epochs": 2}), progress=progress.append)
    sigmas = [p.sigma for p in progress]
    assert sigmas[0] != pytest.approx(sigmas[-1], abs=1e-3)
    assert min(sigmas) > 0
    assert result.history[-1]["sigma"] == pytest.approx(float(result.sigma().detach()))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


@pytest.mark.parametrize("method", ["sampled", "fgsm_rs"])  # methods that draw random numbers every step
def test_stop_mid_epoch_then_resume_equals_an_unbroken_run(method, tmp_path):
    config = TrainConfig(method=method, **{**QUICK, "epochs": 2, "train_limit": 640})
    unbroken = train(config)
    stop = threading.Event()

    def stop_at_step_13(p):
        if p.step == 13:  # mid-epoch (10 steps per epoch)
            stop.set()

    checkpoint = tmp_path / "run.pt"
    first = train(config, progress=stop_at_step_13, stop=stop, checkpoint=checkpoint)
    assert first.stopped and first.steps == 13
    assert load_checkpoint(checkpoint)["step"] == 13
    resumed = train(config, checkpoint=checkpoint, resume=True)
    assert resumed.steps == 20 and not resumed.stopped
    assert_same_weights(weights(resumed.model), weights(unbroken.model))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    # the epoch cut at step 13 is summarised over all its batches, not only those after the resume
    for row, reference in zip(resumed.history, unbroken.history):
        for key in ("loss", "train_accuracy", "test_accuracy"):
            assert row[key] == reference[key], (row["epoch"], key)
        assert row["seconds"] > 0


def cli_train(out, *extra):
    return [sys.executable, "-m", "noiselab.cli", "train", "--model", "demo-cnn", "--method", "sampled",
            "--epochs", "4", "--train-limit", "1500", "--batch-size", "50", "--device", "cpu", "--quiet",
            "--out", str(out), *extra]


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_same_weights(tmp_path):
    reference = tmp_path / "reference.pt"
    subprocess.run(cli_train(reference), check=True, capture_output=True, timeout=300)
    killed = tmp_path / "killed.pt"
    process = subprocess.Popen(cli_train(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not killed.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: only the atomic epoch checkpoint survives
    process.wait(timeout=30)
    saved = load_checkpoint(killed)["step"]
    assert 30 <= saved < 120, "the run should be killed after its first epoch and before its end"
    result = subprocess.run(cli_train(killed, "--resume"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_weights(load_checkpoint(killed)["model"], load_checkpoint(reference)["model"])
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files are left behind"


def test_ctrl_c_stops_with_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "interrupted.pt"
    command = cli_train(out)
    command[command.index("--epochs") + 1] = "200"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not out.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert load_checkpoint(out)["step"] > 0


def test_corrupt_truncated_and_foreign_checkpoints_get_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    result = train(TrainConfig(method="vanilla", **{**QUICK, "train_limit": 64}), checkpoint=good)
    model, state = load_model(good)
    assert state["config"]["method"] == "vanilla"
    assert_same_weights(weights(model), weights(result.model))

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="not a readable noiselab checkpoint"):
        load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="not a readable noiselab checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a noiselab checkpoint"):
        load_checkpoint(foreign)
    code = tmp_path / "code.pt"
    torch.save({"format": "noiselab-checkpoint", "payload": TrainConfig()}, code)  # a pickled object
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(code)
    wrong_model = tmp_path / "wrong.pt"
    save_checkpoint(wrong_model, {"config": {**state["config"], "model": "lenet5"}, "model": state["model"]})
    with pytest.raises(CheckpointError, match="do not fit a lenet5"):
        load_model(wrong_model)


def test_resume_with_other_settings_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    train(TrainConfig(method="vanilla", **{**QUICK, "train_limit": 64}), checkpoint=checkpoint)
    with pytest.raises(ValueError, match="other settings"):
        train(TrainConfig(method="vanilla", **{**QUICK, "train_limit": 64, "lr": 0.1}), checkpoint=checkpoint,
              resume=True)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"method": "trades"}, "unknown method"),
        ({"eps": 1.5}, r"eps must be a number in \[0, 1\]"),
        ({"eps": -0.1}, r"eps must be a number in \[0, 1\]"),
        ({"sigma": -0.5}, "sigma must be a finite number >= 0"),
        ({"sigma": float("nan")}, "sigma must be a finite number >= 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"model": "resnet"}, "unknown model"),
        ({"method": "noise", "covariance": "banded"}, "covariance='banded' is not a known mode"),
        ({"method": "vanilla", "covariance": "full"}, "covariance='full' applies to the noise method only"),
    ],
)
def test_bad_settings_are_named_before_any_work(settings, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{**QUICK, **settings}))


def test_unwritable_output_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    started = []
    with pytest.raises(OSError, match="choose a writable folder"):
        train(TrainConfig(**QUICK), checkpoint=blocker / "run.pt", progress=started.append)
    assert not started


@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    runs = run_cli_each([["train", "--out", blocker / "a.pt", "--train-limit", "10"],
                         ["train", "--out", "x.pt", "--eps", "2"],
                         ["train", "--out", "x.pt", "--dataset", "svhn"],
                         ["train", "--out", "x.pt", "--method", "vanilla", "--loss", "mse"],
                         ["train", "--out", "x.pt", "--method", "pgd_at", "--noise-at", "input"],
                         ["train", "--out", "x.pt", "--method", "noise", "--sigma-mode", "per-pixel"],
                         ["attack", blocker]], cwd=tmp_path)
    for result in runs:
        assert result.returncode == 2, (result.args, result.stderr)
        assert "Traceback" not in result.stderr and "error" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]  # nothing written


def test_fewer_progress_reports_train_the_same_weights_and_cover_every_batch_once():
    """progress_every and progress=None only change when the device is asked for numbers, not the training."""
    config = TrainConfig(method="noise", **{**QUICK, "epochs": 2, "train_limit": 640})  # 10 steps per epoch
    every, every_fourth = [], []
    reference = train(config, progress=every.append)
    batched = train(config, progress=every_fourth.append, progress_every=4)
    silent = train(config)
    for result in (batched, silent):
        assert_same_weights(weights(result.model), weights(reference.model))
        for row, expected in zip(result.history, reference.history):
            assert row["loss"] == pytest.approx(expected["loss"], rel=1e-12)
            assert row["train_accuracy"] == expected["train_accuracy"]
    assert [p.step for p in every_fourth] == [4, 8, 10, 14, 18, 20]  # every 4 batches, and at each epoch's end
    # each report is the mean over its batches: weighted by the batches' sizes (64 each) they give the epoch's
    first_epoch = [(p.loss, p.step - previous) for p, previous in zip(every_fourth[:3], [0, 4, 8])]
    assert sum(loss * n for loss, n in first_epoch) / 10 == pytest.approx(reference.history[0]["loss"], rel=1e-9)
    assert [p.loss for p in every[:4]] != pytest.approx([every_fourth[0].loss] * 4)  # not one batch repeated
    with pytest.raises(ValueError, match="progress_every"):
        train(config, progress_every=0)


class _StopAfter:
    """A stop flag that is set once it has been asked `calls` times: stops a run with no progress callback."""

    def __init__(self, calls: int):
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0


def test_a_run_without_progress_reports_stopped_mid_epoch_resumes_to_the_same_epoch_summary(tmp_path):
    config = TrainConfig(method="sampled", **{**QUICK, "epochs": 2, "train_limit": 640})
    unbroken = train(config)
    checkpoint = tmp_path / "run.pt"
    first = train(config, stop=_StopAfter(13), checkpoint=checkpoint)  # no report since the epoch's end at step 10
    assert first.stopped and first.steps == 13
    resumed = train(config, checkpoint=checkpoint, resume=True)
    assert_same_weights(weights(resumed.model), weights(unbroken.model))
    for row, reference in zip(resumed.history, unbroken.history):
        assert row["loss"] == pytest.approx(reference["loss"], rel=1e-12)
        assert row["train_accuracy"] == reference["train_accuracy"]


def test_a_diverging_loss_is_named_with_its_steps_and_the_last_epochs_checkpoint_is_kept(tmp_path, monkeypatch):
    vanilla = METHODS["vanilla"]
    calls = []

    def diverges_at_step_13(ctx, x, y):
        loss, logits = vanilla(ctx, x, y)
        calls.append(1)
        return (loss * float("nan") if len(calls) >= 14 else loss), logits

    monkeypatch.setitem(METHODS, "vanilla", diverges_at_step_13)
    config = TrainConfig(**{**QUICK, "epochs": 2, "train_limit": 640})
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(FloatingPointError, match=f"between steps 10 and 19; .*{checkpoint.name} holds the last"):
        train(config, checkpoint=checkpoint)  # no reports: found at the epoch's end
    saved = load_checkpoint(checkpoint)
    assert saved["step"] == 10 and all(torch.isfinite(v).all() for v in saved["model"].values())
    calls.clear()
    with pytest.raises(FloatingPointError, match="at step 13; lower lr"):
        train(config, progress=lambda p: None)  # reports every batch: found at once


def test_cli_says_when_training_diverges_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "train", "--model", "demo-cnn", "--lr", "1e30",
                             "--epochs", "1", "--train-limit", "640", "--batch-size", "64", "--device", "cpu",
                             "--quiet", "--out", str(tmp_path / "run.pt")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "the loss became nan" in result.stderr and "lower lr" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_progress_bar_updates_every_n_batches(tmp_path):
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "train", "--model", "demo-cnn", "--epochs", "1",
                             "--train-limit", "640", "--batch-size", "64", "--device", "cpu", "--progress-every", "4",
                             "--out", str(tmp_path / "run.pt")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    shown = [int(n) for n in re.findall(r"\| *(\d+)/10 \[", result.stderr)]
    assert set(shown) == {4, 8, 10}, shown  # every 4 batches, and the epoch's end


def test_a_training_records_the_thread_count_that_decides_its_trajectory():
    # the same seed gives the same weights on the same thread count, and says which count that was (another count
    # sums floats in another order: a different trajectory, as Fig. 6's σ = 0.1 beside Fig. 4's showed)
    config = TrainConfig(method="noise", sigma=0.1, **{**QUICK, "train_limit": 320})
    first, second = train(config), train(config)
    assert all(torch.equal(a, b) for a, b in zip(weights(first.model).values(), weights(second.model).values()))
    assert first.history[-1]["threads"] == torch.get_num_threads() >= 1


def test_the_onecycle_rate_climbs_then_falls_and_is_a_function_of_the_step_alone():
    from noiselab.train import lr_at

    config = TrainConfig(lr=4e-3, lr_schedule="onecycle")
    rates = [lr_at(config, step, 100) for step in range(100)]
    peak = rates.index(max(rates))
    assert rates[0] == pytest.approx(4e-3 / 25) and max(rates) == pytest.approx(4e-3)
    assert peak == 20  # ONECYCLE_WARMUP of the steps
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :]))
    assert rates[-1] == pytest.approx(4e-6)
    assert lr_at(TrainConfig(lr=4e-3, lr_schedule="constant"), 57, 100) == 4e-3
    assert TrainConfig().lr_schedule == "onecycle"  # the default recipe (bench/time_to_accuracy.py)
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'; choose one of"):
        TrainConfig(lr_schedule="cosine").validate()
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'; choose one of"):
        lr_at(TrainConfig(lr_schedule="cosine"), 0, 100)  # not taken for one-cycle unchecked
    for step, total, message in ((100, 100, r"step must be an integer in \[0, total_steps\)"),
                                 (-1, 100, "step must be"), (2.0, 100, "step must be"),
                                 (0, 0, "total_steps must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            lr_at(config, step, total)


@pytest.mark.parametrize("rules", [{"method": "vanilla"}, {"method": "noise", "relu": "moment", "pool": "clark"}])
def test_a_onecycle_run_stopped_mid_epoch_resumes_to_the_unbroken_runs_weights(tmp_path, rules):
    """Bit for bit, vanilla and noise under the moment rules (noiselab.native's fused kernels on a CPU)."""
    config = TrainConfig(**rules, **{**QUICK, "epochs": 2, "train_limit": 640})  # the default: one-cycle
    unbroken = train(config)
    stop = threading.Event()
    checkpoint = tmp_path / "run.pt"
    first = train(config, progress=lambda p: p.step == 7 and stop.set(), stop=stop, checkpoint=checkpoint)
    assert first.stopped and first.steps == 7
    resumed = train(config, checkpoint=checkpoint, resume=True)
    assert resumed.steps == 20
    assert_same_weights(weights(resumed.model), weights(unbroken.model))
    if rules["method"] != "vanilla":
        return
    constant = train(TrainConfig(method="vanilla", lr_schedule="constant", **{**QUICK, "epochs": 2,
                                                                              "train_limit": 640}))
    assert not torch.equal(constant.model.state_dict()["0.weight"], unbroken.model.state_dict()["0.weight"])


def test_a_record_written_before_the_schedule_existed_reads_as_the_constant_rate_it_was_trained_with():
    stored = TrainConfig.with_defaults({"method": "vanilla", "lr": 1e-3})
    assert stored["lr_schedule"] == "constant"


@pytest.mark.slow
def test_the_default_recipe_reaches_90_percent_on_the_embedded_digits_in_79_steps_ahead_of_the_old_one():
    """A correctness test of the recipe (bench/time_to_accuracy.py times it): LeNet5, the default one-cycle recipe,
    one epoch of the 10,000 embedded training digits (79 steps of 128). Measured here: 92.4 / 93.3 / 94.6% for
    seeds 0-2 on the 2,000 embedded test digits; Adam at a constant 1e-3 (the recipe before) 86.7% for seed 0."""
    default = train(TrainConfig(epochs=1, device="cpu"))
    before = train(TrainConfig(epochs=1, device="cpu", lr=1e-3, lr_schedule="constant"))
    (row,), (old,) = default.history, before.history
    assert row["step"] == 79 and row["test_accuracy"] >= 0.90, row
    assert row["test_accuracy"] >= old["test_accuracy"] + 0.02, (row, old)


def test_covariance_training_that_cannot_fit_in_memory_is_refused_with_a_batch_that_would(monkeypatch):
    import noiselab.train as train_module

    monkeypatch.setattr(train_module, "_available_memory", lambda device: 4 << 30)  # 4 GiB free
    with pytest.raises(ValueError, match=r"keeps a 4608 x 4608 covariance per example \(after layer '3'\).*"
                                         r"more than the 4.0 GiB free on cpu; use --batch-size 7 or less"):
        train(TrainConfig(method="noise", model="lenet5", covariance="full-linear", relu="moment",
                          pool="clark-prerelu", batch_size=128, device="cpu"))


@pytest.mark.slow
def test_noise_training_with_the_logits_covariance_descends_its_loss_and_records_it(tmp_path):
    """DemoCNN, 48 embedded digits, batch 8, one epoch (6 steps), moment/clark-prerelu rules, covariance="full-linear":
    the stochastic loss with the logits' covariance, on the first 32 training digits, falls from the initial weights'
    (the same seed) to the trained ones' (measured -0.466 -> -0.535); the weights differ from a diagonal run's (the
    covariance entered); the checkpoint records the setting. Through the CLI, --covariance reaches the training's
    checks."""
    from noiselab import data as data_module
    from noiselab.cli import main
    from noiselab.loss import stochastic_loss
    from noiselab.models import build
    from noiselab.propagate import propagate

    settings = dict(QUICK, method="noise", relu="moment", pool="clark-prerelu", train_limit=48, batch_size=8,
                    lr_schedule="constant")
    images, labels = data_module.load().tensors("train", limit=32)
    x = data_module.to_float(images)

    def loss(model):
        with torch.no_grad():
            out = propagate(model, x, 0.5, relu="moment", pool="clark-prerelu", covariance="full-linear")
            return float(stochastic_loss(out.mean, out.var, labels.long(), cov=out.cov))

    torch.manual_seed(0)
    before = loss(build("demo-cnn"))
    checkpoint = tmp_path / "cov.pt"
    trained = train(TrainConfig(**settings, covariance="full-linear"), checkpoint=checkpoint)
    diagonal = train(TrainConfig(**settings))
    after = loss(trained.model)
    print(f"\nthe loss with the logits' covariance: {before:.4f} at the start, {after:.4f} after 6 steps")
    assert after < before - 0.01
    assert load_checkpoint(checkpoint)["config"]["covariance"] == "full-linear"
    differences = [float((a - b).detach().abs().max())
                   for a, b in zip(trained.model.parameters(), diagonal.model.parameters())]
    assert max(differences) > 1e-4
    assert main(["train", "--method", "vanilla", "--covariance", "full", "--out", str(tmp_path / "v.pt")]) == 2



def test_training_on_the_cpu_runs_channels_last_and_hands_back_the_usual_layout(mnist_test):
    """The layout is a speed choice only (docs/performance.md, section 7): one step's loss and gradients equal the
    usual layout's to float rounding (Adam's later steps amplify such rounding, as another thread count's does), and
    the trained model comes back contiguous, its history as usual."""
    import copy

    import torch.nn.functional as F

    import noiselab.train as train_module
    from noiselab.models import build

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(train_module.trains_channels_last(TrainConfig(method=method), cpu) for method in METHODS)
    assert not any(train_module.trains_channels_last(TrainConfig(method=method), cuda) for method in METHODS)
    for other in ({"relu": "moment"}, {"pool": "clark"}, {"noise_at": "input"}, {"covariance": "full-linear"}):
        assert not train_module.trains_channels_last(TrainConfig(method="noise", **other), cpu), other
    torch.manual_seed(0)
    usual = build("lenet5")
    fast = copy.deepcopy(usual).to(memory_format=torch.channels_last)
    x, y = mnist_test[0][:64], mnist_test[1][:64]
    losses = []
    for model, images in ((usual, x), (fast, x.contiguous(memory_format=torch.channels_last))):
        loss = F.cross_entropy(model(images), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (name, a), b in zip(usual.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
    result = train(TrainConfig(model="lenet5", method="vanilla", train_limit=256, batch_size=64, epochs=1,
                               device="cpu"))
    assert all(t.is_contiguous() for t in result.model.state_dict().values())
    assert result.steps == 4 and 0 <= result.history[0]["test_accuracy"] <= 1 and result.history[0]["channels_last"]
    for relu, pool, expected in (("paper", "paper", True), ("moment", "clark", False)):
        noise = train(TrainConfig(model="lenet5", method="noise", relu=relu, pool=pool, train_limit=64, batch_size=64,
                                  epochs=1, device="cpu"))
        assert noise.history[0]["channels_last"] is expected
        assert noise.history[0]["fused_kernels"] is not expected  # the moment rules' kernels (noiselab.native)
        assert all(t.is_contiguous() for t in noise.model.state_dict().values())

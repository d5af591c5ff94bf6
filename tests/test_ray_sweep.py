"""Sweeps on Ray: a real local Ray (num_cpus=2) driven through the real CLI, against the in-process sweep.

Each Ray cell holds one CPU and trains with one thread; the in-process reference runs with one thread too
(OMP_NUM_THREADS=1), since torch's CPU kernels sum in a different order with another thread count.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from cli_support import run_cli_each

from noiselab.experiments.ray_backend import RayOptions, cell_resources, cells_at_once

# one pytest-xdist worker runs this module (make test hands out whole files): its tests share one reference sweep,
# and each starts a local Ray of 2 CPUs, which two at a time would overcommit

GRID = ["--model", "demo-cnn", "--methods", "vanilla", "noise", "sampled", "--sigmas", "0.5", "--train-limit", "2000",
        "--batch-size", "32", "--epochs", "2", "--eval-eps", "0", "0.1", "--attacks", "fgsm", "pgd", "--steps", "5",
        "--limit", "100", "--device", "cpu"]
RAY = ["--backend", "ray", "--ray-cpus", "2", "--report-interval", "0.2"]
# one cell, trained in a second: for the tests that stop before a Ray starts, or run without it
TINY = ["sweep", "--model", "demo-cnn", "--methods", "vanilla", "--train-limit", "200", "--batch-size", "50",
        "--epochs", "1", "--eval-eps", "0", "--attacks", "fgsm", "--limit", "20", "--device", "cpu"]


def command(out, *extra):
    return [sys.executable, "-m", "noiselab.cli", "sweep", *GRID, "--out", str(out), *extra]


def sweep(out, *extra, env=None):
    return subprocess.run(command(out, *extra), capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def numbers(results: dict) -> dict:
    """Everything a cell measured except wall-clock times."""
    return {key: {"robust": cell["robust"], "final_sigma": cell["final_sigma"],
                  "history": [{k: v for k, v in row.items() if k != "seconds"} for row in cell["history"]]}
            for key, cell in results["cells"].items()}


def read(out, name):
    return json.loads((out / name).read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process")
    result = sweep(out, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    results = read(out, "results.json")
    assert len(results["cells"]) == 3
    clean = [row["accuracy"] for cell in results["cells"].values() for row in cell["robust"] if row["eps"] == 0]
    assert min(clean) > 0.5, clean  # models that learned: the comparison below is between real numbers
    return results


def wait_for_status(out, process, condition, seconds=240):
    """Poll status.json until condition(status) returns something; fail if the sweep ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = process.stderr.read()[-3000:]
            raise AssertionError(f"the sweep ended before the moment the test waits for: {tail}")
        if (out / "status.json").exists():
            found = condition(read(out, "status.json"))
            if found:
                return found
        time.sleep(0.05)
    raise AssertionError(f"status.json never showed the awaited state: {(out / 'status.json').read_text()}")


@pytest.mark.slow
def test_a_ray_sweep_gives_the_in_process_numbers_even_with_a_worker_killed_and_a_rerun_skips_it_all(reference,
                                                                                                 tmp_path):
    """One Ray sweep with one worker killed mid-cell: that cell is retried and counted once, the others run
    unbroken, and all three give the in-process numbers (one sweep for both stories: a Ray start is ~20 s here)."""
    process = subprocess.Popen(command(tmp_path, *RAY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def training_past_a_third(status):
            for key, cell in status["cells"].items():
                if cell["state"] == "training" and 0 < cell.get("step", 0) and \
                        cell["total_steps"] / 3 <= cell["step"] < cell["total_steps"] - 5:
                    return key, cell["pid"]
            return None

        victim, pid = wait_for_status(tmp_path, process, training_past_a_third)
        os.kill(pid, signal.SIGKILL)  # the worker process running that cell dies mid-training
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "3 of 3 cells done" in stderr and "cell" in stderr  # the bar over cells
    results = read(tmp_path, "results.json")
    assert results["backend"] == "ray"
    assert set(results["cells"]) == set(reference["cells"])
    for cell in results["cells"].values():  # no epoch or attack row counted twice
        assert [row["epoch"] for row in cell["history"]] == [1, 2]
        assert len(cell["robust"]) == len(reference["cells"][cell_key(cell)]["robust"])
    assert numbers(results) == numbers(reference)  # the retried cell resumed to the numbers of an unbroken run
    status = read(tmp_path, "status.json")
    assert status["cells"][victim]["attempt"] == 2 and status["cells"][victim]["pid"] != pid
    assert all(c["state"] == "done" for c in status["cells"].values())
    assert all(c["attempt"] == 1 for key, c in status["cells"].items() if key != victim)
    assert most_cells_at_once(status) <= 2  # 3 cells on 2 CPUs: never a third beside two (Ray lends blocked CPUs)

    again = sweep(tmp_path, *RAY)  # nothing left to do: Ray is not even started
    assert again.returncode == 0 and "Started a local Ray" not in again.stderr, again.stderr
    assert read(tmp_path, "results.json")["cells"] == results["cells"]
    shown = subprocess.run([sys.executable, "-m", "noiselab.cli", "status", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "3 done (ray backend" in shown.stdout and "noise σ=0.5 (seed 0)" in shown.stdout


def most_cells_at_once(status):
    """The most cells that ran at the same moment, from the wall times each started and finished."""
    events = sorted((t, change) for c in status["cells"].values()
                    for t, change in ((c["started"], 1), (c["finished"], -1)))
    level = most = 0
    for _, change in events:  # at a tie a finish (-1) sorts before a start
        level += change
        most = max(most, level)
    return most


def cell_key(cell):
    return json.dumps(cell["overrides"], sort_keys=True)


@pytest.mark.slow
def test_ctrl_c_stops_a_ray_sweep_which_then_resumes_to_the_same_numbers(reference, tmp_path):
    """Stopped on Ray, resumed in this process (--backend local, as on a machine without the cluster; one thread, as
    the reference): the folder a Ray sweep leaves is a plain sweep's. (Resuming on Ray, a retried cell's checkpoint
    included, is the killed worker's test above.)"""
    process = subprocess.Popen(command(tmp_path, *RAY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_status(tmp_path, process, lambda status: any(
            c["state"] == "training" and c.get("step", 0) > 10 for c in status["cells"].values()))
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    status = read(tmp_path, "status.json")
    states = [c["state"] for c in status["cells"].values()]
    assert "stopped" in states and set(states) <= {"done", "stopped"}, states
    finished = read(tmp_path, "results.json")["cells"]
    assert len(finished) < 3

    resumed = sweep(tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0 and "Started a local Ray" not in resumed.stderr, resumed.stderr
    results = read(tmp_path, "results.json")
    assert results["backend"] == "local"
    assert numbers(results) == numbers(reference)
    assert all(results["cells"][key] == cell for key, cell in finished.items())  # finished cells were not redone


@pytest.mark.slow
def test_ray_backend_without_ray_names_the_install_command_and_local_sweeps_never_need_it(tmp_path):
    result, local = run_cli_each([[*TINY, "--out", tmp_path / "ray", "--backend", "ray"],
                                  [*TINY, "--out", tmp_path / "local"]],
                                 prelude="import sys; sys.modules['ray'] = None", timeout=120)  # `import ray` fails
    assert result.returncode == 2, result.stderr
    assert 'pip install "noiselab[ray]"' in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ray" / "results.json").exists() and not (tmp_path / "ray" / "status.json").exists()
    assert local.returncode == 0 and "1 of 1 cells done" in local.stderr, local.stderr


def test_the_driver_submits_only_the_cells_the_cluster_holds_at_once():
    assert cells_at_once({"CPU": 2}, {"num_cpus": 1, "num_gpus": 0}) == 2
    assert cells_at_once({"CPU": 2}, {"num_cpus": 0.5, "num_gpus": 0}) == 4
    assert cells_at_once({"CPU": 3}, {"num_cpus": 2, "num_gpus": 0}) == 1
    assert cells_at_once({"CPU": 1}, {"num_cpus": 4, "num_gpus": 0}) == 1  # one at a time, never none
    assert cells_at_once({"CPU": 16, "GPU": 2}, {"num_cpus": 1, "num_gpus": 0.25}) == 8
    assert cells_at_once({"CPU": 4, "GPU": 2}, {"num_cpus": 1, "num_gpus": 0.25}) == 4


def test_each_cell_asks_ray_for_a_gpu_where_there_is_one_else_for_cpus():
    options = RayOptions(cpus_per_cell=2, gpus_per_cell=0.5)
    assert cell_resources({"CPU": 16, "GPU": 8}, "auto", options) == {"num_cpus": 2, "num_gpus": 0.5}
    assert cell_resources({"CPU": 16, "GPU": 8}, "cuda", options) == {"num_cpus": 2, "num_gpus": 0.5}
    assert cell_resources({"CPU": 16, "GPU": 8}, "cpu", options) == {"num_cpus": 2, "num_gpus": 0}
    assert cell_resources({"CPU": 2}, "auto", options) == {"num_cpus": 2, "num_gpus": 0}
    with pytest.raises(ValueError, match="the Ray cluster has none"):
        cell_resources({"CPU": 2}, "cuda", options)


@pytest.mark.parametrize("field, value, message", [
    ("num_cpus", 0, "num_cpus must be None or an integer >= 1"), ("cpus_per_cell", 0, "cpus_per_cell must be > 0"),
    ("gpus_per_cell", 2, r"gpus_per_cell must lie in \(0, 1\]"), ("max_retries", -1, "max_retries must be"),
    ("report_interval", 0, "report_interval must be > 0")])
def test_bad_ray_options_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        RayOptions(**{field: value}).validate()


@pytest.mark.slow
def test_a_cell_that_raises_is_reported_once_not_retried_and_named_in_the_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "noiselab.cli", "sweep", "--dataset", "mnist", "--data-root",
                             str(tmp_path / "nowhere"), "--methods", "vanilla", "noise", "--sigmas", "0.5",
                             "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "out"), *RAY],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "2 cell(s) failed: vanilla (seed 0), noise σ=0.5 (seed 0): DataNotFoundError" in result.stderr
    assert "--data-root" in result.stderr and "run the same command again" in result.stderr
    status = read(tmp_path / "out", "status.json")
    assert [(c["state"], c["attempt"]) for c in status["cells"].values()] == [("failed", 1)] * 2
    assert all("DataNotFoundError" in c["error"] for c in status["cells"].values())


@pytest.mark.slow
def test_a_cluster_address_nobody_answers_at_is_named_at_once_and_nothing_is_written(tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    addresses = {f"127.0.0.1:{port}": f"nothing answers at 127.0.0.1:{port}",
                 "nowhere": "is not auto, HOST:PORT or ray://HOST:PORT"}
    outs = [tmp_path / address.replace(":", "_") for address in addresses]
    runs = run_cli_each([[*TINY, "--out", out, "--backend", "ray", "--address", address]
                         for address, out in zip(addresses, outs)], timeout=60)
    for message, out, result in zip(addresses.values(), outs, runs):
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not out.exists()


def test_a_ray_that_does_not_start_is_one_clear_error_naming_what_to_do(monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install \"noiselab[ray]\")")
    from noiselab.experiments.ray_backend import run_on_ray

    def timed_out(**_):  # what ray.init raises when its processes do not come up in time on a busy machine
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(OSError, match=r"a local Ray did not start \(The current node timed out during startup.*"
                                      r"run the same command again.*--backend local"):
        run_on_ray([], None, None, RayOptions(), None, None)


def test_unknown_backend_and_a_folder_without_a_sweep_are_named(tmp_path):
    from noiselab.experiments import EvalSpec, run_sweep
    from noiselab.train import TrainConfig

    with pytest.raises(ValueError, match=r"unknown backend 'dask'; choose one of \('local', 'ray'\)"):
        run_sweep("sweep", TrainConfig(), [{"method": "vanilla"}], EvalSpec(), tmp_path, backend="dask")
    shown = subprocess.run([sys.executable, "-m", "noiselab.cli", "status", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 2 and "no sweep status in" in shown.stderr and "Traceback" not in shown.stderr

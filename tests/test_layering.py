"""The core, the sweeps and the core benchmarks import without the Jupyter stack: the GPU machine the benchmarks run
on has PyTorch, NumPy and pandas but no Altair or ipywidgets (and nothing can be installed there from the net)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"altair", "ipywidgets", "anywidget", "voila", "vl_convert", "IPython"}:
            raise ImportError(f"{name} is blocked: the GPU machine does not have it")
        return None
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def test_core_and_sweeps_import_without_the_jupyter_stack():
    result = run_blocked("import noiselab, noiselab.train, noiselab.evaluate, noiselab.surface\n"
                         "from noiselab.experiments import run_sweep, robust_table\n"
                         "from noiselab.experiments.records import environment\nprint('ok')")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_the_block_is_real_the_charts_need_altair():
    result = run_blocked("import noiselab.charts")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_core_benchmarks_start_without_the_jupyter_stack():
    for bench in ("train_cost", "time_to_accuracy", "closed_form_vs_mc", "core_ops"):
        code = (f"import runpy; sys.argv = ['{bench}', '--help']\n"
                f"runpy.run_path('bench/{bench}.py', run_name='__main__')")
        result = run_blocked(code)
        assert result.returncode == 0 and "usage" in result.stdout, (bench, result.stderr)

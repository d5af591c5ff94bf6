"""The core, the sweeps and the core benchmarks import without the Jupyter stack: the GPU machine the benchmarks run
on has PyTorch, NumPy and pandas but no Altair or ipywidgets (and nothing can be installed there from the net)."""

import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_core_benchmarks_start_without_the_jupyter_stack():
    for bench in ("train_cost", "time_to_accuracy", "closed_form_vs_mc", "core_ops"):
        code = (f"import runpy; sys.argv = ['{bench}', '--help']\n"
                f"runpy.run_path('bench/{bench}.py', run_name='__main__')")
        result = run_blocked(code)
        assert result.returncode == 0 and "usage" in result.stdout, (bench, result.stderr)


def _imports() -> dict[str, set[str]]:
    """noiselab's import graph, read from the source (imports inside functions too): module -> noiselab modules."""
    import ast

    package = REPO / "noiselab"

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(path): path for path in package.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                    else node.module
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:  # `from pkg import name`: the module, else the package
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    return False


def test_the_graph_reader_sees_imports_inside_functions():
    graph = _imports()
    assert "noiselab.experiments.ray_backend" in graph["noiselab.experiments.sweep"]  # a lazy import, inside run_sweep
    assert "noiselab.train" in graph["noiselab.experiments.cells"]


def test_no_module_of_noiselab_imports_itself_back():
    # e.g. the sweep and its Ray backend both build on experiments/cells.py, and neither on the other both ways
    graph = _imports()
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if _reaches(graph, b, a)})
    assert not cycles, f"modules that import each other (directly or round a loop): {cycles}"


def _private_names_taken(module: str, source: str) -> set[str]:
    """The private names (leading underscore) `module`'s file imports from noiselab's module `source`."""
    import ast

    path = REPO / Path(*module.split(".")).with_suffix(".py")
    taken = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == source.split(".")[-1]:
            taken |= {alias.name for alias in node.names if alias.name.startswith("_")}
    return taken


def test_the_noise_entry_point_is_the_propagation_codes_and_public():
    # train and the defenses find where the noise enters by propagate's public functions, not each other's privates
    from importlib import import_module

    defenses, propagate = import_module("noiselab.defenses"), import_module("noiselab.propagate")
    for module in ("noiselab.train", "noiselab.defenses", "noiselab.layerwise"):
        for source in ("noiselab.defenses", "noiselab.propagate"):
            assert not _private_names_taken(module, source), (module, source)
    assert defenses.first_preactivation is propagate.first_preactivation
    assert _private_names_taken("noiselab.attacks.closed_form", "noiselab.loss") == {"_terms"}  # the reader reads


def test_the_cli_offers_the_experiments_by_one_list_without_importing_them():
    code = ("import sys, contextlib, io\nfrom noiselab.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['reproduce', '--help'])\n    except SystemExit:\n        pass\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('noiselab.experiments.'))\n"
            "print(loaded, 'fig7' in out.getvalue() and 'attackloss' in out.getvalue())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['noiselab.experiments.names'] True", result.stdout
    from noiselab.experiments.names import EXPERIMENT_NAMES, RAY_READY
    from noiselab.experiments.reproduce import EXPERIMENTS

    assert tuple(EXPERIMENTS) == EXPERIMENT_NAMES and set(RAY_READY) <= set(EXPERIMENT_NAMES)


def test_the_starters_are_plain_checkpoints_that_load_without_the_widgets():
    graph = _imports()
    starter = [module for module in graph if module.startswith("noiselab.starter")]
    assert starter and not any(_reaches(graph, module, "noiselab.widgets.models") for module in starter)
    result = run_blocked("from noiselab.starter import load_starters\n"
                         "starters = load_starters()\n"
                         "print(len(starters), all(s.model is not None and s.config and s.history for s in starters))")
    assert result.returncode == 0 and result.stdout.split() == ["4", "True"], result.stderr

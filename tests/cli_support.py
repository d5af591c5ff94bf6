"""The real `noiselab` command in a subprocess.

run_cli runs one call in a process of its own. run_cli_each, for tests of many bad inputs, runs several argument
lists in one fresh interpreter, one after the other, each exactly as `python -m noiselab.cli ARGS` runs it (runpy
executes the module as __main__, SystemExit gives the exit status, an uncaught exception its traceback on stderr and
status 1), and returns what each printed. On this 2-core machine a process of its own costs each call about 2.5 s of
interpreter start and torch import, the bulk of a bad input's test.
"""

import json
import subprocess
import sys
from dataclasses import dataclass

DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
exec(sys.argv[1])  # the prelude
runs = []
for args in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["noiselab", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("noiselab.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:  # as the interpreter ends on it
            code = stop.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    runs.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(runs))
"""


def run_cli(*args, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """`python -m noiselab.cli ARGS` in a process of its own (options: subprocess.run's, cwd or env)."""
    return subprocess.run([sys.executable, "-m", "noiselab.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **options)


@dataclass
class Run:
    """What one call printed, as subprocess.CompletedProcess names it."""

    args: list
    returncode: int
    stdout: str
    stderr: str


def run_cli_each(arg_lists: list, cwd=None, timeout: float = 300, prelude: str = "") -> list[Run]:
    """`noiselab ARGS` for each ARGS of arg_lists, in that order, in one new interpreter; `prelude`, Python run
    there first (to hide an installed package, say)."""
    arg_lists = [[str(arg) for arg in args] for args in arg_lists]
    result = subprocess.run([sys.executable, "-c", DRIVER, prelude], input=json.dumps(arg_lists),
                            capture_output=True, text=True, timeout=timeout, cwd=cwd)
    assert result.returncode == 0, result.stderr  # the driver itself ended normally
    return [Run(args, *run) for args, run in zip(arg_lists, json.loads(result.stdout.splitlines()[-1]))]

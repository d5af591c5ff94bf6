#!/usr/bin/env bash
# Run HERE (the development machine), from the repository root, before the one device call that runs
# bench/gpu/run.sh there. It fills .gpu/ (ignored by git through .git/info/exclude, carried with `carry: [".gpu"]`):
#   .gpu/mnist/  the four MNIST IDX files (benchmark 2 trains on full MNIST), from ../shared/data/mnist
#   .gpu/whl/    wheels for the packages the GPU machine lacks (it has PyTorch, NumPy, pandas, tqdm, jinja2; the
#                sweep-cost benchmark also imports Altair for the reproductions' grids). About 13 MB in all.
set -euo pipefail
shared="${SHARED:-../shared}"
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")" .gpu/mnist .gpu/whl
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
cp "$shared"/data/mnist/*-ubyte.gz .gpu/mnist/
python="${PYTHON:-.venv/bin/python}"
altair_version="$("$python" -c 'import altair; print(altair.__version__)')"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "altair==$altair_version" narwhals jsonschema jsonschema-specifications referencing rpds-py
du -sh .gpu
echo "ready: device run with carry [\".gpu\"] and command: bash bench/gpu/run.sh"

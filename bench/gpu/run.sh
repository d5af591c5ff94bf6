#!/usr/bin/env bash
# Run THERE (the GPU machine, through the device tool), from the repository root, after bench/gpu/prepare.sh here:
#     bash bench/gpu/run.sh     # every GPU benchmark of issues 6 and 8, each under a limit; 9 minutes at most
#     DEVICE=cpu SMOKE=1 bash bench/gpu/run.sh   # here: the same steps at toy sizes, to check the script runs
# Each benchmark runs under its own time limit, so one that overruns costs only itself; the JSON files and the
# log go to $OUT (the device tool brings back up to 8 files), or to .gpu/out when OUT is unset.
set -uo pipefail
device="${DEVICE:-cuda}"
smoke="${SMOKE:-}"
out="${OUT:-.gpu/out}"
mkdir -p "$out"
log="$out/gpu_run.log"
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"
if [ -d .gpu/whl ] && ls .gpu/whl/*.whl >/dev/null 2>&1 && [ -z "$smoke" ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$python" - <<'PY'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
mnist="${MNIST:-.gpu/mnist}"

step() {  # step NAME SECONDS COMMAND...: one benchmark under its own limit; its JSON copied to $out
    local name="$1" limit="$2"; shift 2
    echo; echo "=== $name (limit ${limit} s) ==="
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - start)) s ==="
}

if [ -n "$smoke" ]; then
    step train_cost 300 "$python" bench/train_cost.py --device "$device" --steps 3 --rounds 1 \
        --out "$out/train_cost-$device.json"
    step time_to_accuracy 300 "$python" bench/time_to_accuracy.py --data-root "$mnist" --device "$device" \
        --train-limit 2000 --max-epochs 1 --out "$out/time_to_accuracy-$device.json"
    step core_ops 300 "$python" bench/core_ops.py --device "$device" --only rules,conv,square,syncs,precision \
        --rounds 1 --repeats 1 --out "$out/core_ops-$device.json"
    step closed_form_vs_mc 300 "$python" bench/closed_form_vs_mc.py --device "$device" --images 2 --reference 200 \
        --max-samples 64 --out "$out/closed_form_vs_mc-$device.json"
    step sweep_cost 600 "$python" bench/sweep_cost.py --device "$device" --quick --out "$out/sweep_cost-$device.json"
    exit 0
fi
step train_cost 80 "$python" bench/train_cost.py --device "$device" --out "$out/train_cost-$device.json"
step time_to_accuracy 100 "$python" bench/time_to_accuracy.py --data-root "$mnist" --device "$device" \
    --out "$out/time_to_accuracy-$device.json"
# the same recipe with a larger batch and peak rate (a GPU's lever: fewer, larger steps; 99.26% after 3 epochs on the
# CPU): vanilla and noise only
step time_to_accuracy_b512 60 "$python" bench/time_to_accuracy.py --data-root "$mnist" --device "$device" \
    --batch-size 512 --lr 1e-2 --only vanilla "noise σ=0.5 (paper rules)" --out "$out/time_to_accuracy-$device-b512.json"
step core_ops 110 "$python" bench/core_ops.py --device "$device" --out "$out/core_ops-$device.json"
step closed_form_vs_mc 90 "$python" bench/closed_form_vs_mc.py --device "$device" --images 64 --reference 100000 \
    --max-samples 100000 --out "$out/closed_form_vs_mc-$device.json"
step sweep_cost 80 "$python" bench/sweep_cost.py --device "$device" --out "$out/sweep_cost-$device.json"

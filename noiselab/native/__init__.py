"""Fused CPU kernels for the moment ReLU and Clark's 2x2 max-pool (moments.c beside this file), float32.

On a CPU the moment rules are chains of element-wise ops, each a pass over the whole activation; these kernels do
each rule's forward, and each backward, in one pass, and a ReLU with the pool after it in one pass too (the ReLU's
outputs never go to memory). bench/core_ops.py --only native measures them against the torch formulation side by
side. noiselab.moments calls them for float32 CPU tensors and keeps its torch formulation for everything else
(float64, CUDA) and as the reference the tests hold them to.

The C file is compiled once per machine with the system's C compiler (cc, or $CC) into the user's cache folder
(noiselab._files.cache_folder) and loaded with ctypes: no build step at install, nothing to download. Where there
is no compiler, or it fails, a warning says so once and the torch formulation runs (the same results, slower).
NOISELAB_NATIVE=0 turns the kernels off.

The kernels split their work over OpenMP's threads: torch's own, so torch.set_num_threads rules them too.

Phi's Chebyshev coefficients in moments.c were made with scipy (double precision), for h(y) = R(u) / t with
R(u) = Q(u) / phi(u) = sqrt(pi / 2) erfcx(u / sqrt 2) the Mills ratio, t = 3 / (3 + u), y = 2t - 1:
numpy.polynomial.chebyshev.chebinterpolate(h, 12); the largest relative error of t h over u in [0, 40] is
1.5e-9 (float32's rounding, 6e-8, dominates).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .._files import cache_folder

SOURCE = Path(__file__).with_name("moments.c")
# -fno-math-errno lets sqrtf and rintf vectorize; IEEE semantics are otherwise kept (no -ffast-math: NaN and
# infinities pass through as in torch). -march=native: the library is built on the machine that uses it. -fopenmp:
# the kernels share torch's OpenMP threads (the libgomp.so.1 torch loaded answers this library's need for one). Each
# set is tried in turn: a compiler without OpenMP builds single-threaded kernels, one without -march=native portable
# ones.
_COMMON = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
FLAG_SETS = (
    [*_COMMON, "-march=native", "-fopenmp"],
    [*_COMMON, "-march=native", "-fopenmp-simd"],
    _COMMON,
)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_tried = False


class Unavailable(RuntimeError):
    """Why the kernels cannot run here, and what would let them."""


def enabled() -> bool:
    """Whether the fused kernels run here (built and loaded now if they have not been yet)."""
    return library() is not None


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where they cannot be built (warned once) or NOISELAB_NATIVE=0."""
    global _library, _tried
    if os.environ.get("NOISELAB_NATIVE", "1") == "0":
        return None
    if _tried:
        return _library
    with _lock:
        if not _tried:
            try:
                _library = _load()
            except Unavailable as problem:
                warnings.warn(f"noiselab's fused CPU kernels are off: {problem}. The moment rules run as torch ops "
                              "instead (the same results, slower).", RuntimeWarning, stacklevel=3)
                _library = None
            _tried = True
    return _library


def _load() -> ctypes.CDLL:
    path = build()
    try:
        return _declare(ctypes.CDLL(str(path)))
    except (OSError, AttributeError):  # a damaged or foreign file where the library should be: built anew, once
        path.unlink(missing_ok=True)
        path = build()
        try:
            return _declare(ctypes.CDLL(str(path)))
        except (OSError, AttributeError) as problem:
            raise Unavailable(f"cannot load {path} ({problem}); delete it to have it built again") from None


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise Unavailable("no C compiler was found (cc, gcc or clang on PATH, or $CC); install one (Debian: "
                          "apt-get install gcc) to turn them on")
    return compiler


def _machine() -> str:
    """What a library built with -march=native depends on: the processor's name and features."""
    identity = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            identity += sorted({line for line in info if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        pass
    return "\n".join(identity)


def build() -> Path:
    """The compiled library's path, compiled now unless the cache holds one for this source and this machine.
    Concurrent processes each compile into their own file and rename it into place."""
    source = SOURCE.read_bytes()
    try:
        folder = cache_folder()
    except RuntimeError as problem:
        raise Unavailable(f"{problem}; set XDG_CACHE_HOME to a writable folder") from None
    machine = _machine().encode()
    paths = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, machine, " ".join(flags).encode()]))
        paths.append(folder / f"native-moments-{key.hexdigest()[:20]}.so")
    for path in paths:
        if path.is_file():
            return path
    compiler = _compiler()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        raise Unavailable(f"the compiled kernels cannot be kept in {folder} ({problem.strerror}); make it writable or "
                          "set XDG_CACHE_HOME to a writable folder") from None
    problems = []
    for flags, path in zip(FLAG_SETS, paths):
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            done = subprocess.run([compiler, *flags, "-o", str(temporary), str(SOURCE), "-lm"], capture_output=True,
                                  text=True, timeout=300)
            if done.returncode == 0:
                os.replace(temporary, path)
                return path
            error = done.stderr.strip()
            problems.append(error.splitlines()[-1] if error else f"status {done.returncode}")
        except (OSError, subprocess.SubprocessError) as problem:
            problems.append(str(problem))
        finally:
            temporary.unlink(missing_ok=True)
    raise Unavailable(f"{compiler} could not build {SOURCE.name} ({'; '.join(dict.fromkeys(problems))}); install a "
                      "working C compiler (Debian: apt-get install gcc) or set CC to one")


_P, _N = ctypes.c_void_p, ctypes.c_int64  # a pointer, a count
SIGNATURES = {  # moments.c's functions and their arguments (each returns nothing)
    "noiselab_normal_parts": [_P, _P, _P, _P, _N],
    "noiselab_relu_forward": [_P, _P, _N, _P, _P, _N],
    "noiselab_relu_backward": [_P, _P, _N, _P, _P, _P, _P, _N],
    "noiselab_pool_forward": [_P, _P, _P, _P, _N, _N, _N],
    "noiselab_pool_backward": [_P, _P, _P, _P, _P, _P, _N, _N, _N],
    "noiselab_relu_pool_forward": [_P, _P, _N, _P, _P, _N, _N, _N],
    "noiselab_relu_pool_backward": [_P, _P, _N, _P, _P, _P, _P, _N, _N, _N],
}


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, arguments in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, None
    return lib


def _layout(t: Tensor) -> torch.memory_format:
    """The layout the kernels read t's family in: channels-last where t is stored so (and not also in the usual
    layout), else the usual one. Every tensor of a call is brought to it (a copy only where one is not)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _variance_step(var: Tensor, layout: torch.memory_format) -> tuple[Tensor, int]:
    """var as the kernels read it: one number (step 0) where every element's variance is the same stride-0 value,
    else stored like mean."""
    if var.dim() > 0 and not any(var.stride()):
        return var, 0
    return var.contiguous(memory_format=layout), 1


def _check_same_shape(mean: Tensor, var: Tensor) -> None:
    if var.shape != mean.shape:
        raise ValueError(f"mean and var must have the same shape, got {tuple(mean.shape)} and {tuple(var.shape)}")


def _operands(layout: torch.memory_format, mean: Tensor, var: Tensor, *grads: Tensor):
    """mean, var, var's step (_variance_step) and the gradients, each stored as the kernels read them."""
    _check_same_shape(mean, var)
    return (mean.contiguous(memory_format=layout), *_variance_step(var, layout),
            *(g.contiguous(memory_format=layout) for g in grads))


def _kernels() -> ctypes.CDLL:
    """The loaded library, for a call whose forward ran on it (even if NOISELAB_NATIVE has been set to 0 since)."""
    return _library if _library is not None else library()


def _pointers(*tensors: Tensor | None) -> list[int | None]:
    """The tensors' addresses for the C functions, which read float32 on the CPU and nothing else."""
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise ValueError(f"noiselab.native's kernels take float32 tensors on the CPU, got {t.dtype} on {t.device}; "
                             "noiselab.moments' rules take any (they call these kernels where they apply)")
    return [None if t is None else t.data_ptr() for t in tensors]


def _check_pool(mean: Tensor, *grads: Tensor) -> None:
    """A 2x2 pool's input: (B, C, H, W) with H and W even and not 0; its output's gradients, (B, C, H/2, W/2)."""
    if mean.dim() != 4 or mean.shape[-2] % 2 or mean.shape[-1] % 2 or not mean.shape[-2] or not mean.shape[-1]:
        raise ValueError(f"the 2x2 pool's kernels take (B, C, H, W) with H and W even and not 0, got "
                         f"{tuple(mean.shape)}; noiselab.moments.maxpool_moments takes any")
    pooled = (*mean.shape[:2], mean.shape[2] // 2, mean.shape[3] // 2)
    for grad in grads:
        if tuple(grad.shape) != pooled:
            raise ValueError(f"the pool's output gradients must have shape {pooled}, got {tuple(grad.shape)}")


def _gradients(mean: Tensor, needs_var: bool) -> tuple[Tensor, Tensor | None]:
    """Empty gradients for mean and, when wanted, var (stored like mean)."""
    return torch.empty_like(mean), torch.empty_like(mean) if needs_var else None


def normal_parts(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Phi(a), Phi(-a) and phi(a) as the kernels compute them, float32 (for the tests)."""
    a = a.detach().float().contiguous()
    out = [torch.empty_like(a) for _ in range(3)]
    _kernels().noiselab_normal_parts(*_pointers(a, *out), a.numel())
    return tuple(out)


def relu_forward(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """The moment ReLU's mean and variance (noiselab.moments._MomentReLU's values), stored like mean."""
    mean, var, step = _operands(_layout(mean), mean, var)
    out_mean, out_var = torch.empty_like(mean), torch.empty_like(mean)
    _kernels().noiselab_relu_forward(*_pointers(mean, var), step, *_pointers(out_mean, out_var), mean.numel())
    return out_mean, out_var


def relu_backward(mean: Tensor, var: Tensor, grad_mean: Tensor, grad_var: Tensor,
                  needs_var: bool) -> tuple[Tensor, Tensor | None]:
    """The moment ReLU's gradients with respect to its input's mean and variance (the variance's, as a tensor of
    mean's shape, only when needs_var)."""
    if grad_mean.shape != mean.shape or grad_var.shape != mean.shape:
        raise ValueError(f"the ReLU's output gradients must have shape {tuple(mean.shape)}, got "
                         f"{tuple(grad_mean.shape)} and {tuple(grad_var.shape)}")
    mean, var, step, grad_mean, grad_var = _operands(_layout(mean), mean, var, grad_mean, grad_var)
    d_mean, d_var = _gradients(mean, needs_var)
    _kernels().noiselab_relu_backward(*_pointers(mean, var), step, *_pointers(grad_mean, grad_var, d_mean, d_var),
                                     mean.numel())
    return d_mean, d_var


def _pool_layout(mean: Tensor) -> tuple[torch.memory_format, int]:
    """The pool's layout (_layout) and its unit: 1 in the usual layout, C on channels-last (moments.c)."""
    layout = _layout(mean)
    return layout, mean.shape[1] if layout == torch.channels_last else 1


def _pooled(mean: Tensor, layout: torch.memory_format) -> tuple[Tensor, Tensor]:
    """Empty outputs of a 2x2 pool of mean, stored in `layout`."""
    b, c, height, width = mean.shape
    out = torch.empty((b, c, height // 2, width // 2), dtype=mean.dtype, memory_format=layout)
    return out, torch.empty_like(out)


def pool_forward(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Clark's 2x2 stride-2 max-pool of (B, C, H, W) Gaussians, H and W even (_ClarkPool2x2's values), stored like
    mean (channels-last or the usual layout)."""
    _check_pool(mean)
    _check_same_shape(mean, var)
    layout, unit = _pool_layout(mean)
    mean, var = mean.contiguous(memory_format=layout), var.contiguous(memory_format=layout)
    out_mean, out_var = _pooled(mean, layout)
    _kernels().noiselab_pool_forward(*_pointers(mean, var, out_mean, out_var), mean.shape[-1], unit,
                                    out_mean.numel())
    return out_mean, out_var


def pool_backward(mean: Tensor, var: Tensor, grad_mean: Tensor, grad_var: Tensor) -> tuple[Tensor, Tensor]:
    """Clark's 2x2 pool's gradients with respect to its input's means and variances."""
    _check_pool(mean, grad_mean, grad_var)
    _check_same_shape(mean, var)
    layout, unit = _pool_layout(mean)
    mean, var, grad_mean, grad_var = (t.contiguous(memory_format=layout) for t in (mean, var, grad_mean, grad_var))
    d_mean, d_var = _gradients(mean, True)
    _kernels().noiselab_pool_backward(*_pointers(mean, var, grad_mean, grad_var, d_mean, d_var), mean.shape[-1], unit,
                                     grad_mean.numel())
    return d_mean, d_var


def relu_pool_forward(mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """The moment ReLU, then Clark's 2x2 pool, of (B, C, H, W) Gaussians, H and W even, in one pass: the values of
    relu_forward then pool_forward, without the ReLU's outputs in memory. var may be one stride-0 variance."""
    _check_pool(mean)
    layout, unit = _pool_layout(mean)
    mean, var, step = _operands(layout, mean, var)
    out_mean, out_var = _pooled(mean, layout)
    _kernels().noiselab_relu_pool_forward(*_pointers(mean, var), step, *_pointers(out_mean, out_var), mean.shape[-1],
                                         unit, out_mean.numel())
    return out_mean, out_var


def relu_pool_backward(mean: Tensor, var: Tensor, grad_mean: Tensor, grad_var: Tensor,
                       needs_var: bool) -> tuple[Tensor, Tensor | None]:
    """relu_pool_forward's gradients with respect to its input's means and variances (the variances', as a tensor
    of mean's shape, only when needs_var)."""
    _check_pool(mean, grad_mean, grad_var)
    layout, unit = _pool_layout(mean)
    mean, var, step, grad_mean, grad_var = _operands(layout, mean, var, grad_mean, grad_var)
    d_mean, d_var = _gradients(mean, needs_var)
    _kernels().noiselab_relu_pool_backward(*_pointers(mean, var), step,
                                          *_pointers(grad_mean, grad_var, d_mean, d_var), mean.shape[-1], unit,
                                          grad_mean.numel())
    return d_mean, d_var

"""noiselab.native's fused CPU kernels against the torch formulation they replace (noiselab.moments, in float64 and
in float32), and the way they are built: once per machine, and never in the way where there is no compiler."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from noiselab import maxpool_moments, native, propagate, relu_moments
from noiselab.models import build
from noiselab.moments import relu_maxpool_moments

REPO = Path(__file__).resolve().parents[1]


def test_the_fused_kernels_are_built_on_this_machine():
    assert native.enabled(), "noiselab.native could not build moments.c: install a C compiler (apt-get install gcc)"


def test_phi_keeps_its_relative_precision_in_both_tails():
    """The kernels' Phi(a), Phi(-a) and phi(a) against scipy in float64, from a = -13 to 13 (below, Phi(-|a|) is
    under float32's smallest normal number): within 1e-6 relative everywhere (4.7e-7 measured; the float32
    erfc(-a / sqrt 2) / 2 of noiselab.moments.normal_cdf is off by up to 1.2e-5, from rounding a / sqrt 2)."""
    from scipy import special

    a = torch.linspace(-13, 13, 520_001)
    a64 = a.double().numpy()
    references = (special.ndtr(a64), special.ndtr(-a64), torch.exp(-torch.from_numpy(a64) ** 2 / 2).numpy()
                  / (2 * torch.pi) ** 0.5)
    for name, value, reference in zip(("Phi(a)", "Phi(-a)", "phi(a)"), native.normal_parts(a), references):
        reference = torch.from_numpy(reference)
        relative = (value.double() - reference).abs() / reference
        assert relative.max() <= 1e-6, (name, float(relative.max()), float(a[relative.argmax()]))
    # NaN stays NaN; the infinities are the limits
    cdf, cdf_neg, pdf = native.normal_parts(torch.tensor([float("nan"), float("inf"), float("-inf")]))
    assert cdf[0].isnan() and cdf_neg[0].isnan() and pdf[0].isnan()
    assert cdf[1:].tolist() == [1.0, 0.0] and cdf_neg[1:].tolist() == [0.0, 1.0] and pdf[1:].tolist() == [0.0, 0.0]


def reference_and_fused(rule, inputs64):
    """(values, gradients) of rule in float64 through the torch formulation, and in float32 through the kernels,
    for the same inputs and the same random weighting of the two outputs."""
    weights = torch.rand((2, *rule(*inputs64)[0].shape), generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    results = []
    for inputs in (inputs64, [t.detach().float().requires_grad_() for t in inputs64]):
        out = rule(*inputs)
        grads = torch.autograd.grad((weights[0].to(out[0]) * out[0] + weights[1].to(out[1]) * out[1]).sum(), inputs)
        results.append(([t.detach().double() for t in out], [g.double() for g in grads]))
    return results


def test_the_fused_moment_relu_follows_float64_across_the_whole_range():
    """a = mean / s from -40 to 40 for four spreads, and variances at and below the floor: values within float32's
    rounding of the float64 formulation (the variance to a millionth of s^2), gradients to 2e-6 of their scale."""
    a = torch.linspace(-40, 40, 8001, dtype=torch.float64)
    std = torch.tensor([1e-3, 0.5, 1.0, 3.0], dtype=torch.float64)
    mean = (a[:, None] * std).flatten()
    var = (std**2).expand(len(a), 4).flatten()
    mean = torch.cat([mean, torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.0], dtype=torch.float64)])
    var = torch.cat([var, torch.tensor([0.0, 0.0, 0.0, 1e-13, 1e-13, 1e-13], dtype=torch.float64)])
    scale = var.sqrt().clamp_min(1e-6)
    (values64, grads64), (values32, grads32) = reference_and_fused(
        lambda m, v: relu_moments(m, v, "moment"), [mean.clone().requires_grad_(), var.clone().requires_grad_()])
    assert ((values32[0] - values64[0]).abs() <= 1e-6 * torch.maximum(mean.abs(), scale)).all()
    assert ((values32[1] - values64[1]).abs() <= 1e-6 * var.clamp_min(1e-12)).all()
    assert (values32[1] >= 0).all()
    torch.testing.assert_close(grads32[0], grads64[0], rtol=2e-6, atol=2e-6)
    # d/dvar carries 1 / s: compared relative to it
    torch.testing.assert_close(grads32[1] * scale, grads64[1] * scale, rtol=2e-6, atol=2e-6)


def test_the_fused_moment_relu_with_one_variance_everywhere_gives_sigmas_gradient():
    """Where the noise enters, var is sigma^2 as a stride-0 view, read as one number by the kernel; a learned
    sigma's gradient (summed over every element) is the float64 formulation's."""
    mean = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    for sigma in (0.7, 0.0):
        sigma64 = torch.tensor(sigma, dtype=torch.float64, requires_grad=True)
        (values64, grads64), (values32, grads32) = reference_and_fused(
            lambda m, s: relu_moments(m, (s * s).expand_as(m), "moment"), [mean.clone().requires_grad_(), sigma64])
        for one, other in zip((*values32, *grads32), (*values64, *grads64)):
            torch.testing.assert_close(one, other, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(4, 3, 8, 10), (2, 3, 7, 5), (1, 1, 2, 2)])
def test_the_fused_clark_pool_follows_float64(shape, layout):
    """The 2x2 pool's values and gradients against the float64 formulation: spread-out means, ties, windows with no
    variance at all, large means with small spreads, and an odd row and column left out (shape (2, 3, 7, 5)); in
    the usual layout and on channels-last (the kernel reads either in place)."""
    generator = torch.Generator().manual_seed(2)
    mean = 2 * torch.randn(shape, generator=generator, dtype=torch.float64)
    var = 0.02 + torch.rand(shape, generator=generator, dtype=torch.float64)
    flat_mean, flat_var = mean.view(-1), var.view(-1)
    flat_mean[:4] = 0.5  # ties
    flat_var[:2] = 0.0  # no variance
    if flat_mean.numel() > 8:
        flat_mean[4:8], flat_var[4:8] = torch.tensor([300.0, 299.5, 301.0, 300.2]), 1e-4
    mean, var = mean.contiguous(memory_format=layout), var.contiguous(memory_format=layout)
    (values64, grads64), (values32, grads32) = reference_and_fused(
        lambda m, v: maxpool_moments(m, v, "clark", 2), [mean.requires_grad_(), var.requires_grad_()])
    scale = float(mean.detach().abs().amax().clamp_min(1))
    torch.testing.assert_close(values32[0], values64[0], rtol=1e-6, atol=1e-6 * scale)
    torch.testing.assert_close(values32[1], values64[1], rtol=1e-5, atol=1e-5)
    for one, other in zip(grads32, grads64):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("one_variance", [True, False])
def test_the_fused_relu_then_pool_follows_float64_and_the_two_rules_in_turn(one_variance, layout):
    """The moment ReLU and Clark's 2x2 pool as one kernel (relu_maxpool_moments) against the float64 formulation,
    and against the two fused rules one after the other in float32: values and gradients, sigma's too where the
    variance is one learned sigma^2 (the first ReLU, where the noise enters)."""
    generator = torch.Generator().manual_seed(4)
    mean = 2 * torch.randn(3, 4, 8, 6, generator=generator, dtype=torch.float64)
    mean.view(-1)[:4] = torch.tensor([0.5, 0.5, -30.0, 40.0], dtype=torch.float64)  # a tie, far below and above 0
    mean = mean.contiguous(memory_format=layout)
    if one_variance:
        second = torch.tensor(0.6, dtype=torch.float64)

        def variance(m, s):
            return (s * s).expand_as(m)
    else:
        second = 0.02 + torch.rand(3, 4, 8, 6, generator=generator, dtype=torch.float64)
        second.view(-1)[4:6] = 0.0  # no variance
        second = second.contiguous(memory_format=layout)

        def variance(m, v):
            return v

    def fused(m, other):
        return relu_maxpool_moments(m, variance(m, other), "moment", "clark")

    def in_turn(m, other):
        return maxpool_moments(*relu_moments(m, variance(m, other), "moment"), "clark")

    inputs = [mean.requires_grad_(), second.requires_grad_()]
    (values64, grads64), (values32, grads32) = reference_and_fused(fused, inputs)
    (_, _), (turn_values, turn_grads) = reference_and_fused(in_turn, inputs)
    for one, reference, turn in zip((*values32, *grads32), (*values64, *grads64), (*turn_values, *turn_grads)):
        torch.testing.assert_close(one, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(one, turn, rtol=1e-6, atol=1e-6)


def test_propagate_takes_a_relu_and_its_pool_at_once_with_the_same_result():
    """LeNet5 under the moment and Clark rules: propagate's output and gradients when it runs each ReLU and its pool
    as one kernel equal those of the layer-by-layer pass it makes to record every layer (return_layers=True)."""
    torch.manual_seed(5)
    model = build("lenet5")
    x = torch.rand(16, 1, 28, 28)

    def run(return_layers):
        model.zero_grad()
        out = propagate(model, x, 0.5, relu="moment", pool="clark", return_layers=return_layers)
        out = out[0] if return_layers else out
        (out.mean.square().sum() + out.var.sum()).backward()
        return [out.mean.detach(), out.var.detach(), *(p.grad.clone() for p in model.parameters())]

    for one, other in zip(run(False), run(True)):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_fused_kernels_equal_the_torch_ops_they_replace_in_float32(monkeypatch, layout):
    """The same float32 inputs through both: LeNet5's first ReLU and pool sizes, values and gradients, in either
    layout; the kernels' outputs and gradients keep their inputs' layout."""
    generator = torch.Generator().manual_seed(3)
    mean = torch.randn(8, 16, 28, 28, generator=generator).contiguous(memory_format=layout)
    var = (torch.rand(8, 16, 28, 28, generator=generator) * 0.5).contiguous(memory_format=layout)
    sigma_squared = torch.tensor(0.25).expand_as(mean)

    def step():
        m, v = mean.clone().requires_grad_(), var.clone().requires_grad_()
        relu_mean, relu_var = relu_moments(m, sigma_squared, "moment")
        second_mean, second_var = relu_moments(relu_mean - 0.5, relu_var + v, "moment")
        pool_mean, pool_var = maxpool_moments(second_mean + m, second_var, "clark", 2)
        (pool_mean.square().sum() + pool_var.sum()).backward()
        return relu_mean, relu_var, second_mean, second_var, pool_mean, pool_var, m.grad, v.grad

    fused = step()
    if layout == torch.channels_last:
        assert all(t.is_contiguous(memory_format=layout) for t in fused)
    monkeypatch.setenv("NOISELAB_NATIVE", "0")
    assert not native.enabled()
    ops = step()
    for one, other in zip(fused, ops):
        torch.testing.assert_close(one, other, rtol=1e-5, atol=1e-5)


PROBE = """
import json, warnings, torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from noiselab import native, relu_moments
    mean, var = relu_moments(torch.tensor([0.5, -1.0]), torch.tensor([1.0, 4.0]), "moment")
print(json.dumps({"enabled": native.enabled(), "mean": mean.tolist(), "var": var.tolist(),
                  "warnings": [str(w.message) for w in caught]}))
"""


def probe(cache: Path, **env) -> dict:
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    environment.pop("NOISELAB_NATIVE", None)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_library_is_built_once_into_the_cache_and_a_missing_compiler_leaves_torch_ops(tmp_path):
    first = probe(tmp_path)
    assert first["enabled"] and not first["warnings"]
    (library,) = (tmp_path / "noiselab").glob("native-moments-*.so")
    built = library.stat().st_mtime_ns
    second = probe(tmp_path, CC="/nonexistent/cc")  # the cached library is used: no compiler asked
    assert second["enabled"] and library.stat().st_mtime_ns == built
    assert second["mean"] == first["mean"] and second["var"] == first["var"]
    # a fresh cache and no compiler: a warning naming the fix, and the same rule as torch ops
    third = probe(tmp_path / "empty", CC="/nonexistent/cc")
    assert not third["enabled"]
    (warning,) = third["warnings"]
    assert "/nonexistent/cc could not build moments.c" in warning and "install a working C compiler" in warning
    assert third["mean"] == pytest.approx(first["mean"], rel=1e-6)
    assert third["var"] == pytest.approx(first["var"], rel=1e-6)


def test_a_damaged_library_in_the_cache_is_built_again_and_an_unwritable_cache_is_named(tmp_path):
    probe(tmp_path)
    (library,) = (tmp_path / "noiselab").glob("native-moments-*.so")
    library.write_bytes(b"not a shared library")
    again = probe(tmp_path)
    assert again["enabled"] and not again["warnings"] and library.read_bytes() != b"not a shared library"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    refused = probe(blocked)  # the cache folder would be inside a file
    assert not refused["enabled"]
    (warning,) = refused["warnings"]
    assert "cannot be kept in" in warning and "XDG_CACHE_HOME" in warning
    assert refused["mean"] == pytest.approx(again["mean"], rel=1e-6)


def test_the_kernels_refuse_what_they_cannot_read_with_the_fix():
    """Other dtypes, mismatched shapes, a pool input that is not (B, C, H, W) with even sides: a ValueError naming
    it (the C functions would read past or misread memory), never a wrong answer."""
    mean = torch.randn(2, 3, 4, 6)
    with pytest.raises(ValueError, match="float32 tensors on the CPU, got torch.float64.*noiselab.moments"):
        native.relu_forward(mean.double(), mean.double().abs())
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3, 4, 6\) and \(2, 3, 4, 5\)"):
        native.relu_forward(mean, torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"gradients must have shape \(2, 3, 4, 6\)"):
        native.relu_backward(mean, mean.abs(), torch.ones(2, 3, 4, 5), torch.ones(2, 3, 4, 6), True)
    for bad in (torch.randn(2, 3, 5, 6), torch.randn(3, 4, 6), torch.randn(2, 3, 0, 6)):
        with pytest.raises(ValueError, match="H and W even and not 0.*maxpool_moments takes any"):
            native.pool_forward(bad, bad.abs())
        with pytest.raises(ValueError, match="H and W even and not 0"):
            native.relu_pool_forward(bad, bad.abs())
    with pytest.raises(ValueError, match=r"output gradients must have shape \(2, 3, 2, 3\)"):
        native.pool_backward(mean, mean.abs(), torch.ones(2, 3, 2, 2), torch.ones(2, 3, 2, 3))
    with pytest.raises(ValueError, match=r"output gradients must have shape \(2, 3, 2, 3\)"):
        native.relu_pool_backward(mean, mean.abs(), torch.ones(2, 3, 2, 3), torch.ones(2, 3, 4, 6), True)
    # the rules themselves name a bad rule or shape on every path, the fused pair's included
    with pytest.raises(ValueError, match="relu='moments' is not a known rule"):
        relu_maxpool_moments(mean, mean.abs(), "moments", "clark")
    with pytest.raises(ValueError, match="pool='clarke' is not a known rule"):
        relu_maxpool_moments(mean, mean.abs(), "moment", "clarke")
    with pytest.raises(ValueError, match="same shape"):
        relu_maxpool_moments(mean, torch.rand(2, 3, 4, 5), "moment", "clark")

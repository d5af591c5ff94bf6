"""The moment rules against independent references: numerical integration and sampling."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

from noiselab import avgpool_moments, max2_moments, maxpool_moments, relu_moments
from noiselab.moments import PAPER_CENSOR_SIGMAS


def censored_relu_moments_by_integration(mu: float, s: float) -> tuple[float, float]:
    """E[ReLU(Z)] and Var[ReLU(Z)] for Z ~ N(mu, s^2), by quadrature over z > 0."""
    upper = mu + 12 * s
    if upper <= 0:
        return 0.0, 0.0
    density = stats.norm(mu, s).pdf
    points = [max(mu, 0.0)] if 0 < mu < upper else None
    first = integrate.quad(lambda z: z * density(z), 0, upper, points=points, epsabs=1e-13, epsrel=1e-12)[0]
    second = integrate.quad(lambda z: z * z * density(z), 0, upper, points=points, epsabs=1e-13, epsrel=1e-12)[0]
    return first, second - first * first


def max_of_two_by_integration(ma: float, sa: float, mb: float, sb: float) -> tuple[float, float]:
    """E and Var of max(A, B), A, B independent, from the density f_A F_B + f_B F_A of the max."""
    A, B = stats.norm(ma, sa), stats.norm(mb, sb)

    def density(t):
        return A.pdf(t) * B.cdf(t) + B.pdf(t) * A.cdf(t)

    lo, hi = min(ma - 12 * sa, mb - 12 * sb), max(ma + 12 * sa, mb + 12 * sb)
    points = sorted({ma, mb})
    first = integrate.quad(lambda t: t * density(t), lo, hi, points=points, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    second = integrate.quad(lambda t: t * t * density(t), lo, hi, points=points, epsabs=1e-13, epsrel=1e-12,
                            limit=200)[0]
    return first, second - first * first


GRID = [(mu, s) for mu in (-6.0, -3.0, -1.5, -0.4, 0.0, 0.3, 1.0, 2.5, 6.0) for s in (0.05, 0.5, 1.0, 2.0)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_relu_moment_rule_matches_integration_on_a_grid(dtype):
    mu = torch.tensor([m for m, _ in GRID], dtype=dtype)
    s = torch.tensor([s for _, s in GRID], dtype=dtype)
    mean, var = relu_moments(mu, s * s, "moment")
    for i, (m, sd) in enumerate(GRID):
        ref_mean, ref_var = censored_relu_moments_by_integration(m, sd)
        assert mean[i].item() == pytest.approx(ref_mean, abs=1e-4), (m, sd)
        assert var[i].item() == pytest.approx(ref_var, abs=1e-4), (m, sd)


@settings(max_examples=60, deadline=None)
@given(mu=st.floats(-8, 8), s=st.floats(0.01, 4))
def test_relu_moment_rule_matches_integration_anywhere(mu, s):
    mean, var = relu_moments(torch.tensor([mu], dtype=torch.float64), torch.tensor([s * s], dtype=torch.float64))
    ref_mean, ref_var = censored_relu_moments_by_integration(mu, s)
    assert mean.item() == pytest.approx(ref_mean, abs=1e-4)
    assert var.item() == pytest.approx(ref_var, abs=1e-4)
    assert var.item() >= 0


@settings(max_examples=60, deadline=None)
@given(mu=st.floats(-5, 5), s=st.floats(0.05, 3))
def test_paper_relu_rule_is_the_laplace_approximation_of_the_censored_density(mu, s):
    """Its own definition (Sec. 2.1): the mean is the mode of the density on z > 0, the variance is
    -1/h''(mode) for h = log density, and the output is treated as 0 (no variance) below mu = -3 s."""
    mean, var = relu_moments(torch.tensor([mu], dtype=torch.float64), torch.tensor([s * s], dtype=torch.float64),
                             "paper")
    if mu < -PAPER_CENSOR_SIGMAS * s:
        assert mean.item() == 0.0 and var.item() == 0.0
        return
    log_density = stats.norm(mu, s).logpdf
    found = optimize.minimize_scalar(lambda z: -log_density(z), bounds=(0.0, max(mu, 0.0) + 5 * s),
                                     method="bounded", options={"xatol": 1e-10})
    mode = found.x
    h = 1e-3 * s  # one-sided second difference at the boundary mode z = 0
    second = (log_density(mode + 2 * h) - 2 * log_density(mode + h) + log_density(mode)) / h**2
    assert mean.item() == pytest.approx(mode, abs=1e-5 * max(1.0, s))
    assert var.item() == pytest.approx(-1.0 / second, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(ma=st.floats(-4, 4), mb=st.floats(-4, 4), sa=st.floats(0.05, 2), sb=st.floats(0.05, 2))
@pytest.mark.slow
def test_clark_max_of_two_is_exact(ma, mb, sa, sb):
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    mean, var = max2_moments(t(ma), t(sa * sa), t(mb), t(sb * sb))
    ref_mean, ref_var = max_of_two_by_integration(ma, sa, mb, sb)
    assert mean.item() == pytest.approx(ref_mean, abs=1e-6)
    assert var.item() == pytest.approx(ref_var, abs=1e-6)


def test_clark_max_stays_accurate_for_large_means_in_float32():
    """The variance is written in differences of means, so a large common offset costs no precision."""
    mean, var = max2_moments(*(torch.tensor([v], dtype=torch.float32) for v in (1000.3, 0.04, 1000.0, 0.09)))
    ref_mean, ref_var = max_of_two_by_integration(0.3, 0.2, 0.0, 0.3)
    assert mean.item() == pytest.approx(1000 + ref_mean, abs=1e-3)
    assert var.item() == pytest.approx(ref_var, rel=1e-3)


def test_clark_pool_on_pairs_equals_max_of_two():
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, 4, 6, generator=generator, dtype=torch.float64)
    var = torch.rand(2, 3, 4, 6, generator=generator, dtype=torch.float64)
    pooled_mean, pooled_var = maxpool_moments(mean, var, "clark", kernel_size=(1, 2))
    pair_mean, pair_var = max2_moments(mean[..., 0::2], var[..., 0::2], mean[..., 1::2], var[..., 1::2])
    torch.testing.assert_close(pooled_mean, pair_mean)
    torch.testing.assert_close(pooled_var, pair_var)


def test_clark_pool_2x2_is_close_to_sampling():
    """For four inputs the pairwise tree is an approximation (the max of two Gaussians is not Gaussian):
    against 400k samples its mean is within 3% of the spread, and its variance is low by up to ~11% here."""
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(1, 2, 4, 4, generator=generator, dtype=torch.float64)
    var = 0.2 + torch.rand(1, 2, 4, 4, generator=generator, dtype=torch.float64)
    out_mean, out_var = maxpool_moments(mean, var, "clark", kernel_size=2)
    draws = mean + var.sqrt() * torch.randn((400_000,) + tuple(mean.shape), generator=generator, dtype=torch.float64)
    pooled = torch.nn.functional.max_pool2d(draws.flatten(0, 1), 2).view(400_000, 1, 2, 2, 2)
    assert (out_mean - pooled.mean(0)).abs().max() < 0.03 * pooled.std(0).min()
    relative = (out_var - pooled.var(0)) / pooled.var(0)
    assert (relative < 0).all() and relative.min() > -0.15


def test_paper_pool_takes_the_max_mean_and_its_variance():
    mean = torch.tensor([[[[1.0, 3.0], [2.0, -1.0]]]])
    var = torch.tensor([[[[0.1, 0.3], [0.2, 0.4]]]])
    out_mean, out_var = maxpool_moments(mean, var, "paper", kernel_size=2)
    assert out_mean.item() == 3.0 and out_var.item() == pytest.approx(0.3)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avgpool_moments_are_exact(count_include_pad):
    generator = torch.Generator().manual_seed(2)
    mean = torch.randn(1, 1, 5, 5, generator=generator, dtype=torch.float64)
    var = torch.rand(1, 1, 5, 5, generator=generator, dtype=torch.float64)
    args = dict(kernel_size=3, stride=2, padding=1, count_include_pad=count_include_pad)
    out_mean, out_var = avgpool_moments(mean, var, **args)
    # The pool is linear: its Jacobian J gives Var = J diag(var) J^T's diagonal exactly.
    J = torch.autograd.functional.jacobian(lambda x: torch.nn.functional.avg_pool2d(x, **args).flatten(),
                                           mean).reshape(-1, 25)
    torch.testing.assert_close(out_mean.flatten(), torch.nn.functional.avg_pool2d(mean, **args).flatten())
    torch.testing.assert_close(out_var.flatten(), (J.square() * var.flatten()).sum(1))


@pytest.mark.parametrize("relu_rule", ["paper", "moment"])
def test_relu_rules_are_finite_with_zero_variance(relu_rule):
    mean = torch.tensor([-2.0, -1e-8, 0.0, 1e-8, 3.0], requires_grad=True)
    var = torch.zeros(5, requires_grad=True)
    out_mean, out_var = relu_moments(mean, var, relu_rule)
    (out_mean.sum() + out_var.sum()).backward()
    for t in (out_mean, out_var, mean.grad, var.grad):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(out_mean.detach(), torch.relu(mean.detach()), atol=1e-6, rtol=0)
    assert (out_var == 0).all()


def test_clark_max_is_finite_with_zero_variance_and_ties():
    mean_a = torch.tensor([1.0, 2.0, -1.0], requires_grad=True)
    mean_b = torch.tensor([1.0, 0.0, 3.0], requires_grad=True)
    zeros = torch.zeros(3, requires_grad=True)
    mean, var = max2_moments(mean_a, zeros, mean_b, zeros)
    (mean.sum() + var.sum()).backward()
    for t in (mean, var, mean_a.grad, mean_b.grad, zeros.grad):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(mean.detach(), torch.maximum(mean_a, mean_b).detach(), atol=1e-5, rtol=0)


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match="rule='laplace'"):
        relu_moments(torch.zeros(1), torch.ones(1), "laplace")
    with pytest.raises(ValueError, match="use pool='paper'"):
        maxpool_moments(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), "clark", 2, padding=1)


def test_moment_rule_variance_is_accurate_far_in_the_positive_tail_in_float32():
    """Var[ReLU(Z)] -> s^2 when mu >> s; the naive E[Y^2] - E[Y]^2 loses it to cancellation in float32."""
    mean, var = relu_moments(torch.tensor([300.0]), torch.tensor([0.01]), "moment")
    assert mean.item() == pytest.approx(300.0)
    assert var.item() == pytest.approx(0.01, rel=1e-4)
    assert math.isfinite(var.item())


def test_moment_relu_and_clark_max_in_float32_follow_float64_across_the_whole_range():
    """One formula serves every mean/std ratio a: in float32 it stays within rounding of float64 from a = -40 to 40,
    the variance to a millionth of s^2 (s = 1 here) where it is tiny (a < 0) and where it nears s^2 (a > 0)."""
    a = torch.linspace(-40, 40, 80_001, dtype=torch.float64)
    ones = torch.ones_like(a)
    for float64, float32 in ((relu_moments(a, ones, "moment"), relu_moments(a.float(), ones.float(), "moment")),
                             (max2_moments(a, 0.5 * ones, 0 * a, 0.5 * ones),
                              max2_moments(a.float(), 0.5 * ones.float(), 0 * a.float(), 0.5 * ones.float()))):
        (mean64, var64), (mean32, var32) = float64, float32
        assert ((mean32.double() - mean64).abs() <= 1e-6 * a.abs().clamp_min(1)).all()
        assert ((var32.double() - var64).abs() <= 1e-6).all()
        assert (var32 >= 0).all()


# The closed-form gradients (moments._MomentReLU, moments._ClarkTree) against finite differences, in float64.

def gaussians(shape, seed, mean_scale=2.0):
    generator = torch.Generator().manual_seed(seed)
    mean = (mean_scale * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()
    var = (0.02 + torch.rand(shape, generator=generator, dtype=torch.float64)).requires_grad_()
    return mean, var


def test_moment_relu_gradients_match_finite_differences():
    mean, var = gaussians((300,), 3, mean_scale=3.0)
    assert torch.autograd.gradcheck(lambda m, v: relu_moments(m, v, "moment"), (mean, var))


def test_moment_relu_with_one_variance_everywhere_is_the_elementwise_rule():
    """Where the noise enters, var is sigma^2 as a stride-0 view: the rule takes it as one number (fewer passes) and
    must give the values and gradients of the element-wise rule, sigma's gradient included (a learnable sigma)."""
    mean, _ = gaussians((4, 3, 5), 7, mean_scale=3.0)
    sigma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, s: relu_moments(m, (s * s).expand_as(m), "moment"), (mean, sigma))
    shared = relu_moments(mean, (sigma * sigma).expand_as(mean), "moment")
    elementwise = relu_moments(mean, sigma * sigma * torch.ones_like(mean), "moment")  # a full tensor: the general rule
    for one, other in zip(shared, elementwise):
        torch.testing.assert_close(one, other, rtol=0, atol=1e-15)
    weights = torch.rand(2, *mean.shape, dtype=torch.float64)
    first = torch.autograd.grad((weights[0] * shared[0] + weights[1] * shared[1]).sum(), (mean, sigma))
    second = torch.autograd.grad((weights[0] * elementwise[0] + weights[1] * elementwise[1]).sum(), (mean, sigma))
    for one, other in zip(first, second):
        torch.testing.assert_close(one, other, rtol=1e-12, atol=1e-15)
    # a fixed sigma: no gradient for var is asked for, mean's is the same; sigma = 0 falls back to the general rule
    fixed = relu_moments(mean, torch.tensor(0.49, dtype=torch.float64).expand_as(mean), "moment")
    assert torch.autograd.grad(fixed[1].sum(), mean)[0].shape == mean.shape
    zero = relu_moments(mean, torch.tensor(0.0, dtype=torch.float64).expand_as(mean), "moment")
    torch.testing.assert_close(zero[0], mean.clamp_min(0))
    torch.testing.assert_close(zero[1], torch.zeros_like(mean))


def test_clark_max_of_two_gradients_match_finite_differences():
    mean_a, var_a = gaussians((200,), 4)
    mean_b, var_b = gaussians((200,), 5)
    assert torch.autograd.gradcheck(max2_moments, (mean_a, var_a, mean_b, var_b))


@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 3, 6, 6), 2, None),    # windows side by side, the usual 2x2 pool
    ((2, 2, 7, 5), 2, None),    # an odd row and column left out, as F.max_pool2d does
    ((2, 2, 7, 7), 3, 2),       # overlapping windows of 9: a tree with an odd element carried over
    ((1, 2, 4, 6), (1, 3), None),
])
def test_clark_pool_gradients_match_finite_differences(shape, kernel, stride):
    mean, var = gaussians(shape, 6)
    assert torch.autograd.gradcheck(lambda m, v: maxpool_moments(m, v, "clark", kernel, stride), (mean, var))
    out_mean, _ = maxpool_moments(mean, var, "clark", kernel, stride)
    assert out_mean.shape == torch.nn.functional.max_pool2d(mean, kernel, stride).shape


@pytest.mark.parametrize("shape", [(3, 4, 8, 6), (2, 3, 7, 5)])
def test_the_usual_2x2_pool_read_in_place_is_the_tree_over_gathered_windows(shape):
    """maxpool_moments' 2x2 path (moments._ClarkPool2x2) against _ClarkTree over the windows gathered (the path of
    every other pool): values and gradients, float64, an odd row and column left out."""
    from noiselab.moments import _ClarkTree

    mean, var = gaussians(shape, 8)
    ho, wo = shape[2] // 2, shape[3] // 2

    def windows(t):
        t = t[:, :, : 2 * ho, : 2 * wo].reshape(shape[0], shape[1], ho, 2, wo, 2)
        return t.permute(3, 5, 0, 1, 2, 4).reshape(4, shape[0], shape[1], ho, wo)

    fast = maxpool_moments(mean, var, "clark", 2)
    tree = _ClarkTree.apply(windows(mean), windows(var))
    weights = torch.rand(2, shape[0], shape[1], ho, wo, dtype=torch.float64)
    grads = [torch.autograd.grad((weights[0] * out[0] + weights[1] * out[1]).sum(), (mean, var))
             for out in (fast, tree)]
    for one, other in zip((*fast, *grads[0]), (*tree, *grads[1])):
        torch.testing.assert_close(one, other, rtol=1e-13, atol=1e-15)
    assert (grads[0][0][:, :, 2 * ho :, :] == 0).all() and (grads[0][0][:, :, :, 2 * wo :] == 0).all()


def test_clark_max_of_a_constant_and_a_barely_random_input_has_the_one_sided_gradient():
    """max(A, b) with A ~ N(1, v), b = 0.3 fixed: Var = v for small v, so dVar/dv = 1 at v = 0 (not 0)."""
    tensors = [torch.tensor([x], dtype=torch.float64, requires_grad=True) for x in (1.0, 0.0, 0.3, 0.0)]
    _, var = max2_moments(*tensors)
    grads = torch.autograd.grad(var.sum(), tensors)
    assert [float(g) for g in grads] == [0.0, 1.0, 0.0, 0.0]


def test_normal_cdf_keeps_the_lower_tail():
    from scipy import special

    from noiselab.moments import normal_cdf

    z = torch.linspace(-37, 8, 451, dtype=torch.float64)
    torch.testing.assert_close(normal_cdf(z), torch.from_numpy(special.ndtr(z.numpy())), rtol=1e-12, atol=0)


@pytest.mark.parametrize("rho", [-0.999, -0.9, -0.5, 0.0, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("mean_a, mean_b, std_a, std_b", [(0.0, 0.0, 1.0, 1.0), (0.3, 0.0, 1.0, 0.5),
                                                          (-2.0, 0.5, 0.7, 1.3)])
def test_the_correlated_max_of_two_matches_sampling_the_bivariate_normal(rho, mean_a, mean_b, std_a, std_b):
    from noiselab.moments import correlated_max2_moments

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 1_000_000, generator=generator, dtype=torch.float64)
    a = mean_a + std_a * z[0]
    b = mean_b + std_b * (rho * z[0] + math.sqrt(max(0.0, 1 - rho**2)) * z[1])
    sampled = torch.maximum(a, b)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    mean, var = correlated_max2_moments(t(mean_a), t(std_a**2), t(mean_b), t(std_b**2), t(rho * std_a * std_b))
    scale = max(std_a, std_b)
    assert abs(float(mean) - float(sampled.mean())) < 4e-3 * scale  # 1M draws: standard error <= 1e-3 scale
    assert abs(float(var) - float(sampled.var())) < 6e-3 * scale**2  # and <= 1.5e-3 scale^2


def test_the_correlated_max_is_the_independent_one_at_zero_covariance_and_refuses_an_impossible_covariance():
    from noiselab.moments import correlated_max2_moments, max2_moments

    generator = torch.Generator().manual_seed(1)
    mean_a, mean_b = torch.randn(2, 50, generator=generator, dtype=torch.float64)
    var_a, var_b = torch.rand(2, 50, generator=generator, dtype=torch.float64) + 0.1
    for got, want in zip(correlated_max2_moments(mean_a, var_a, mean_b, var_b, torch.zeros(50, dtype=torch.float64)),
                         max2_moments(mean_a, var_a, mean_b, var_b)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"\|cov_ab\| <= sqrt\(var_a var_b\)"):
        correlated_max2_moments(mean_a, var_a, mean_b, var_b, (var_a * var_b).sqrt() * 1.1)
    with pytest.raises(ValueError, match="var_a and var_b must be >= 0"):
        correlated_max2_moments(mean_a, -var_a, mean_b, var_b, torch.zeros(50, dtype=torch.float64))
    with pytest.raises(ValueError, match="cov_ab must be finite"):
        correlated_max2_moments(mean_a, var_a, mean_b, var_b, torch.full((50,), float("nan"), dtype=torch.float64))


def test_the_correlated_max_has_finite_gradients_that_match_finite_differences_even_at_correlation_one():
    from noiselab.moments import correlated_max2_moments

    def f(mean_a, var_a, mean_b, var_b, cov):
        m, v = correlated_max2_moments(mean_a, var_a, mean_b, var_b, cov)
        return m + 0.3 * v

    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.2, 1.0, -0.1, 0.8, 0.5)]
    assert torch.autograd.gradcheck(f, inputs)
    same = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.0, 1.0, 0.0, 1.0, 1.0)]
    value = f(*same)  # A = B: theta = 0, the max is A itself
    assert float(value.detach()) == pytest.approx(0.3, abs=1e-5)  # theta is floored at sqrt(VAR_FLOOR) = 1e-6
    assert all(torch.isfinite(g) for g in torch.autograd.grad(value, same))

"""The stochastic loss: its definition, its gradient (hand-derived and finite differences), learnable sigma."""

import math

import pytest
import torch
from scipy import stats

import noiselab
from noiselab.models import DemoCNN, LeNet5


def random_output(batch=5, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    var = 0.1 + torch.rand(batch, classes, generator=generator, dtype=torch.float64)
    target = torch.randint(0, classes, (batch,), generator=generator)
    return mean, var, target


def test_loss_is_mse_minus_the_mean_probability_that_the_true_class_wins():
    """Against the definition evaluated with scipy: P(Y_k > Y_i) for independent Gaussians."""
    mean, var, target = random_output()
    losses = noiselab.stochastic_loss(mean, var, target, reduction="none")
    n = mean.shape[1]
    for b in range(mean.shape[0]):
        k = int(target[b])
        mse = sum((float(i == k) - mean[b, i].item()) ** 2 for i in range(n)) / n
        wins = [stats.norm.sf(0, loc=(mean[b, k] - mean[b, i]).item(), scale=math.sqrt((var[b, k] + var[b, i]).item()))
                for i in range(n) if i != k]  # P(Y_k - Y_i > 0)
        assert losses[b].item() == pytest.approx(mse - sum(wins) / (n - 1), abs=1e-12)


def test_loss_rewards_the_true_class_not_the_others():
    """The paper's printed erf((mu_i - mu_k)/...) is P(Y_i > Y_k); with the intent implemented, raising the
    true class's mean above the others lowers the loss's probability term."""
    var = torch.full((1, 3), 0.5)
    target = torch.tensor([0])
    _, prob_low = noiselab.stochastic_loss_terms(torch.tensor([[0.0, 1.0, 1.0]]), var, target)
    _, prob_high = noiselab.stochastic_loss_terms(torch.tensor([[2.0, 1.0, 1.0]]), var, target)
    # mean_k - mean_i = +-1 with var_k + var_i = 1: P(Y_k > Y_i) = Phi(+-1)
    assert prob_high.item() == pytest.approx(stats.norm.cdf(1.0), abs=1e-6)
    assert prob_low.item() == pytest.approx(stats.norm.cdf(-1.0), abs=1e-6)


def test_reductions():
    mean, var, target = random_output()
    per_example = noiselab.stochastic_loss(mean, var, target, reduction="none")
    assert per_example.shape == (5,)
    torch.testing.assert_close(noiselab.stochastic_loss(mean, var, target), per_example.mean())
    torch.testing.assert_close(noiselab.stochastic_loss(mean, var, target, reduction="sum"), per_example.sum())
    with pytest.raises(ValueError, match="reduction"):
        noiselab.stochastic_loss(mean, var, target, reduction="max")


def hand_gradient_wrt_mean(mean, var, target):
    """d Loss / d mean_i for one example, derived by hand (the paper's Sec. 4 misprints the square root):
    i != k: (2/n)(mean_i - 0) + phi(z_i) / ((n-1) s_i);  i = k: (2/n)(mean_k - 1) - sum_{i != k} phi(z_i) / ((n-1) s_i)
    with s_i = sqrt(var_k + var_i), z_i = (mean_k - mean_i) / s_i."""
    batch, n = mean.shape
    grad = torch.zeros_like(mean)
    for b in range(batch):
        k = int(target[b])
        for i in range(n):
            grad[b, i] = 2.0 / n * (mean[b, i] - float(i == k))
        for i in range(n):
            if i == k:
                continue
            s = math.sqrt(var[b, k] + var[b, i])
            push = stats.norm.pdf((mean[b, k] - mean[b, i]).item() / s) / ((n - 1) * s)
            grad[b, i] += push
            grad[b, k] -= push
    return grad / batch  # reduction="mean" over the batch


def test_autograd_matches_the_hand_derived_gradient():
    mean, var, target = random_output(batch=6, classes=5, seed=1)
    mean.requires_grad_(True)
    noiselab.stochastic_loss(mean, var, target).backward()
    torch.testing.assert_close(mean.grad, hand_gradient_wrt_mean(mean.detach(), var, target), atol=1e-12, rtol=1e-9)


def test_autograd_matches_finite_differences():
    mean, var, target = random_output(batch=3, classes=4, seed=2)
    mean.requires_grad_(True)
    var.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, v: noiselab.stochastic_loss(m, v, target), (mean, var))


def test_gradient_with_respect_to_sigma_is_finite_and_nonzero_for_every_rule_set():
    torch.manual_seed(0)
    model = LeNet5()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 7, 9])
    for relu in ("paper", "moment"):
        for pool in ("paper", "clark"):
            sigma = torch.tensor(0.5, requires_grad=True)
            mean, var = noiselab.propagate(model, x, sigma, relu=relu, pool=pool)
            noiselab.stochastic_loss(mean, var, y).backward()
            assert torch.isfinite(sigma.grad) and sigma.grad != 0, (relu, pool)


@pytest.mark.parametrize("sigma_value", [0.0, 1e-30, 1e-12, 1e-6])
def test_sigma_to_zero_is_stable_in_values_and_gradients(sigma_value):
    torch.manual_seed(1)
    model = DemoCNN()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    for relu, pool in (("paper", "paper"), ("moment", "clark")):
        model.zero_grad()
        sigma = torch.tensor(sigma_value, requires_grad=True)
        mean, var = noiselab.propagate(model, x, sigma, relu=relu, pool=pool)
        loss = noiselab.stochastic_loss(mean, var, y)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(sigma.grad)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_learnable_sigma_stays_positive_and_trains():
    sigma = noiselab.LearnableSigma(1.9)
    assert sigma().item() == pytest.approx(1.9, rel=1e-6)
    assert sigma().dim() == 0 and sigma().requires_grad
    optimizer = torch.optim.SGD(sigma.parameters(), lr=10.0)
    for _ in range(50):  # drive sigma down hard: softplus keeps it positive
        optimizer.zero_grad()
        (sigma() ** 2).backward()
        optimizer.step()
    assert 0 < sigma().item() < 0.2
    assert "sigma=" in repr(sigma)
    assert noiselab.LearnableSigma(30.0)().item() == pytest.approx(30.0)  # inverse softplus stable for large init


def test_bimodel_term_pushes_sigma_up():
    sigma = noiselab.LearnableSigma(0.5)
    noiselab.bimodel_term(sigma(), alpha=0.25).backward()
    assert sigma.raw.grad < 0  # gradient descent raises sigma
    assert noiselab.bimodel_term(2.0) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="alpha"):
        noiselab.bimodel_term(1.0, alpha=-1)


@pytest.mark.parametrize("init", [0.0, -1.0, float("nan")])
def test_learnable_sigma_rejects_a_bad_start(init):
    with pytest.raises(ValueError, match="init"):
        noiselab.LearnableSigma(init)


def test_bad_labels_and_shapes_are_named():
    mean, var, _ = random_output(batch=2, classes=3)
    with pytest.raises(ValueError, match=r"target holds class indices from 0 to 3; they must lie in \[0, 2\]"):
        noiselab.stochastic_loss(mean, var, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target holds class indices from -1"):
        noiselab.stochastic_loss(mean, var, torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
        noiselab.stochastic_loss(mean, var, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer tensor"):
        noiselab.stochastic_loss(mean, var, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        noiselab.stochastic_loss(mean, var[:, :2], torch.tensor([0, 1]))


@pytest.mark.slow
def test_at_sigma_zero_the_probability_terms_rare_spikes_stall_adam():
    """Why Fig. 6's σ = 0 does not train: without noise the probability term is a step of width ~1e-6 (the variance
    floor), so its gradient is 0 except on near-ties, where it is huge; those rare spikes fill Adam's second-moment
    estimate and throttle every later step. The MSE term alone trains; clipping the spikes lets the full loss train."""
    from noiselab import data as data_module
    from noiselab.loss import stochastic_loss_terms
    from noiselab.models import build
    from noiselab.propagate import propagate

    digits = data_module.load()
    x, y = digits.tensors("train", limit=70 * 128)
    x_test, y_test = digits.tensors("test", limit=1000)
    x, x_test = data_module.to_float(x), data_module.to_float(x_test)

    def train_at_sigma_zero(prob_weight: float, clip: float) -> tuple[float, int]:
        torch.manual_seed(0)
        model = build("lenet5")
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        spikes = 0
        for step in range(70):
            batch = slice(step * 128, (step + 1) * 128)
            out = propagate(model, x[batch], 0.0, relu="paper", pool="paper")
            mse, prob = stochastic_loss_terms(out.mean, out.var, y[batch])
            optimizer.zero_grad()
            (mse.mean() - prob_weight * prob.mean()).backward()
            spikes += float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)) > 10
            optimizer.step()
        with torch.no_grad():
            return float((model(x_test).argmax(1) == y_test).float().mean()), spikes

    full, full_spikes = train_at_sigma_zero(1.0, math.inf)
    # clipped at 0.1: at 1.0 the outcome hangs on the CPU's rounding (74.2% on 2026-12-02's machine; 29.6-41.5% on
    # 12-06's, 41.5 / 41.7 / 74.9% for seeds 0-2 there), at 0.1 it trains on both (90.1 / 85.0 / 89.2% on 12-06's)
    clipped, _ = train_at_sigma_zero(1.0, 0.1)
    assert full < 0.3 and full_spikes >= 1  # measured: 8.7-10.6%, 2-5 of the 70 steps with a gradient norm > 10
    assert clipped > 0.6                    # 90.1% (the MSE term alone, unclipped: 91.5%, no step above 10)


def _correlated_outputs(batch=4, classes=5, seed=0):
    """Means, variances and a covariance with strong correlations between the outputs (float64)."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, classes, generator=generator, dtype=torch.float64) * 0.5
    shared = torch.randn(batch, classes, 2, generator=generator, dtype=torch.float64)
    cov = shared @ shared.transpose(1, 2) + 0.05 * torch.eye(classes, dtype=torch.float64)  # rank 2 + a little
    return mean, cov.diagonal(dim1=1, dim2=2).clone(), cov


def test_win_probabilities_with_the_covariance_match_sampling_and_without_it_do_not():
    from noiselab.loss import win_probabilities

    mean, var, cov = _correlated_outputs()
    draws = torch.distributions.MultivariateNormal(mean, cov).sample(torch.Size([200_000]))  # (S, B, n)
    sampled = (draws.unsqueeze(3) > draws.unsqueeze(2)).double().mean(0)  # (B, n, n): Y_k > Y_i
    sampled = sampled * (1 - torch.eye(mean.shape[1], dtype=torch.float64))
    assert (win_probabilities(mean, var, cov) - sampled).abs().max() < 0.005  # 200,000 draws: se <= 0.0012
    assert (win_probabilities(mean, var) - sampled).abs().max() > 0.05  # the paper's Cov = 0 is far off here


def test_the_loss_with_a_diagonal_covariance_is_the_papers_and_a_full_one_enters_its_probability_term():
    mean, var, cov = _correlated_outputs()
    target = torch.tensor([0, 1, 2, 3])
    paper = noiselab.stochastic_loss(mean, var, target, reduction="none")
    assert torch.equal(noiselab.stochastic_loss(mean, var, target, reduction="none", cov=torch.diag_embed(var)), paper)
    mse, prob = noiselab.stochastic_loss_terms(mean, var, target, cov)
    from noiselab.loss import win_probabilities

    wins = win_probabilities(mean, var, cov)
    assert torch.allclose(prob, wins[torch.arange(4), target].sum(1) / 4)
    assert torch.allclose(noiselab.stochastic_loss(mean, var, target, reduction="none", cov=cov), mse - prob)
    assert not torch.allclose(mse - prob, paper)
    gradient = torch.autograd.grad(noiselab.stochastic_loss(mean, var, target, cov=cov.requires_grad_()), cov)[0]
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


@pytest.mark.parametrize("cov, message", [
    (torch.zeros(4, 5), r"cov must be the outputs' covariance, shape \(batch, classes, classes\)"),
    (torch.eye(5).expand(4, 5, 5) * 3.0, "cov's diagonal must be var"),
    ("nope", r"cov must be the outputs' covariance.*got str"),
    (torch.eye(5).expand(4, 5, 5).clone().index_put_((torch.tensor(0), torch.tensor(1), torch.tensor(2)),
                                                       torch.tensor(float("nan"))), "cov must be finite"),
    (torch.eye(5).expand(4, 5, 5).clone().index_put_((torch.tensor(0), torch.tensor(1), torch.tensor(2)),
                                                       torch.tensor(0.5)), "cov must be symmetric"),
    ((torch.eye(5) + 2.0 * (torch.eye(5).roll(1, 0) + torch.eye(5).roll(-1, 0))).expand(4, 5, 5),
     "cov must be positive semi-definite"),
    (torch.eye(5, dtype=torch.bool).expand(4, 5, 5), r"cov must have the outputs' dtype \(torch.float32\)"),
    (torch.eye(5, dtype=torch.float64).expand(4, 5, 5), r"cov must have the outputs' dtype"),
])
def test_a_covariance_that_does_not_fit_the_outputs_is_named(cov, message):
    from noiselab.loss import win_probabilities

    mean, var = torch.zeros(4, 5), torch.ones(4, 5)
    with pytest.raises(ValueError, match=message):
        win_probabilities(mean, var, cov)
    with pytest.raises(ValueError, match=message):
        noiselab.stochastic_loss(mean, var, torch.zeros(4, dtype=torch.long), cov=cov)

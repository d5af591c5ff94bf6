"""noiselab.surface.loss_surface: the loss over a plane around one input, checked point by point against direct
evaluation of the same perturbed inputs."""

import pytest
import torch
import torch.nn.functional as F

import noiselab
import noiselab.surface as surface_module
from noiselab.models import DemoCNN
from noiselab.surface import loss_surface


@pytest.fixture(scope="module")
def model_and_image():
    torch.manual_seed(0)
    model = DemoCNN().eval()
    x = torch.rand(1, 28, 28) * 0.8 + 0.1  # away from the clip bounds, so the directions are not cut
    return model, x, 3


def _direction_vectors(model, x, y, seed):
    x1 = x.unsqueeze(0).clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x1), torch.tensor([y])), x1)
    generator = torch.Generator().manual_seed(seed)
    random = torch.randint(0, 2, x1.shape, generator=generator).float() * 2 - 1
    return gradient.sign(), random


def test_cross_entropy_surface_point_by_point(model_and_image):
    model, x, y = model_and_image
    surface = loss_surface(model, x, y, eps=0.2, steps=5, seed=4)
    assert surface.loss.shape == (5, 5) and surface.offsets.tolist() == pytest.approx([-0.2, -0.1, 0.0, 0.1, 0.2])
    gradient, random = _direction_vectors(model, x, y, seed=4)
    with torch.no_grad():
        for i, j in [(2, 2), (0, 4), (4, 1), (3, 3)]:
            a, b = surface.offsets[i].item(), surface.offsets[j].item()
            point = (x.unsqueeze(0) + a * gradient + b * random).clamp(0, 1)
            logits = model(point)
            expected = F.cross_entropy(logits, torch.tensor([y])).item()
            assert surface.loss[i, j].item() == pytest.approx(expected, rel=1e-5)
            assert surface.predicted[i, j].item() == logits.argmax(1).item()
    assert surface.loss_at_input == pytest.approx(surface.loss[2, 2].item())
    assert 0.0 <= surface.wrong_fraction <= 1.0 and not surface.gradient_zero


def test_stochastic_surface_is_the_closed_form_loss(model_and_image):
    model, x, y = model_and_image
    surface = loss_surface(model, x, y, eps=0.1, steps=3, sigma=0.5, relu="moment", pool="clark")
    with torch.no_grad():
        output = noiselab.propagate(model, x.unsqueeze(0), 0.5, relu="moment", pool="clark")
        expected = noiselab.stochastic_loss(output.mean, output.var, torch.tensor([y]))
    assert surface.loss[1, 1].item() == pytest.approx(expected.item(), rel=1e-5)
    assert surface.sigma == 0.5 and (surface.relu, surface.pool) == ("moment", "clark")
    # a different sigma on the same plane gives a different surface
    other = loss_surface(model, x, y, eps=0.1, steps=3, sigma=1.5, relu="moment", pool="clark")
    assert not torch.allclose(surface.loss, other.loss)


def test_the_gradient_axis_climbs_the_loss(model_and_image):
    model, x, y = model_and_image
    surface = loss_surface(model, x, y, eps=0.01, steps=3)
    # first order: loss(+delta g) - loss(-delta g) ~ 2 delta |grad|_1 > 0; along b the slope has no sign to expect
    assert surface.loss[2, 1] > surface.loss[1, 1] > surface.loss[0, 1]


def test_chunks_give_the_same_surface(model_and_image, monkeypatch):
    model, x, y = model_and_image
    whole = loss_surface(model, x, y, eps=0.3, steps=7)
    monkeypatch.setattr(surface_module, "CHUNK", 10)  # 49 points in 5 forwards
    torch.testing.assert_close(loss_surface(model, x, y, eps=0.3, steps=7).loss, whole.loss, rtol=1e-5, atol=1e-6)


def test_to_table(model_and_image):
    model, x, y = model_and_image
    table = loss_surface(model, x, y, eps=0.3, steps=4).to_table()
    assert set(table) == {"a", "b", "loss", "wrong"} and all(len(column) == 16 for column in table.values())
    assert table["a"][0] == pytest.approx(-0.3) and table["b"][1] == pytest.approx(-0.1)


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps"), ({"eps": 1.5}, "eps"), ({"eps": float("nan")}, "eps"),
    ({"steps": 1}, "steps"), ({"steps": 4.0}, "steps"), ({"steps": 1000}, "steps"),
    ({"sigma": -0.1}, "sigma"), ({"relu": "exact"}, "relu"),
])
def test_bad_arguments_are_named(model_and_image, kwargs, match):
    model, x, y = model_and_image
    arguments = {"eps": 0.3, **kwargs}
    with pytest.raises(ValueError, match=match):
        loss_surface(model, x, y, **arguments)


def test_bad_inputs_are_named(model_and_image):
    model, x, y = model_and_image
    with pytest.raises(ValueError, match="one image"):
        loss_surface(model, torch.rand(2, 1, 28, 28), y, eps=0.3)
    with pytest.raises(ValueError, match="shape"):
        loss_surface(model, torch.rand(1, 32, 32), y, eps=0.3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        loss_surface(model, x * 3, y, eps=0.3)
    with pytest.raises(ValueError, match="class index"):
        loss_surface(model, x, 10, eps=0.3)
    with pytest.raises(ValueError, match="class index"):
        loss_surface(model, x, torch.tensor([1, 2]), eps=0.3)
    assert loss_surface(model, x, torch.tensor(3), eps=0.3, steps=2).label == 3

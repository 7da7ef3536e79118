"""Integrated Gradients, SmoothGrad and Score-CAM: exactness on models worked out by hand, the parameters' checks,
batching (chunks, the out-of-memory split, shared forwards, batch independence), bounds and model safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from handlers.engine import Explainer, InvalidArgumentError, MethodParams, ResourceExhaustedError, get_method
from handlers.engine._passes import smoothgrad_noise
from handlers.engine.methods import Cost, available_methods, with_dependencies
from handlers.engine.methods._paths import baseline_images, blurred, rule_points
from tests.engine.conftest import Snapshot
from tests.engine.test_explainer import _OomAbove

DRIVEN = (
    "integrated_gradients",
    "smoothgrad_saliency",
    "smoothgrad_guided_backprop",
    "smoothgrad_integrated_gradients",
)


class Linear(nn.Module):
    """``f(x) = W . flatten(x)``: Integrated Gradients is exactly ``(x - x') * W[t]`` for any rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x).flatten(1))


class Smooth(nn.Module):
    """A smooth nonlinear net (softplus, no ReLU ties), for convergence and chunking checks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.Softplus()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)) ** 2)


def Counting(inner: nn.Module, limit: int = 1 << 30) -> _OomAbove:
    """Records the batch size of every forward; simulates running out of memory above ``limit`` inputs."""
    return _OomAbove(inner, limit)


@pytest.fixture
def smooth() -> nn.Module:
    torch.manual_seed(2)
    return Smooth().eval()


def _x(batch: int = 3, size: int = 6, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 10**9}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 1, "rule": "riemann_left"}, "steps"),
        ({"rule": "simpson"}, "rule"),
        ({"baseline": "white"}, "baseline"),
        ({"samples": 0}, "samples"),
        ({"samples": 10**7}, "samples"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("nan")}, "noise"),
        ({"noise": True}, "noise"),
        ({"seed": -1}, "seed"),
        ({"pass_batch": 0}, "pass_batch"),
        ({"max_channels": 0}, "max_channels"),
    ],
)
def test_bad_parameters_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        MethodParams(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_options_must_be_method_params(smooth: nn.Module) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        Explainer(smooth).explain(_x(), methods=["integrated_gradients"], options={"steps": 4})  # type: ignore[arg-type]
    assert err.value.field == "options"


def test_black_must_fit_the_channels(smooth: nn.Module) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        Explainer(smooth, black=(0.0, 1.0))
    assert err.value.field == "black"


# ------------------------------------------------------------------------------------------------ the path
def test_gauss_legendre_points_are_numpys() -> None:
    for n in (1, 2, 7, 50):
        alphas, weights = rule_points("gausslegendre", n)
        nodes, w = np.polynomial.legendre.leggauss(n)
        np.testing.assert_allclose(alphas.numpy(), 0.5 * (1 + nodes), atol=1e-12)
        np.testing.assert_allclose(weights.numpy(), 0.5 * w, atol=1e-12)


@pytest.mark.parametrize(
    "rule", ["gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"]
)
def test_rules_integrate(rule: str) -> None:
    alphas, weights = rule_points(rule, 64)  # type: ignore[arg-type]
    # Captum's trapezoid keeps step 1/n on n points of linspace(0, 1, n), halving the ends: the weights sum to 1 - 1/n
    assert float(weights.sum()) == pytest.approx(1 - 1 / 64 if rule == "riemann_trapezoid" else 1.0)
    assert float((weights * alphas**2).sum()) == pytest.approx(1 / 3, abs=2e-2)


def test_baselines() -> None:
    x = _x(2, 9)
    black = torch.tensor([-1.0, 0.5, 2.0]).reshape(1, 3, 1, 1)
    assert torch.equal(baseline_images(x, "black", black, 0), black.expand_as(x))
    noise = baseline_images(x, "noise", black, 3)
    for image, base in zip(x, noise, strict=True):
        assert float(base.min()) >= float(image.min()) and float(base.max()) <= float(image.max())
    assert torch.equal(noise, baseline_images(x, "noise", black, 3))
    assert not torch.equal(noise, baseline_images(x, "noise", black, 4))
    blur = blurred(x)
    assert blur.shape == x.shape and float(blur.std()) < float(x.std())
    const = torch.full((1, 3, 5, 5), 2.0)
    torch.testing.assert_close(blurred(const), const)
    for size in ((1, 1), (1, 7), (2, 3)):  # reflection needs pad < size: tiny images still work
        tiny = torch.randn(1, 3, *size)
        assert blurred(tiny).shape == tiny.shape


# ------------------------------------------------------------------------------------------------ exactness
# not riemann_trapezoid: Captum's trapezoid weights sum to 1 - 1/n, so it is not exact even on a linear model
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_right", "riemann_middle"])
@pytest.mark.parametrize("baseline", ["black", "blurred", "noise"])
def test_integrated_gradients_exact_on_a_linear_model(rule: str, baseline: str) -> None:
    torch.manual_seed(0)
    model = Linear().eval()
    x = _x(2)
    black = (0.3, -0.2, 0.1)
    params = MethodParams(steps=3, rule=rule, baseline=baseline, seed=9)  # type: ignore[arg-type]
    results = Explainer(model, black=black).explain(
        x, methods=["integrated_gradients"], targets=[[1, 3], 4], options=params
    )
    base = baseline_images(x, baseline, torch.tensor(black).reshape(1, 3, 1, 1), 9)  # type: ignore[arg-type]
    for i, res in enumerate(results):
        for target in res.targets:
            xi = x[i : i + 1].requires_grad_(True)
            [w] = torch.autograd.grad(model(xi)[0, target], xi)
            torch.testing.assert_close(
                res.map("integrated_gradients", target=target), ((x[i] - base[i]) * w[0]), atol=1e-5, rtol=1e-4
            )
            assert res.completeness_errors[("integrated_gradients", "", target)] < 1e-4


def test_completeness_error_falls_with_steps(smooth: nn.Module) -> None:
    x = _x(2)
    ex = Explainer(smooth)

    def worst(steps: int, rule: str) -> float:
        [*res] = ex.explain(x, methods=["integrated_gradients"], options=MethodParams(steps=steps, rule=rule))  # type: ignore[arg-type]
        return max(v for r in res for v in r.completeness_errors.values())

    assert worst(2, "riemann_right") > 10 * worst(256, "riemann_trapezoid")
    assert worst(16, "gausslegendre") < 1e-4


def test_smoothgrad_is_the_mean_over_the_noisy_copies(smooth: nn.Module) -> None:
    x = _x(2)
    params = MethodParams(samples=5, noise=0.3, seed=4)
    got = Explainer(smooth).explain(x, methods=["smoothgrad_saliency"], targets=[1, 2], options=params)
    for i, res in enumerate(got):
        noisy = (x[i] + smoothgrad_noise(x[i], 5, 0.3, 4)).requires_grad_(True)
        [g] = torch.autograd.grad(smooth(noisy)[:, res.targets[0]].sum(), noisy)
        torch.testing.assert_close(res.map("smoothgrad_saliency"), g.mean(0), atol=1e-6, rtol=1e-5)


def test_noise_depends_only_on_seed_and_image() -> None:
    image = _x(1)[0]
    a = smoothgrad_noise(image, 4, 0.1, 7)
    assert torch.equal(a, smoothgrad_noise(image, 4, 0.1, 7))
    assert not torch.equal(a, smoothgrad_noise(image, 4, 0.1, 8))
    spread = float(image.max() - image.min())
    assert float(a.std()) == pytest.approx(0.1 * spread, rel=0.15)
    assert torch.equal(smoothgrad_noise(image, 4, 0.0, 7), torch.zeros_like(a))


# ------------------------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("method", [*DRIVEN, "scorecam"])
def test_chunks_and_batches_do_not_change_the_maps(smooth: nn.Module, method: str) -> None:
    x = _x(3)
    layers = ["act"] if method == "scorecam" else None
    params = {"steps": 5, "samples": 3, "seed": 2}
    whole = Explainer(smooth).explain(x, methods=[method], layers=layers, top_k=2, options=MethodParams(**params))  # type: ignore[arg-type]
    chunked = Explainer(smooth).explain(
        x, methods=[method], layers=layers, top_k=2, options=MethodParams(pass_batch=4, **params)
    )  # type: ignore[arg-type]
    alone = Explainer(smooth).explain(x[1:2], methods=[method], layers=layers, top_k=2, options=MethodParams(**params))  # type: ignore[arg-type]
    for a, b in zip(whole, chunked, strict=True):
        for key, value in a.maps.items():
            torch.testing.assert_close(b.maps[key], value, atol=1e-6, rtol=1e-5)
    for key, value in alone[0].maps.items():
        torch.testing.assert_close(whole[1].maps[key], value, atol=1e-6, rtol=1e-5)


def test_passes_are_chunked_and_split_on_out_of_memory(smooth: nn.Module) -> None:
    x = _x(2)
    params = MethodParams(steps=6, pass_batch=5)
    reference = Explainer(smooth).explain(x, methods=["integrated_gradients"], options=params)
    model = Counting(smooth, limit=3)
    got = Explainer(model).explain(x, methods=["integrated_gradients"], options=params)
    # the prediction (2), then 12 points in chunks of 5, 5, 2 (each 5 split 2 + 3), then the baselines (2)
    assert model.batches == [2, 5, 2, 3, 5, 2, 3, 2, 2]
    for g, r in zip(got, reference, strict=True):
        for key, value in r.maps.items():
            torch.testing.assert_close(g.maps[key], value, atol=1e-6, rtol=1e-5)
    with pytest.raises(ResourceExhaustedError):
        Explainer(Counting(smooth, limit=0)).explain(x[:1] * 0 + 1, methods=[], options=params)


def test_one_point_that_does_not_fit_is_resource_exhausted(smooth: nn.Module) -> None:
    class OomOnGrad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = smooth

        def forward(self, x: Tensor) -> Tensor:
            if torch.is_grad_enabled() and x.requires_grad:
                raise torch.OutOfMemoryError("simulated")
            return self.inner(x)  # type: ignore[no-any-return]

    with pytest.raises(ResourceExhaustedError):
        Explainer(OomOnGrad()).explain(_x(1), methods=["integrated_gradients"], options=MethodParams(steps=2))


def test_smoothgrad_rules_share_one_forward(smooth: nn.Module) -> None:
    x = _x(2)
    params = MethodParams(samples=4, pass_batch=64)
    model = Counting(smooth)
    both = Explainer(model).explain(x, methods=["smoothgrad_saliency", "smoothgrad_guided_backprop"], options=params)
    assert model.batches == [2, 8]  # the prediction, then all noisy copies once for both rules
    for method in ("smoothgrad_saliency", "smoothgrad_guided_backprop"):
        alone = Explainer(smooth).explain(x, methods=[method], options=params)
        for a, b in zip(alone, both, strict=True):
            torch.testing.assert_close(b.map(method), a.map(method))


def test_declared_costs_count_the_forwards(smooth: nn.Module) -> None:
    x = _x(2)
    params = MethodParams(steps=7, samples=3, pass_batch=1000)
    for method in (*DRIVEN, "scorecam"):
        model = Counting(smooth)
        layers = ["inner.act"] if method == "scorecam" else None
        Explainer(model).explain(x, methods=[method], layers=layers, options=params)
        cost = get_method(method).cost
        assert sum(model.batches) - 2 == 2 * (cost.fixed_forwards + cost.forwards * cost.units(params.units(6)))


def test_declared_backwards_follow_the_needs() -> None:
    gradients = {"layer_grad", "input_grad", "guided_grad", "deconv_grad", "attention_grad"}
    for name in available_methods():
        method = get_method(name)
        needs: set[str] = set().union(*(m.needs for m in with_dependencies([method])))
        if needs & gradients:
            assert method.cost.backwards >= 1, name
        elif not needs & {"passes", "smooth_input_grad", "smooth_guided_grad"}:
            assert method.cost == Cost(), name  # activations or head weights only: the prediction's forward


def test_callable_targets(smooth: nn.Module) -> None:
    x = _x(2)
    params = MethodParams(steps=4, samples=2)
    for method in (*DRIVEN, "scorecam"):
        layers = ["act"] if method == "scorecam" else None
        by_fn = Explainer(smooth).explain(
            x, methods=[method], layers=layers, targets=lambda out: out[:, 2], options=params
        )
        by_id = Explainer(smooth).explain(x, methods=[method], layers=layers, targets=2, options=params)
        for f, c in zip(by_fn, by_id, strict=True):
            torch.testing.assert_close(f.map(method), c.map(method, target=2), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ bounds, safety
def test_scorecam_channel_bound_is_checked_before_any_masked_forward(smooth: nn.Module) -> None:
    model = Counting(smooth)
    with pytest.raises(ResourceExhaustedError) as err:
        Explainer(model).explain(
            _x(2), methods=["scorecam"], layers=["inner.act"], options=MethodParams(max_channels=5)
        )
    assert err.value.field == "layers"
    assert model.batches == [2]  # only the prediction ran


@pytest.mark.parametrize("method", [*DRIVEN, "scorecam"])
def test_model_is_left_as_found(resnet18: nn.Module, method: str) -> None:
    resnet18.train()
    snap = Snapshot.of(resnet18)
    params = MethodParams(steps=2, samples=2, max_channels=512, pass_batch=256)
    Explainer(resnet18).explain(_x(1, 32), methods=[method], layers=["layer4"], top_k=2, options=params)
    snap.assert_same(resnet18)
    with pytest.raises(ResourceExhaustedError):
        Explainer(resnet18).explain(
            _x(1, 32), methods=["scorecam"], layers=["layer4"], options=MethodParams(max_channels=8)
        )
    snap.assert_same(resnet18)
    resnet18.eval()


def test_inference_mode_caller(smooth: nn.Module) -> None:
    with torch.inference_mode():
        [res] = Explainer(smooth).explain(_x(1), methods=list(DRIVEN), options=MethodParams(steps=3, samples=2))
    assert all(bool(torch.isfinite(m).all()) for m in res.maps.values())

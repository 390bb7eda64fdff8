"""Building blocks of the SE-Res U-Net: conv-BN-ReLU, squeeze-and-excitation, SE-Res block,
Coordinate Attention; and the input check every model shares.

All blocks take and return float tensors B x C x H x W (channel-first) and keep H and W.
"""

from __future__ import annotations

import torch
from torch import nn

#: Every model of :mod:`nucstudy.models` takes H and W that are multiples of this.
SIZE_MULTIPLE = 32


def check_input(images: torch.Tensor) -> None:
    """Raise ValueError unless ``images`` is B x 3 x H x W float with H, W multiples of 32."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape B x 3 x H x W, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
    height, width = images.shape[2:]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"image height and width must be multiples of {SIZE_MULTIPLE}, "
            f"got shape {tuple(images.shape)}"
        )


class ConvBNReLU(nn.Sequential):
    """A same-padded convolution (no bias), batch norm and ReLU: B x in x H x W -> B x out x H x W.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel side; padding ``kernel_size // 2`` keeps H and W.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SqueezeExcitation(nn.Module):
    """Channel gate of Hu et al. (2018): ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    The per-channel means (the "squeeze", B x C) go through a fully connected reduction to
    ``max(1, C // reduction)`` units, a ReLU, a fully connected expansion back to C and a
    sigmoid (the "excitation"); each channel of ``x`` is multiplied by its gate in (0, 1).

    Args:
        channels: C.
        reduction: the reduction ratio r (16 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C x H x W, each channel scaled by its gate."""
        squeezed = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(squeezed))))
        return x * gate[:, :, None, None]


class SEResBlock(nn.Module):
    """Residual block gated by squeeze-and-excitation (the SE-ResNet module of Hu et al.).

    ``relu(SE(bn(conv3x3(relu(bn(conv3x3(x)))))) + shortcut(x))``: two 3 x 3 conv-BN layers,
    the SE gate on the residual branch before the addition, and a shortcut that is the identity
    when the channel counts agree, otherwise a 1 x 1 conv and batch norm.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        use_se: False leaves the SE gate out (a plain residual block), for the ablation.
        reduction: SE reduction ratio.
    """

    def __init__(
        self, in_channels: int, out_channels: int, use_se: bool = True, reduction: int = 16
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels)
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.se = SqueezeExcitation(out_channels, reduction) if use_se else nn.Identity()
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x in x H x W -> B x out x H x W."""
        residual = self.se(self.conv2(self.conv1(x)))
        return torch.relu(residual + self.shortcut(x))


class CoordinateAttention(nn.Module):
    """Coordinate Attention of Hou et al. (CVPR 2021).

    Direction-aware pooling: ``z_h`` (B x C x H x 1) averages each row over the width and
    ``z_w`` (B x C x 1 x W) averages each column over the height. The two are concatenated
    along the spatial axis (B x C x (H + W) x 1) and go through a shared 1 x 1 conv reducing C
    to ``max(min_hidden, C // reduction)`` channels, batch norm and h-swish; the result is
    split back into its H and W parts, and two 1 x 1 convs with sigmoids turn them into the
    gates ``a_h`` (B x C x H x 1) and ``a_w`` (B x C x 1 x W). The output is
    ``x * a_h * a_w``: pixel (i, j) of channel c is scaled by ``a_h[c, i] * a_w[c, j]``.

    Args:
        channels: C.
        reduction: reduction ratio r (32 in the paper).
        min_hidden: smallest width of the shared layer (8 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 8) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.Hardswish()
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C x H x W, reweighted along rows and columns."""
        height, width = x.shape[2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # B x C x H x 1
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # B x C x W x 1
        shared = self.act(self.norm(self.reduce(torch.cat([pooled_h, pooled_w], dim=2))))
        part_h, part_w = torch.split(shared, [height, width], dim=2)
        gate_h = torch.sigmoid(self.gate_h(part_h))  # B x C x H x 1
        gate_w = torch.sigmoid(self.gate_w(part_w.transpose(2, 3)))  # B x C x 1 x W
        return x * gate_h * gate_w

"""The paper's network: a U-Net with SE-Res encoder blocks and Coordinate Attention in the
decoder, one shared encoder-decoder and three heads (NP, HV, TP)."""

from __future__ import annotations

import torch
from torch import nn

from nucstudy.models.blocks import ConvBNReLU, CoordinateAttention, SEResBlock, check_input


class DecoderBlock(nn.Module):
    """One U-Net decoder level: upsample, concatenate the skip, two conv-BN-ReLU, attention.

    B x in x h x w (deeper level) and B x out x 2h x 2w (skip) -> B x out x 2h x 2w. The
    upsampling is a 2 x 2 transposed conv with stride 2 from ``in_channels`` to
    ``out_channels``; after the concatenation (2 * out channels) two 3 x 3 conv-BN-ReLU bring
    it back to ``out_channels``, then Coordinate Attention (or nothing, ``use_ca=False``).
    """

    def __init__(self, in_channels: int, out_channels: int, use_ca: bool = True) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.fuse = nn.Sequential(
            ConvBNReLU(2 * out_channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )
        self.attention = CoordinateAttention(out_channels) if use_ca else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Fuse the deeper features ``x`` with the encoder features ``skip`` of this level."""
        x = torch.cat([self.up(x), skip], dim=1)
        return self.attention(self.fuse(x))


def _head(channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3-BN-ReLU then a 1 x 1 output conv (with bias): B x C x H x W -> B x out x H x W."""
    return nn.Sequential(ConvBNReLU(channels, channels), nn.Conv2d(channels, out_channels, 1))


class SEResUNet(nn.Module):
    """U-Net with SE-Res encoder blocks, Coordinate Attention decoder levels and three heads.

    Channel plan (``c_k = width * 2**k``, k = 0..depth):

    - encoder level 0: SE-Res block 3 -> c_0 at full resolution;
      level k = 1..depth: 2 x 2 max-pool, then SE-Res block c_(k-1) -> c_k (resolution / 2**k);
    - decoder level k = depth-1..0: 2 x 2 transposed conv c_(k+1) -> c_k, concatenation with
      encoder level k (2 c_k), two 3 x 3 conv-BN-ReLU to c_k, Coordinate Attention on c_k;
    - heads on the level-0 decoder output (c_0 channels, full resolution): conv3x3-BN-ReLU
      c_0 -> c_0, then a 1 x 1 conv to 2 (NP), 2 (HV) or ``n_types`` (TP) channels.

    The defaults (width 32, depth 5: channels 32, 64, 128, 256, 512, 1024, bottleneck 8 x 8
    for a 256 x 256 patch) are sized for 256 x 256 patches at batch 32 on a 32 GB GPU, as in
    the paper: the layer outputs of one patch take about 0.31 GB in float32, about 10 GB at
    batch 32. With ``n_types=7`` they have 32,046,265 parameters (31,869,403 without SE,
    32,008,041 without CA); ``benchmarks/models.py`` measures multiply-adds and speed.

    Args:
        n_types: output channels of the TP head (classes including background).
        width: c_0, the channels of the full-resolution level.
        depth: number of 2 x downsamplings, 1..5 (inputs must be multiples of 32 anyway).
        use_se: False builds the encoder from plain residual blocks (the "no SE" ablation).
        use_ca: False leaves Coordinate Attention out of the decoder (the "no CA" ablation).
    """

    def __init__(
        self,
        n_types: int,
        width: int = 32,
        depth: int = 5,
        use_se: bool = True,
        use_ca: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"depth must be 1..5 (downsamplings), got {depth}")
        if width < 1 or n_types < 2:
            raise ValueError(f"need width >= 1 and n_types >= 2, got {width} and {n_types}")
        channels = [width * 2**k for k in range(depth + 1)]
        self.encoder = nn.ModuleList([SEResBlock(3, channels[0], use_se)])
        for k in range(1, depth + 1):
            self.encoder.append(
                nn.Sequential(nn.MaxPool2d(2), SEResBlock(channels[k - 1], channels[k], use_se))
            )
        self.decoder = nn.ModuleList(
            DecoderBlock(channels[k + 1], channels[k], use_ca) for k in reversed(range(depth))
        )
        self.heads = nn.ModuleDict(
            {
                "np": _head(channels[0], 2),
                "hv": _head(channels[0], 2),
                "tp": _head(channels[0], n_types),
            }
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict the three maps.

        Args:
            images: B x 3 x H x W float in [0, 1]; H and W multiples of 32.

        Returns:
            ``"np"`` B x 2 x H x W logits, ``"hv"`` B x 2 x H x W (unbounded regression of the
            horizontal and vertical maps), ``"tp"`` B x n_types x H x W logits.
        """
        check_input(images)
        features = []
        x = images
        for block in self.encoder:
            x = block(x)
            features.append(x)
        x = features.pop()
        for block in self.decoder:
            x = block(x, features.pop())
        return {name: head(x) for name, head in self.heads.items()}

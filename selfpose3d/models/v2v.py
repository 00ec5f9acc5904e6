"""V2V: the 3D convolutional encoder-decoder of VoxelPose's root and pose nets.

Architecture (width ``w``; VoxelPose uses w = 32):
front  = Basic3D(in -> w/2, 7^3) -> Res3D(w/2 -> w)
encoder-decoder, two levels, max-pool 2 down / transposed conv 2 up, residual skips:
    skip1 = Res3D(w -> w) on the full-resolution features
    pool -> Res3D(w -> 2w) -> skip2 = Res3D(2w -> 2w)
    pool -> Res3D(2w -> 4w) -> Res3D(4w -> 4w) (mid) -> Res3D(4w -> 4w)
    up(4w -> 2w) + skip2 -> Res3D(2w -> 2w) -> up(2w -> w) + skip1
output = Conv3d(w -> out, 1^3)

Cubes whose sides are not multiples of 4 (e.g. 10 voxels) are zero-padded at the far end of
each axis and cropped back, so any cube size works. Every cube of a batch (all proposals of
all samples) goes through one call.

Shape legend: N cubes, C channels, (X, Y, Z) voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOWNSAMPLE = 4  # two 2x max-pools


class Basic3DBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv3d(
                in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False
            ),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class Res3DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.res_branch = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
        )
        self.skip_con: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.skip_con = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.res_branch(x) + self.skip_con(x), inplace=True)


class Pool3DBlock(nn.Module):
    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, kernel_size=self.pool_size, stride=self.pool_size)


class Upsample3DBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class EncoderDecoder(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.skip_res1 = Res3DBlock(w, w)
        self.encoder_pool1 = Pool3DBlock(2)
        self.encoder_res1 = Res3DBlock(w, 2 * w)
        self.skip_res2 = Res3DBlock(2 * w, 2 * w)
        self.encoder_pool2 = Pool3DBlock(2)
        self.encoder_res2 = Res3DBlock(2 * w, 4 * w)
        self.mid_res = Res3DBlock(4 * w, 4 * w)
        self.decoder_res2 = Res3DBlock(4 * w, 4 * w)
        self.decoder_upsample2 = Upsample3DBlock(4 * w, 2 * w)
        self.decoder_res1 = Res3DBlock(2 * w, 2 * w)
        self.decoder_upsample1 = Upsample3DBlock(2 * w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.skip_res1(x)
        x = self.encoder_res1(self.encoder_pool1(x))
        skip2 = self.skip_res2(x)
        x = self.encoder_res2(self.encoder_pool2(x))
        x = self.decoder_res2(self.mid_res(x))
        x = self.decoder_upsample2(x) + skip2
        x = self.decoder_upsample1(self.decoder_res1(x)) + skip1
        return x


class V2VNet(nn.Module):
    """(N, C_in, X, Y, Z) -> (N, C_out, X, Y, Z); linear output (no activation).

    ``channels_last`` stores activations as channels_last_3d (NDHWC); whether that is faster
    depends on the CPU/GPU and the sizes (see ``benchmarks/v2v_speed.py``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, width: int = 32, channels_last: bool = False
    ) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"V2V width must be an even number >= 2, got {width}")
        self.channels_last = channels_last
        self.front_layers = nn.Sequential(
            Basic3DBlock(in_channels, width // 2, 7), Res3DBlock(width // 2, width)
        )
        self.encoder_decoder = EncoderDecoder(width)
        self.output_layer = nn.Conv3d(width, out_channels, kernel_size=1)
        self._initialize_weights()
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def _initialize_weights(self) -> None:
        # VoxelPose's initialisation: small weights, so the initial output cube is ~0.
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.normal_(m.weight, 0.0, 0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-3:]
        pad = [(-s) % DOWNSAMPLE for s in size]
        if any(pad):  # F.pad lists the last axis first
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.output_layer(self.encoder_decoder(self.front_layers(x)))
        if any(pad):
            x = x[..., : size[0], : size[1], : size[2]]
        return x.contiguous()

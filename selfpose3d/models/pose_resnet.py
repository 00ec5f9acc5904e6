"""PoseResNet: a ResNet trunk + 3 deconvolutions + a 1x1 conv to J heatmaps (DESIGN §2.1).

The trunk is torchvision's ResNet with its module names kept, so ImageNet weights saved from
torchvision (``resnet50-*.pth``) load unchanged. Weights are only ever read from a local file.

Shape legend: N images, J joints, (H, W) input px, (h, w) = (H / 4, W / 4) heatmap px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn

ResNetDepth = Literal[18, 34, 50]

# One explicit mapping from the config's depth to torchvision's constructor.
_CONSTRUCTORS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}
_TRUNK_CHANNELS = {18: 512, 34: 512, 50: 2048}

DECONV_FILTERS = 256
NUM_DECONV_LAYERS = 3


class PoseResNet(nn.Module):
    """(N, 3, H, W) normalised images -> (N, J, H/4, W/4) heatmaps (raw, not squashed).

    ``output_activation="sigmoid"`` squashes the maps into (0, 1): the attention network's
    maps weight the self-supervised heatmap loss pixel by pixel and a regulariser pulls them
    towards 1, so they must be bounded (as in SelfPose3d's attention net).
    """

    def __init__(
        self,
        depth: ResNetDepth,
        num_joints: int,
        output_activation: Literal["none", "sigmoid"] = "none",
    ) -> None:
        super().__init__()
        if depth not in _CONSTRUCTORS:
            raise ValueError(f"ResNet depth must be one of {sorted(_CONSTRUCTORS)}, got {depth}")
        self.depth = depth
        self.output_activation = output_activation
        self.backbone = _CONSTRUCTORS[depth](weights=None)
        del self.backbone.fc, self.backbone.avgpool  # the trunk ends at layer4
        layers: list[nn.Module] = []
        in_channels = _TRUNK_CHANNELS[depth]
        for _ in range(NUM_DECONV_LAYERS):
            layers += [
                nn.ConvTranspose2d(
                    in_channels, DECONV_FILTERS, kernel_size=4, stride=2, padding=1, bias=False
                ),
                nn.BatchNorm2d(DECONV_FILTERS),
                nn.ReLU(inplace=True),
            ]
            in_channels = DECONV_FILTERS
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(DECONV_FILTERS, num_joints, kernel_size=1)
        self._init_head()

    def _init_head(self) -> None:
        # Small random deconvolutions and a near-zero output layer, as in SimpleBaselines:
        # the initial heatmaps are ~0 (and the attention maps ~0.5).
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, J, h, w)
        out = self.final_layer(self.deconv_layers(self.trunk(images)))
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    def load_trunk_weights(self, path: str | Path) -> None:
        """Load ImageNet weights of the trunk from a local torchvision ResNet state dict.

        Accepts a plain state dict or one wrapped as ``{"state_dict": ...}`` (a ``module.``
        prefix is stripped); ``fc.*`` entries are ignored. Raises FileNotFoundError for a
        missing file and ValueError for a file that is not a matching ResNet state dict.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt file, pickled objects, not a torch file...
            raise ValueError(f"{path}: cannot be read as a torch state dict ({e})") from e
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            raise ValueError(f"{path}: expected a state dict of tensors, got {type(state)}")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "avgpool."))}
        own = self.backbone.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or mismatched:
            raise ValueError(
                f"{path}: not the weights of a torchvision ResNet-{self.depth} "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}, "
                f"shape mismatch {mismatched[:3]}{'...' if len(mismatched) > 3 else ''})"
            )
        self.backbone.load_state_dict(state)


def build_pose_resnet(
    depth: ResNetDepth,
    num_joints: int,
    pretrained_path: str = "",
    output_activation: Literal["none", "sigmoid"] = "none",
) -> PoseResNet:
    """A PoseResNet, its trunk initialised from ``pretrained_path`` when given (local file)."""
    net = PoseResNet(depth, num_joints, output_activation)
    if pretrained_path:
        net.load_trunk_weights(pretrained_path)
    return net

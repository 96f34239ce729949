"""VGG16 as a frozen feature extractor: preprocessing follows the weights, the forward pass stops
after the deepest layer asked for."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from brushwork.settings import VGG16_LAYERS
from brushwork.weights import Weights

# torchvision's vgg16 "D" configuration: channels per conv, "M" for a 2x2 max pool.
_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

# Per weights kind: (mean, std, scale) applied as (x - mean) / std * scale to RGB in [0, 1].
_PREPROCESS = {
    # Caffe VGG16 (torchvision IMAGENET1K_FEATURES): BGR mean subtracted in 0..255 units, no std.
    "caffe": ((0.48235, 0.45882, 0.40784), (1.0, 1.0, 1.0), 255.0),
    # torchvision IMAGENET1K_V1: the usual ImageNet mean/std on [0, 1].
    "torchvision_v1": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0),
}

# Channels of each named layer's activations.
CHANNELS = dict(zip(VGG16_LAYERS, (v for v in _CONFIG if v != "M"), strict=True))


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in _CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.ReLU(inplace=False)]
            in_channels = v
    return nn.Sequential(*layers)


# Index of the ReLU after each named conv in the Sequential above: we read post-ReLU activations,
# as Gatys et al. did (Caffe's in-place ReLU).
_RELU_INDEX = {
    name: i + 1
    for name, i in zip(
        VGG16_LAYERS,
        [i for i, m in enumerate(_features()) if isinstance(m, nn.Conv2d)],
        strict=True,
    )
}


class VGGFeatures(nn.Module):
    """Frozen VGG16 conv stack returning the activations of named layers."""

    def __init__(self, state_dict: dict[str, torch.Tensor], kind: str) -> None:
        super().__init__()
        if kind not in _PREPROCESS:
            raise ValueError(f"unknown weights kind {kind!r}")
        self.kind = kind
        self.features = _features()
        self.features.load_state_dict(state_dict)
        self.features.eval().requires_grad_(False)
        mean, std, scale = _PREPROCESS[kind]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("factor", (scale / torch.tensor(std)).view(1, 3, 1, 1))
        self.memory_format = torch.contiguous_format

    def compute_in(
        self, device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format
    ) -> VGGFeatures:
        """Move to `device` with the convolutions in `dtype` and `memory_format` (in place).

        A model held in bf16 does what autocast does over the same layout (the same roundings,
        the same kernels) without casting every weight again on every pass: 22 kernel launches
        fewer per forward, which is what a small image on a GPU waits for. Preprocessing stays
        fp32.
        """
        self.to(device)
        self.features.to(dtype=dtype, memory_format=memory_format)
        self.memory_format = memory_format
        return self

    @classmethod
    def from_weights(cls, weights: Weights) -> VGGFeatures:
        return cls(weights.state_dict, weights.kind)

    def forward(self, image: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
        """Activations of `layers` for an RGB batch in [0, 1] (N, 3, H, W)."""
        last = max(_RELU_INDEX[name] for name in layers)
        wanted = {_RELU_INDEX[name]: name for name in layers}
        conv_dtype = self.features[0].weight.dtype
        x = ((image - self.mean) * self.factor).to(conv_dtype, memory_format=self.memory_format)
        out = {}
        # Truncated: nothing deeper runs. (islice, not features[:n], which builds a new
        # Sequential on every call: 60 us, the cost of a few kernel launches.)
        for i, module in enumerate(itertools.islice(self.features, last + 1)):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A VGG16-shaped state dict with random weights, for tests that need no real ones."""
    torch.manual_seed(seed)
    net = _features()
    for m in net:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.uniform_(m.bias, 0.0, 0.1)
    return net.state_dict()

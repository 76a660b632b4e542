"""Networks that decode: a UNet and an FPN segmentation head, the architectures whose ops
(transposed convs, group norms, upsampling) torchvision's classifiers lack. Built from their
published structure with random weights (nothing downloaded), to predict and measure:

    neuralpower validate MODEL benchmarks/decoder_nets.py:unet benchmarks/decoder_nets.py:fpn

``unet``: Ronneberger et al.'s UNet (2015) at a quarter of its widths (16-256 channels), each
double 3x3 conv followed by GroupNorm(8) and SiLU as diffusion models' UNets have it, max-pool
down, 2x2 transposed convs up, skips concatenated. ``fpn``: a ResNet-18 backbone with a
feature pyramid (Lin et al., 2017: 1x1 laterals, nearest x2 upsampling added top-down, 3x3
smoothing) and a segmentation head (Kirillov et al.'s panoptic FPN: each level upsampled
bilinearly to a quarter of the input, summed, a 1x1 classifier, a bilinear x4 to the input).
"""
import torch
import torchvision
from torch import nn
from torch.nn import functional as F


def _double(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class UNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128, 256), classes: int = 2):
        super().__init__()
        self.down = nn.ModuleList(_double(a, b) for a, b in zip((3, *widths[:-1]), widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2)
                                for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(_double(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            x = merge(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


class FPNSegmentation(nn.Module):
    def __init__(self, classes: int = 21, width: int = 128):
        super().__init__()
        r = torchvision.models.resnet18()
        self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.stages = nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in (64, 128, 256, 512))
        self.smooth = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(4))
        self.classify = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        size = x.shape[-2:]
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        top = self.lateral[3](features[3])
        pyramid = [top]
        for lateral, f in zip(reversed(self.lateral[:3]), reversed(features[:3])):
            top = lateral(f) + F.interpolate(top, scale_factor=2, mode="nearest")
            pyramid.insert(0, top)
        quarter = pyramid[0].shape[-2:]
        y = sum(F.interpolate(s(p), size=quarter, mode="bilinear", align_corners=False)
                if i else s(p) for i, (s, p) in enumerate(zip(self.smooth, pyramid)))
        return F.interpolate(self.classify(y), size=size, mode="bilinear", align_corners=False)


def unet() -> nn.Module:
    return UNet()


def fpn() -> nn.Module:
    return FPNSegmentation()

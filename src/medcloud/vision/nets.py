"""The two networks in plain torch (imported only for training and export; serving uses ONNX).

`GramDetector` is a small CenterNet-style anchor-free detector: a depthwise-separable backbone down to
stride 16, a light top-down neck back to stride 4, and one head that predicts a per-class centre heatmap
plus centre offset and log box size. Peak picking (3x3 max-pool) happens inside the graph so the ONNX
output is already "one peak per object".

`GramCropClassifier` sorts a 64x64 crop into Gram-positive/negative rods/cocci or background.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medcloud.vision.labels import CROP_CLASSES, NUM_CLASSES

STRIDE = 4


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.dw = _conv_bn(cin, cin, 3, stride, groups=cin, dilation=dilation)
        self.pw = _conv_bn(cin, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.pw(self.dw(x))
        return x + y if self.residual else y


def _normalise(x: Tensor) -> Tensor:
    # Input is float RGB in 0..255, NCHW; normalising in the graph keeps serving code trivial.
    return (x - 128.0) / 64.0


class GramDetector(nn.Module):
    """Anchor-free detector; input (N, 3, H, W) float 0..255 with H, W multiples of 16."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 1) -> None:
        super().__init__()
        c1, c2, c3, c4 = 24 * width, 40 * width, 80 * width, 144 * width
        self.num_classes = num_classes
        self.stem = _conv_bn(3, c1, 3, 2)  # /2
        self.stage1 = nn.Sequential(SeparableBlock(c1, c2, 2), SeparableBlock(c2, c2))  # /4
        self.stage2 = nn.Sequential(SeparableBlock(c2, c3, 2), SeparableBlock(c3, c3), SeparableBlock(c3, c3))  # /8
        self.stage3 = nn.Sequential(
            SeparableBlock(c3, c4, 2),
            SeparableBlock(c4, c4),
            SeparableBlock(c4, c4, dilation=2),
            SeparableBlock(c4, c4),
        )  # /16
        n = 64
        self.lat3 = _conv_bn(c4, n, 1)
        self.lat2 = _conv_bn(c3, n, 1)
        self.lat1 = _conv_bn(c2, n, 1)
        self.smooth2 = SeparableBlock(n, n)
        self.smooth1 = nn.Sequential(SeparableBlock(n, n), SeparableBlock(n, n, dilation=2))
        self.head_cls = nn.Sequential(_conv_bn(n, n, 3, groups=n), nn.Conv2d(n, num_classes, 1))
        self.head_reg = nn.Sequential(_conv_bn(n, n, 3, groups=n), nn.Conv2d(n, 4, 1))
        last = self.head_cls[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.constant_(last.bias, -2.19)  # prior 0.1, as CenterNet

    def features(self, x: Tensor) -> Tensor:
        x = self.stem(_normalise(x))
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        p = F.interpolate(self.lat3(f3), scale_factor=2.0, mode="nearest") + self.lat2(f2)
        p = self.smooth2(p)
        p = F.interpolate(p, scale_factor=2.0, mode="nearest") + self.lat1(f1)
        out: Tensor = self.smooth1(p)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training outputs: heatmap logits (N, C, H/4, W/4) and regression (N, 4, H/4, W/4)."""
        f = self.features(x)
        return self.head_cls(f), self.head_reg(f)


class DetectorExport(nn.Module):
    """What ONNX carries: sigmoid heatmap with non-peaks zeroed, and regression [dx, dy, log w, log h]."""

    def __init__(self, detector: GramDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        logits, reg = self.detector(image)
        heat = torch.sigmoid(logits)
        peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
        return heat * (peaks == heat).to(heat.dtype), reg


class GramCropClassifier(nn.Module):
    """5-way crop classifier; input (N, 3, 64, 64) float 0..255."""

    def __init__(self, num_classes: int = len(CROP_CLASSES)) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(3, 24, 3, 2),  # 32
            SeparableBlock(24, 48, 2),  # 16
            SeparableBlock(48, 48),
            SeparableBlock(48, 96, 2),  # 8
            SeparableBlock(96, 96),
            SeparableBlock(96, 128, 2),  # 4
        )
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        f = self.body(_normalise(x))
        out: Tensor = self.fc(f.mean(dim=(2, 3)))
        return out


class ClassifierExport(nn.Module):
    def __init__(self, classifier: GramCropClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, crops: Tensor) -> Tensor:
        return torch.softmax(self.classifier(crops), dim=1)

"""A small saliency network with the three deployment problems of modelcheck's seed story.

Written in the style of the R3Net code the seed's author had to ship to Android: a ResNeXt
backbone auto-converted from Lua Torch (``Lambda``/``LambdaMap``/``LambdaReduce`` modules that
store lambdas, so ``torch.save(model)`` cannot pickle it), a ``MaxPool2d(ceil_mode=True)`` stem
and bilinear upsampling in the decoder (``F.interpolate`` and ``nn.Upsample``), which at opset 9
exports without error and then computes something else in ONNX Runtime and Caffe2.

``modelcheck examples/seed_model.py`` finds all three before export, then proves it: tracing,
a pickle probe, a real export, ONNX Runtime and a real Caffe2 run. Small on purpose: the whole
check takes seconds.
"""

from functools import reduce

import torch
import torch.nn as nn
import torch.nn.functional as F


class LambdaBase(nn.Sequential):
    """Lua Torch's ConcatTable/CAddTable, as the Lua-to-PyTorch converter writes them."""

    def __init__(self, fn, *args):
        super().__init__(*args)
        self.lambda_func = fn

    def forward_prepare(self, input):
        output = []
        for module in self._modules.values():
            output.append(module(input))
        return output if output else input


class Lambda(LambdaBase):
    def forward(self, input):
        return self.lambda_func(self.forward_prepare(input))


class LambdaMap(LambdaBase):
    def forward(self, input):
        return list(map(self.lambda_func, self.forward_prepare(input)))


class LambdaReduce(LambdaBase):
    def forward(self, input):
        return reduce(self.lambda_func, self.forward_prepare(input))


def bottleneck(inplanes, planes, cardinality=4, stride=1):
    """A ResNeXt block in the converter's style: two branches, then CAddTable (x + y)."""
    return nn.Sequential(
        LambdaMap(
            lambda x: x,
            nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride, 1, groups=cardinality, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(),
                nn.Conv2d(planes, planes * 2, 1, bias=False),
                nn.BatchNorm2d(planes * 2),
            ),
            nn.Sequential(
                nn.Conv2d(inplanes, planes * 2, 1, stride, bias=False),
                nn.BatchNorm2d(planes * 2),
            ),
        ),
        LambdaReduce(lambda x, y: x + y),
        nn.ReLU(),
    )


class SeedNet(nn.Module):
    """Backbone (stride 8) and a decoder that upsamples back to the input size."""

    def __init__(self, width=16):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.layer1 = bottleneck(width, width)
        self.layer2 = bottleneck(width * 2, width * 2, stride=2)
        self.reduce = nn.Sequential(Lambda(lambda x: x), nn.Conv2d(width * 4, width, 1))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.predict = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        y = self.layer2(self.layer1(self.stem(x)))
        y = self.up(self.reduce(y))
        y = F.interpolate(self.predict(y), scale_factor=4, mode="bilinear", align_corners=False)
        return torch.sigmoid(y)

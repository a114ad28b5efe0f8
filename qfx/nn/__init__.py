"""Quantizer modules and the quantized layers built from them.

Every layer's class docstring states its numerics: the forward formula,
the dtype path that makes eval mode bit-exact with ``ap_fixed``, and what
training mode does differently.
"""

from .batchnorm import QBatchNorm1d, QBatchNorm2d
from .binary import QBinaryConv1d, QBinaryConv2d, QBinaryLinear, QSign, QThermometer
from .config import LayerQConfig, constant_type, make_quantizer
from .elementwise import QAdd, QLeakyReLU, QReLU, QReLU6
from .input import QInput
from .layer import FixedConstant, QuantizedLayer
from .linear import QConv1d, QConv2d, QLinear
from .prelu import QPReLU, QRPReLU, RPReLU
from .lut import QTable
from .softmax import QSoftmax
from .pooling import QAdaptiveAvgPool2d, QAvgPool2d, QFlatten, QMaxPool2d
from .quantizers import FixedQuantizer, KHotQuantizer, NonFiniteError
from .reduce import QAdaptiveAvgPool, QAvgPool1d, QMaxPool1d, QMean
from .structure import (QClamp, QConcat, QConstantAdd, QConstantMul, QConvTranspose1d, QConvTranspose2d, QMul, QSub,
                        QUpsample, QZeroPad)

__all__ = [
    "FixedQuantizer", "KHotQuantizer", "NonFiniteError", "LayerQConfig", "make_quantizer", "constant_type",
    "QuantizedLayer", "FixedConstant",
    "QInput", "QLinear", "QConv1d", "QConv2d", "QBatchNorm1d", "QBatchNorm2d",
    "QReLU", "QReLU6", "QLeakyReLU", "QAdd", "QMaxPool2d", "QAvgPool2d", "QAdaptiveAvgPool2d", "QFlatten",
    "QPReLU", "QRPReLU", "RPReLU", "QSign", "QThermometer", "QBinaryLinear", "QBinaryConv1d", "QBinaryConv2d",
    "QSub", "QMul", "QConstantAdd", "QConstantMul", "QClamp", "QConcat", "QZeroPad", "QUpsample",
    "QConvTranspose1d", "QConvTranspose2d", "QMaxPool1d", "QAvgPool1d", "QAdaptiveAvgPool", "QMean",
    "QTable", "QSoftmax",
]

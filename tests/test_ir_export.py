"""qfx.export: warnings about formats the int_bits_range clamp decided."""

import warnings

import pytest
import torch
from torch import nn

import qfx


def test_export_warns_about_a_binary_point_pinned_at_its_range():
    model = nn.Sequential(nn.Linear(4, 3))
    q = qfx.quantize_model(model, qfx.QConfig(learn_int_bits=True))
    x = torch.randn(5, 4)
    qfx.calibrate(q, [x])
    q.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qfx.export(q, x)  # calibrated: nothing at the edges
    q.get_submodule("0").output_quantizer.set_int_bits(10 ** 6)  # clamped to the range's top, 2W
    with pytest.warns(UserWarning, match=r"'0\.output_quantizer'.*\[16\] integer bits.*int_bits_range \(-8, 16\)"):
        qfx.export(q, x)

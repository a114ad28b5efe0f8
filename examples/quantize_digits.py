"""Quantize scikit-learn's digits images at a few fixed-point formats and learn their binary points.

Runs offline in seconds (the data ships inside scikit-learn):

    python examples/quantize_digits.py [--steps 300] [--seed 0]

It prints (1) the error of casting the images, scaled to [0, 1), to several
``ap_fixed`` formats and rounding/overflow modes, (2) the same at K-hot
(multiplier-free) formats, and (3) binary points learned per pixel row by
``qfx.nn.FixedQuantizer(learn_int_bits=True)`` from a bad start, against the
best binary point found by trying every one.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits

import qfx


def load_images() -> torch.Tensor:
    """The 1,797 digits images as float64 of shape (N, 8, 8), pixel values in [0, 1)."""
    images = load_digits().images  # integers 0..16
    return torch.from_numpy(images).to(torch.float64) / 17.0


def cast_error_table(x: torch.Tensor) -> None:
    """RMS and largest error of the exact cast at a few formats."""
    formats = [
        "ap_ufixed<8,0>", "ap_ufixed<8,0,AP_RND_CONV>", "ap_fixed<8,1,AP_RND_CONV,AP_SAT>",
        "ap_ufixed<4,0,AP_RND,AP_SAT>", "ap_fixed<4,-1,AP_RND,AP_SAT>", "ap_fixed<4,-1,AP_RND,AP_WRAP>",
        "ap_ufixed<2,0,AP_RND_CONV,AP_SAT>",
    ]
    print(f"{'format':36} {'rms error':>10} {'max error':>10}")
    for text in formats:
        q = qfx.quantize(x, text)
        err = q - x
        print(f"{text:36} {err.pow(2).mean().sqrt().item():10.5f} {err.abs().max().item():10.5f}")


def khot_table(x: torch.Tensor) -> None:
    """The same images as K-hot values: at most k nonzero signed digits per pixel."""
    t = qfx.FixedType(8, 1)
    print(f"\nK-hot on {t}: values with at most k nonzero signed digits")
    print(f"{'k':>3} {'allowed codes':>14} {'rms error':>10}")
    for k in (1, 2, 3):
        q = qfx.quantize_khot(x, t, k)
        count = qfx.khot.khot_codes(t, k).numel()
        print(f"{k:>3} {count:>14} {(q - x).pow(2).mean().sqrt().item():10.5f}")


def best_int_bits(rows: torch.Tensor, width: int) -> int:
    """The integer bits with the least squared error for these values, by trying each."""
    errors = {i: (qfx.quantize(rows, qfx.FixedType(width, i, rounding="RND_CONV", overflow="SAT")) - rows).pow(2).mean().item()
              for i in range(-width, 2 * width)}
    return min(errors, key=errors.get)


def learn_binary_points(x: torch.Tensor, steps: int) -> None:
    """Learn one binary point per image row, for images scaled so each row has its own range."""
    width = 6
    row_scale = torch.tensor([0.25, 0.5, 1, 2, 4, 8, 16, 32], dtype=torch.float64)
    data = (x * row_scale.view(1, 8, 1)).transpose(0, 1).reshape(8, -1)  # (row, values)
    quantizer = qfx.nn.FixedQuantizer(qfx.FixedType(width, 0, rounding="RND_CONV", overflow="SAT"), learn_int_bits=True,
                                      granularity="channel", channel_dim=0, num_channels=8)
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=2e-3)  # about 0.06 bit per step (STEP_SCALE * lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (quantizer(data) - data).pow(2).mean()
        loss.backward()
        optimizer.step()
    learned = quantizer.fixed_type
    print(f"\nLearned binary points, {width}-bit words, one per row (row r scaled by {row_scale.tolist()})")
    print(f"{'row':>3} {'max |x|':>8} {'learned format':>32} {'best by search':>15}")
    for row, t in enumerate(learned):
        print(f"{row:>3} {data[row].abs().max().item():8.3f} {str(t):>32} {best_int_bits(data[row], width):>15}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps for the learned binary points")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x = load_images()
    print(f"digits: {x.shape[0]} images of 8x8 pixels, scaled to [0, 1)\n")
    cast_error_table(x)
    khot_table(x)
    learn_binary_points(x, args.steps)


if __name__ == "__main__":
    main()

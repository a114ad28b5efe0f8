"""The binarized ops and PReLU in HLS: C simulation in both interfaces equals PyTorch eval and the interpreter.

Channel counts are odd and one row takes two 64-bit words and six bits, so the
packed words are partly empty; padding is +1 in one convolution and -1 in the
other; the slopes multiply in one interface and are one-hot shifts in the other.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from binary_zoo import Conv1dNet, Conv2dNet, prepared

import qfx
from qfx.boards import load_board
from qfx.hls import float_inputs, generate, run_csim, write_project
from qfx.ir.integer import packed_words


@pytest.fixture(autouse=True, scope="module")
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A compile cache private to this module, so every test compiles what it generated."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QFX_CACHE_DIR", str(tmp_path_factory.mktemp("qfx_cache")))
        yield


@pytest.mark.filterwarnings("ignore:export")  # near-zero constants reach the binary point range's end
@pytest.mark.parametrize("net,shape,io", [(Conv2dNet, (2, 6, 6), "parallel"), (Conv2dNet, (2, 6, 6), "stream"),
                                          (Conv1dNet, (3, 11), "stream")])
def test_csim_equals_pytorch_and_interpreter(tmp_path: pathlib.Path, net, shape, io) -> None:
    torch.manual_seed(0)
    x = torch.rand(24, *shape) * 2 - (0.5 if net is Conv2dNet else 1)
    model = prepared(net(1 if io == "stream" else None) if net is Conv2dNet else net(), x)
    graph = qfx.export(model, x[:1])
    with torch.no_grad():
        expected = model(x).double().numpy()
    assert np.array_equal(qfx.ir.run(graph, x.numpy()), expected)
    files = generate(graph, load_board("ultra96v2"), io, float_inputs(graph, x.numpy()))
    if net is Conv2dNet:
        slopes = files["firmware/weights.h"].split("_slope[")[1]
        assert slopes.startswith("70] =\n    {{{")  == (io == "stream")  # one-hot slopes as digit tables (shifts)
        prelus = [n for n in graph.nodes if n.op == "prelu"]
        assert any(len(set(n.constants["slope"].frac_bits().tolist())) > 1 for n in prelus)
        assert any((n.constants["slope"].codes < 0).any() for n in prelus)
    report = run_csim(write_project(files, tmp_path / io))
    assert report.ok and report.mismatches == 0, report.summary()
    assert report.samples == len(x)


def test_weights_are_packed_words_with_empty_high_bits() -> None:
    """Packing against numpy's own little-endian bit packing, 70 bits into a 64-bit and a 6-bit-full word."""
    rng = np.random.default_rng(0)
    codes = rng.choice([-1, 1], size=(3, 70))
    words = packed_words(codes, 64)
    assert words.shape == (3, 2)
    as_bytes = np.packbits(codes > 0, axis=1, bitorder="little")  # 9 bytes per row, the last half empty
    expected = [[int.from_bytes(row[:8].tobytes(), "little"), int.from_bytes(row[8:].tobytes(), "little")]
                for row in as_bytes]
    assert words.tolist() == expected
    assert all(w[1] < 2 ** 6 for w in words.tolist())

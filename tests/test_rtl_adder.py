"""The ``qfx_add`` template on Icarus against Python's integers: every branch, every sign, narrow results."""

import itertools
import subprocess

import numpy as np

from qfx.render import environment
from qfx.rtl.verilog import signed_width

# (a range, b range, a shift, b shift, subtract): shifts on a, on b, on neither; adds and subtracts;
# operands one bit wide; and a result narrower than its operand (a = x0 + x1 minus b = x0 spans x1's 8 bits only).
CASES = [
    ((-128, 127), (-128, 127), 0, 0, False), ((-128, 127), (-128, 127), 0, 0, True),
    ((-128, 127), (-128, 127), 0, 3, False), ((-128, 127), (-128, 127), 0, 3, True),
    ((-128, 127), (-128, 127), 5, 0, False), ((-128, 127), (-128, 127), 5, 0, True),
    ((-1000, 3000), (-7, 6), 0, 12, True), ((-7, 6), (-1000, 3000), 12, 0, False),
    ((-1, 0), (-1, 0), 0, 1, True), ((0, 0), (-4, 3), 0, 2, False), ((-20, 40), (-8, 7), 0, 9, False),
]


def _expected(case, a, b):
    _, _, sa, sb, subtract = case
    return (a << sa) - (b << sb) if subtract else (a << sa) + (b << sb)


def _y_width(case):
    (a_low, a_high), (b_low, b_high), *_ = case
    values = [_expected(case, a, b) for a, b in itertools.product((a_low, a_high), (b_low, b_high))]
    return signed_width(min(values), max(values))


def test_qfx_add_matches_python_integers(tmp_path):
    (tmp_path / "qfx_add.v").write_text(environment().get_template("rtl/qfx_add.v.j2").render())
    rng = np.random.default_rng(3)
    cases = list(CASES) + [((-256, 255), (-256, 255), 0, 0, True)]  # declared 9 bits, checked on x1 = a - b below
    lines, expected = [], []
    for k, case in enumerate(cases):
        (a_low, a_high), (b_low, b_high), sa, sb, subtract = case
        wa, wb = signed_width(a_low, a_high), signed_width(b_low, b_high)
        wy = _y_width(case) if k < len(CASES) else 8
        lines.append(f"reg signed [{wa - 1}:0] a{k}; reg signed [{wb - 1}:0] b{k}; wire signed [{wy - 1}:0] y{k};")
        lines.append(f"qfx_add #(.A_WIDTH({wa}), .B_WIDTH({wb}), .A_SHIFT({sa}), .B_SHIFT({sb}), "
                     f".SUBTRACT({int(subtract)}), .Y_WIDTH({wy})) u{k} (.a(a{k}), .b(b{k}), .y(y{k}));")
        pairs = [(a_low, b_low), (a_low, b_high), (a_high, b_low), (a_high, b_high)]
        pairs += [(int(rng.integers(a_low, a_high + 1)), int(rng.integers(b_low, b_high + 1))) for _ in range(12)]
        if k == len(CASES):  # a = x0 + x1, b = x0 with x0, x1 in [-128, 127]: a - b = x1 fits in 8 bits
            x = rng.integers(-128, 128, size=(16, 2))
            pairs = [(int(x0 + x1), int(x0)) for x0, x1 in x] + [(-256, -128), (254, 127)]
        for a, b in pairs:
            lines.append(f"a{k} = {a}; b{k} = {b}; #1 $display(\"%0d\", y{k});")
            expected.append(_expected(case, a, b))
    declarations = [line for line in lines if not line.startswith("a")]
    stimulus = [line for line in lines if line.startswith("a")]
    (tmp_path / "tb.v").write_text("module tb;\n" + "\n".join(declarations) + "\ninitial begin\n"
                                   + "\n".join(stimulus) + "\nend\nendmodule\n")
    subprocess.run(["iverilog", "-g2005", "-o", "tb.vvp", "tb.v", "qfx_add.v"], cwd=tmp_path, check=True)
    run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert [int(v) for v in run.stdout.split()] == expected


def _ternary_cases(rng, count):
    """Random ``qfx_add3`` cases: operand ranges, shifts (a's the lowest), subtracted operands (at most two, a only
    when the chain starts at its shift) and the chain's start LOW (the second-lowest shift, or a's)."""
    cases = []
    for k in range(count):
        ranges = []
        for _ in range(3):
            width = int(rng.integers(1, 12))
            low = int(rng.integers(-(1 << (width - 1)), 1))
            ranges.append((low, int(rng.integers(low, (1 << (width - 1))))))
        shifts = sorted(int(s) for s in rng.integers(0, 6, size=3))
        negate = [bool(n) for n in rng.integers(0, 2, size=3)]
        if all(negate):
            negate[k % 3] = False
        low = shifts[0] if negate[0] or k % 4 == 0 else shifts[1]
        cases.append((ranges, shifts, negate, low))
    cases.append(([(-128, 127)] * 3, [0, 0, 0], [False, True, True], 0))  # two subtracted, full width
    cases.append(([(0, 0), (-1, 0), (-1, 0)], [0, 3, 3], [False, True, False], 3))  # one-bit operands
    return cases


def _value(ranges_shifts_negate, values):
    _, shifts, negate, _ = ranges_shifts_negate
    return sum((-v if n else v) << s for v, s, n in zip(values, shifts, negate))


def test_qfx_add3_matches_python_integers(tmp_path):
    (tmp_path / "qfx_add.v").write_text(environment().get_template("rtl/qfx_add.v.j2").render(ternary=True))
    rng = np.random.default_rng(5)
    lines, stimulus, expected = [], [], []
    for k, case in enumerate(_ternary_cases(rng, 40)):
        ranges, shifts, negate, low = case
        widths = [signed_width(*r) for r in ranges]
        corners = [_value(case, v) for v in itertools.product(*ranges)]
        wy = signed_width(min(corners), max(corners))
        lines.append(" ".join(f"reg signed [{w - 1}:0] {n}{k};" for n, w in zip("abc", widths))
                     + f" wire signed [{wy - 1}:0] y{k};")
        mask = sum(1 << j for j, n in enumerate(negate) if n)
        lines.append(f"qfx_add3 #(.A_WIDTH({widths[0]}), .B_WIDTH({widths[1]}), .C_WIDTH({widths[2]}), "
                     f".A_SHIFT({shifts[0]}), .B_SHIFT({shifts[1]}), .C_SHIFT({shifts[2]}), .NEGATE(3'd{mask}), "
                     f".LOW({low}), .Y_WIDTH({wy})) u{k} (.a(a{k}), .b(b{k}), .c(c{k}), .y(y{k}));")
        values = list(itertools.product(*ranges))
        values += [tuple(int(rng.integers(lo, hi + 1)) for lo, hi in ranges) for _ in range(12)]
        for v in values:
            stimulus.append(f"a{k} = {v[0]}; b{k} = {v[1]}; c{k} = {v[2]}; #1 $display(\"%0d\", y{k});")
            expected.append(_value(case, v))
    (tmp_path / "tb.v").write_text("module tb;\n" + "\n".join(lines) + "\ninitial begin\n" + "\n".join(stimulus)
                                   + "\nend\nendmodule\n")
    for define in ("QFX_SIMULATE_PRIMITIVES", "QFX_NOTHING"):  # the LUT6_2 and CARRY8 cells, then the arithmetic
        subprocess.run(["iverilog", "-g2005", f"-D{define}", "-o", "tb.vvp", "tb.v", "qfx_add.v"], cwd=tmp_path,
                       check=True)
        run = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, capture_output=True, text=True, check=True)
        assert [int(v) for v in run.stdout.split()] == expected, define

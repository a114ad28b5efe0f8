"""The wheel carries every package, the HLS templates and the board files."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qfx").rglob("__init__.py")}
    missing = on_disk - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_templates_and_boards_ship_in_the_wheel() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["qfx._data.hls_templates"] == "hls_templates"
    assert setuptools["package-dir"]["qfx._data.boards"] == "boards"
    assert {"qfx._data.hls_templates", "qfx._data.boards"} <= set(setuptools["packages"])
    assert list((ROOT / "boards").glob("*.toml")), "boards/ holds no board file"


def test_native_sources_ship_in_the_wheel() -> None:
    """Every C++ file under qfx/ (the emulator's headers, the fused kernels) matches its package's package-data."""
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for path in (ROOT / "qfx").rglob("*"):
        if path.suffix not in (".cpp", ".h"):
            continue
        package_dir = next(d for d in path.parents if (d / "__init__.py").is_file())
        package = ".".join(package_dir.relative_to(ROOT).parts)
        relative = path.relative_to(package_dir)
        assert any(relative.match(pattern) for pattern in data.get(package, [])), \
            f"{path.relative_to(ROOT)} is not in package-data of {package} in pyproject.toml"


def test_board_file_describes_the_ultra96() -> None:
    board = tomllib.loads((ROOT / "boards" / "ultra96v2.toml").read_text())
    assert board["part"] == "xczu3eg-sbva484-1-i"
    assert board["board_part"] == "avnet.com:ultra96v2:part0:1.2"
    assert board["resources"] == {"lut": 70560, "ff": 141120, "bram18": 432, "dsp": 360}

"""Reading a design folder back: the names in its ``manifest.json`` checked, its file names re-derived.

``qfx report --synth`` and the simulators read a folder that anyone may
have edited.  Nothing in its manifest reaches a Yosys script or a simulator
unchecked: the top and every layer module must be Verilog identifiers, and so
must the data ports it lists (``inputs``/``outputs``, where present); the source files are not taken from the manifest but derived from those
names (``rtl/<module>.v``), as :func:`qfx.rtl.generate.render` writes them,
and must be regular files inside the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from ..render.escape import verilog_ident, yosys_word

__all__ = ["DesignFolder", "DesignError", "read_design", "MANIFEST", "ADDER"]

#: The file that marks a folder as a design written by ``qfx rtl`` and lists its top and layers.
MANIFEST = "manifest.json"
#: The shift-add module every layer instantiates.
ADDER = "rtl/qfx_add.v"


class DesignError(ValueError):
    """A design folder whose manifest is missing, malformed or names something qfx would not have written."""


@dataclasses.dataclass(frozen=True)
class DesignFolder:
    """A checked design: its folder, top module, layer modules and every source (relative paths)."""

    directory: pathlib.Path
    top: str
    layers: tuple[str, ...]
    ports: tuple[str, ...] = ()  #: the top's data ports the manifest lists, inputs first

    def source(self, module: str) -> str:
        """The file defining ``module`` (relative to the folder)."""
        return f"rtl/{module}.v"

    @property
    def sources(self) -> list[str]:
        """Every source of the top, in dependency order: the adder, the layers, the top."""
        return [ADDER] + [self.source(m) for m in self.layers] + [self.source(self.top)]


def _name(value: object, where: str, path: pathlib.Path) -> str:
    try:
        return yosys_word(verilog_ident(value))  # type: ignore[arg-type]
    except ValueError:
        raise DesignError(f"{path}: {where} is {value!r:.80}, not a Verilog identifier; qfx rtl writes "
                          "identifiers only, so this manifest was not written by it") from None


def read_design(directory: "os.PathLike | str") -> DesignFolder:
    """The checked design in ``directory``; :class:`DesignError` naming the file and field otherwise."""
    design = pathlib.Path(directory)
    path = design / MANIFEST
    if not path.is_file():
        raise DesignError(f"{design} holds no {MANIFEST}; give the folder written by `qfx rtl`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise DesignError(f"{path}: not valid JSON ({str(error)[:120]})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise DesignError(f"{path}: expected an object with 'top' and a 'layers' list")
    top = _name(manifest.get("top"), "'top'", path)
    layers = tuple(_name(layer.get("module") if isinstance(layer, dict) else layer, f"layers[{k}].module", path)
                   for k, layer in enumerate(manifest["layers"]))
    ports = []
    for side in ("inputs", "outputs"):
        listed = manifest.get(side, [])
        if not isinstance(listed, list):
            raise DesignError(f"{path}: '{side}' must be a list of ports")
        ports += [_name(port.get("port") if isinstance(port, dict) else port, f"{side}[{k}].port", path)
                  for k, port in enumerate(listed)]
    folder = DesignFolder(design, top, layers, tuple(ports))
    root = design.resolve()
    for source in folder.sources:
        file = design / source
        if file.is_symlink() or not file.is_file() or not file.resolve().is_relative_to(root):
            raise DesignError(f"{design}: {source} (named by {MANIFEST}) is not a regular file of the design")
    return folder

"""Quantization defaults of a whole network: :class:`QConfig`, resolved per layer into a :class:`~qfx.nn.LayerQConfig`.

Word lengths of weights, biases, activations, accumulators and BatchNorm
constants, the rounding and overflow modes, K-hot multiplier-free
arithmetic, learned binary points and word lengths, formats chosen by a
layer's role in the graph (``pre_batchnorm``, ``unsigned_relu``), and the
per-layer overrides; :meth:`QConfig.resolve` gives one layer's formats.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

from .format import FixedType, Overflow, Rounding
from .nn import LayerQConfig

__all__ = ["QConfig", "FormatSpec"]

FormatSpec = Union[int, FixedType, str]

# Starting binary points of formats given by width only; calibration or training moves them.
_DEFAULT_INT_BITS = {"weight": 1, "bias": 4, "activation": 3, "input": 3, "scale": 2, "shift": 3}


def _parse_multiplier_free(value: Union[None, str, Mapping[str, Optional[str]]]) -> tuple[Optional[int], Optional[int]]:
    """``(weight_khot, scale_khot)`` from ``None``, ``"khot:K"`` or ``{"weights": ..., "batchnorm": ...}``."""

    def parse_one(spec: Optional[str], where: str) -> Optional[int]:
        if spec is None or spec is False:
            return None
        if isinstance(spec, str) and spec.lower().startswith("khot:"):
            try:
                k = int(spec[5:])
            except ValueError:
                k = 0
            if k >= 1:
                return k
        raise ValueError(f"QConfig.multiplier_free{where}: expected None or 'khot:K' with an integer K >= 1, "
                         f"got {spec!r}")

    if value is None or isinstance(value, str):
        k = parse_one(value, "")
        return k, k
    if isinstance(value, Mapping):
        unknown = set(value) - {"weights", "batchnorm"}
        if unknown:
            raise ValueError(f"QConfig.multiplier_free: unknown keys {sorted(unknown)}; "
                             "the keys are 'weights' and 'batchnorm'")
        return parse_one(value.get("weights"), "['weights']"), parse_one(value.get("batchnorm"), "['batchnorm']")
    raise TypeError(f"QConfig.multiplier_free must be None, 'khot:K' or a dict, got {value!r}")


_LAYER_FIELDS = {f.name for f in dataclasses.fields(LayerQConfig)}


@dataclasses.dataclass(frozen=True)
class QConfig:
    """Quantization defaults for a whole network, with per-layer overrides.

    Formats (``weight``, ``bias``, ``activation``, ``input``, ``accum``,
    ``scale``, ``shift``) are each either a word length (an ``int``: the
    format is ``ap_fixed<W, I0, rounding, overflow>`` with a default
    starting binary point ``I0`` that calibration or training moves) or a
    full format (a :class:`~qfx.FixedType` or its C++ spelling, taken as is).

    Attributes:
        weight: Linear/Conv weights (default 8 bits).
        bias: Linear/Conv biases (default 16 bits).
        activation: every layer's output (default 8 bits).
        input: the network input (``QInput``); ``None`` means ``activation``.
        accum: the accumulator of Linear/Conv before the output cast;
            ``None`` (default) keeps the exact ``ap_fixed`` sum type.
        scale, shift: BatchNorm's folded per-channel scale and shift
            (element-wise constants; default 8 bits each).
        rounding, overflow: modes of formats given as widths (default
            ``RND_CONV``, ``SAT``).
        weight_granularity: ``"tensor"`` or ``"channel"`` binary points for weights.
        learn_int_bits: train every binary point.
        learn_widths: train every word length too (needs ``learn_int_bits``):
            each quantizer that learns its binary point, K-hot ones excepted,
            learns its word length from the configured one downwards
            (:meth:`~qfx.nn.FixedQuantizer.learn_width`); add
            ``lambda * qfx.bit_cost(model)`` to the loss to trade bits for
            accuracy.
        pre_batchnorm: the output of a layer whose only user is a BatchNorm
            (a Linear/Conv sum before BatchNorm rescales it per channel: at
            4 bits, casting it as narrow as an activation loses most of what a
            channel of small variance holds); ``None`` (default): ``activation``.
        unsigned_relu: when ``activation`` is a width ``W``, a ReLU/ReLU6
            output is ``ap_ufixed<W>`` (all ``W`` bits for the magnitude, twice
            the levels of a signed ``W``-bit word), and the layer whose only
            user is that ReLU casts to ``W + 1`` signed bits, so that the ReLU
            keeps every level of the non-negative half (default ``False``).

    Below 8 bits, ``weight_granularity="channel"``, ``pre_batchnorm=16`` and
    ``unsigned_relu=True`` are what keep 4-bit models near float accuracy
    (the README's recipe).
        multiplier_free: K-hot constants, so products become ``K - 1`` adds of
            shifted inputs.  ``None`` (default): ordinary multipliers;
            ``"khot:K"``: K-hot weights *and* BatchNorm scales;
            ``{"weights": "khot:K", "batchnorm": "khot:K"}``: each separately
            (a missing key or ``None`` leaves that one a multiplier).
        overrides: per-layer changes, ``{key: changes}``.  ``key`` is a module
            name (the fx qualified name, e.g. ``"layer1.0.conv1"``; a prefix
            such as ``"layer1"`` covers everything under it; a function node's
            name such as ``"add_1"`` or ``"relu"``) or a type (a float module
            class such as ``nn.Conv2d``, or a qfx layer class such as
            ``qfx.nn.QAdd``, which also covers residual ``+`` and ``F.relu``
            converted to ``QReLU``).  ``changes`` is a dict whose keys are
            fields of this class (``{"weight": 4, "multiplier_free": "khot:1"}``)
            and/or of :class:`~qfx.nn.LayerQConfig` (``{"output": "ap_fixed<12,4>"}``,
            applied last), or a whole ``LayerQConfig`` used as is.  Type
            overrides apply first, in the order given, then name overrides,
            shorter (outer) names first, so the most specific one wins.
    """

    weight: FormatSpec = 8
    bias: FormatSpec = 16
    activation: FormatSpec = 8
    input: Optional[FormatSpec] = None
    accum: Optional[FormatSpec] = None
    scale: FormatSpec = 8
    shift: FormatSpec = 8
    rounding: Union[Rounding, str] = Rounding.RND_CONV
    overflow: Union[Overflow, str] = Overflow.SAT
    weight_granularity: str = "tensor"
    learn_int_bits: bool = False
    learn_widths: bool = False
    pre_batchnorm: Optional[FormatSpec] = None
    unsigned_relu: bool = False
    multiplier_free: Union[None, str, Mapping[str, Optional[str]]] = None
    overrides: Mapping[Union[str, type], Union[Mapping[str, Any], LayerQConfig]] = dataclasses.field(
        default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rounding", Rounding.coerce(self.rounding))
        object.__setattr__(self, "overflow", Overflow.coerce(self.overflow))
        _parse_multiplier_free(self.multiplier_free)  # validate early
        own = {f.name for f in dataclasses.fields(self)} - {"overrides"}
        for key, changes in self.overrides.items():
            if not isinstance(key, (str, type)):
                raise TypeError(f"QConfig.overrides keys are module names or types, got {key!r}")
            if isinstance(changes, LayerQConfig):
                continue
            if not isinstance(changes, Mapping):
                raise TypeError(f"QConfig.overrides[{key!r}] must be a dict of changes or a LayerQConfig, "
                                f"got {changes!r}")
            unknown = set(changes) - own - _LAYER_FIELDS
            if unknown:
                raise ValueError(f"QConfig.overrides[{key!r}]: unknown fields {sorted(unknown)}; QConfig fields "
                                 f"are {sorted(own)}, LayerQConfig fields {sorted(_LAYER_FIELDS)}")
        if self.learn_widths and not self.learn_int_bits:
            raise ValueError("QConfig(learn_widths=True) needs learn_int_bits=True: a word length is learned "
                             "together with its binary point")
        self.layer_config()  # validate the formats
        if self.pre_batchnorm is not None:
            self._format(self.pre_batchnorm, "activation")

    def _format(self, spec: FormatSpec, kind: str) -> FixedType:
        if isinstance(spec, bool) or not isinstance(spec, (int, FixedType, str)):
            raise TypeError(f"QConfig.{kind} must be a width (int), a FixedType or a C++ spelling, got {spec!r}")
        if isinstance(spec, int):
            return FixedType(spec, _DEFAULT_INT_BITS.get(kind, spec // 2), rounding=self.rounding,
                             overflow=self.overflow)
        return FixedType.coerce(spec)

    def layer_config(self) -> LayerQConfig:
        """The :class:`~qfx.nn.LayerQConfig` of these defaults, without overrides."""
        weight_khot, scale_khot = _parse_multiplier_free(self.multiplier_free)
        return LayerQConfig(
            weight=self._format(self.weight, "weight"), bias=self._format(self.bias, "bias"),
            accum=None if self.accum is None else self._format(self.accum, "accum"),
            output=self._format(self.activation, "activation"),
            scale=self._format(self.scale, "scale"), shift=self._format(self.shift, "shift"),
            weight_khot=weight_khot, scale_khot=scale_khot, weight_granularity=self.weight_granularity,
            learn_int_bits=self.learn_int_bits)

    def input_config(self) -> LayerQConfig:
        """The config of a ``QInput``: ``output`` is ``input`` (or ``activation``)."""
        cfg = self.layer_config()
        return cfg if self.input is None else cfg.replace(output=self._format(self.input, "input"))

    def _matching(self, name: str, types: tuple[type, ...]) -> list:
        by_type = [changes for key, changes in self.overrides.items()
                   if isinstance(key, type) and any(issubclass(t, key) for t in types if t is not None)]
        named = [(key, changes) for key, changes in self.overrides.items()
                 if isinstance(key, str) and (name == key or name.startswith(key + "."))]
        named.sort(key=lambda item: item[0].count(".") + (item[0] == name))
        return by_type + [changes for _, changes in named]

    def for_role(self, role: Optional[str]) -> "QConfig":
        """These defaults for a layer whose output has a role in the graph: ``"pre_batchnorm"`` (its only
        user is a BatchNorm), ``"pre_relu"`` (its only user is a ReLU) or ``"relu"`` (see ``pre_batchnorm``
        and ``unsigned_relu``); any other role changes nothing."""
        if role == "pre_batchnorm" and self.pre_batchnorm is not None:
            return dataclasses.replace(self, activation=self.pre_batchnorm)
        width = self.activation if isinstance(self.activation, int) and not isinstance(self.activation, bool) \
            else None
        if width is None or not self.unsigned_relu:
            return self
        if role == "pre_relu":
            return dataclasses.replace(self, activation=width + 1)
        if role == "relu":
            unsigned = FixedType(width, _DEFAULT_INT_BITS["activation"], signed=False, rounding=self.rounding,
                                 overflow=self.overflow)
            return dataclasses.replace(self, activation=unsigned)
        return self

    def resolve(self, name: str, float_type: Optional[type] = None, qfx_type: Optional[type] = None,
                is_input: bool = False, role: Optional[str] = None) -> LayerQConfig:
        """The ``LayerQConfig`` of the layer called ``name`` (its float and qfx types), overrides applied;
        ``role`` as :meth:`for_role`, after the overrides of ``QConfig`` fields and before those of
        ``LayerQConfig`` fields."""
        config, layer_changes, fixed = self, {}, None
        for changes in self._matching(name, (float_type, qfx_type)):
            if isinstance(changes, LayerQConfig):
                fixed, layer_changes = changes, {}
                continue
            own = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(QConfig)}}
            if own:
                config = dataclasses.replace(config, **own)
                fixed = None
            layer_changes.update({k: v for k, v in changes.items() if k not in own})
        config = config.for_role(role)
        cfg = fixed if fixed is not None else (config.input_config() if is_input else config.layer_config())
        return cfg.replace(**layer_changes) if layer_changes else cfg

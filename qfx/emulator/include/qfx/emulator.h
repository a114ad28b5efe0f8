// qfx's C++ emulator: bit-exact ap_fixed numerics on integer codes.
// cast.h: the cast with every rounding and overflow mode; cast_loop.h: the
// cast over a run, vectorisable; kernels.h: the layer kernels; binary.h the bit-packed binary kernels; structure.h the
// structural kernels (sub, mul, clamp, concat, zero_pad, upsample); runtime.h: the driver of a generated per-graph program.
#pragma once

#include "cast.h"
#include "cast_loop.h"
#include "kernels.h"
#include "binary.h"
#include "structure.h"
#include "runtime.h"

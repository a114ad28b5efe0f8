// qfx's C++ emulator: bit-exact ap_fixed numerics on integer codes.
// cast.h: the cast with every rounding and overflow mode; kernels.h: the
// layer kernels; binary.h the bit-packed binary kernels; runtime.h: the driver of a generated per-graph program.
#pragma once

#include "cast.h"
#include "kernels.h"
#include "binary.h"
#include "runtime.h"

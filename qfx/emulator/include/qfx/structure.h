// Kernels of the structural ops (qfx/ir/interpreter.py is their definition): differences and products of
// two tensors, clamps, joins that cast each input, and the ops that only move codes (zero padding with
// zero insertion, nearest upsampling).  Tensors of rank 2 are (C, 1, L) here.
#pragma once

#include <cstdint>

#include "cast.h"
#include "kernels.h"

namespace qfx {

// a * 2**UpA - b * 2**UpB, at the common binary point.
template <class Out, class Acc, int Size, int UpA, int UpB, int Drop, class A, class B, class Y>
void sub(const A* a, const B* b, Y* y) {
  cast_loop<Out, Acc>(Size, Drop, [&](int i) {
    return shift_left(static_cast<Acc>(a[i]), UpA) - shift_left(static_cast<Acc>(b[i]), UpB);
  }, y);
}

// a * b: fractional bits add, nothing is lost.
template <class Out, class Acc, int Size, int Drop, class A, class B, class Y>
void mul(const A* a, const B* b, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = static_cast<Y>(cast<Out>(static_cast<Acc>(a[i]) * static_cast<Acc>(b[i]), Drop));
}

// min(max(x * 2**Up, Low), High) at the common binary point (a bound that is not set is not applied).
template <class Out, class Acc, int Size, int Up, bool HasLow, long long Low, bool HasHigh, long long High, int Drop,
          class X, class Y>
void clamp(const X* x, Y* y) {
  for (int i = 0; i < Size; ++i) {
    Acc v = shift_left(static_cast<Acc>(x[i]), Up);
    if (HasLow && v < static_cast<Acc>(Low)) v = static_cast<Acc>(Low);
    if (HasHigh && v > static_cast<Acc>(High)) v = static_cast<Acc>(High);
    y[i] = static_cast<Y>(cast<Out>(v, Drop));
  }
}

// One input of a join: each of Outer blocks of Inner codes is cast and placed at Offset within a block of
// Stride output codes.
template <class Out, int Outer, int Inner, int Stride, int Offset, int Drop, class X, class Y>
void concat_part(const X* x, Y* y) {
  for (int o = 0; o < Outer; ++o)
    for (int i = 0; i < Inner; ++i)
      y[o * Stride + Offset + i] = static_cast<Y>(cast<Out>(std::int64_t(x[o * Inner + i]), Drop));
}

// Zeros between neighbours (every SH-th row, SW-th column holds an input code), PT rows and PL columns before.
template <int C, int H, int W, int SH, int SW, int PT, int PL, int OH, int OW, class X, class Y>
void zero_pad(const X* x, Y* y) {
  for (int i = 0; i < C * OH * OW; ++i) y[i] = 0;
  for (int c = 0; c < C; ++c)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w) y[(c * OH + PT + h * SH) * OW + PL + w * SW] = static_cast<Y>(x[(c * H + h) * W + w]);
}

// Nearest upsampling by integer factors.
template <int C, int H, int W, int SH, int SW, class X, class Y>
void upsample(const X* x, Y* y) {
  for (int c = 0; c < C; ++c)
    for (int h = 0; h < H * SH; ++h)
      for (int w = 0; w < W * SW; ++w) y[(c * H * SH + h) * W * SW + w] = static_cast<Y>(x[(c * H + h / SH) * W + w / SW]);
}

}  // namespace qfx

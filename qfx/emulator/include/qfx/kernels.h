// Layer kernels on integer codes, one sample at a time, shapes as template
// constants. Each mirrors its op in qfx/ir/interpreter.py: the exact result
// is formed in the accumulator type Acc (int32, int64 or __int128, chosen by
// the code generator from the node's exact width) and cast once.
// Tensors are channels first, row-major; codes are stored in the narrowest
// of int8/16/32/64 that holds the format (code_t).
#pragma once

#include <cstdint>
#include <type_traits>

#include "cast.h"

namespace qfx {

// The narrowest integer holding every code of T.
template <class T>
using code_t = typename std::conditional<
    (T::width + !T::is_signed <= 8), std::int8_t,
    typename std::conditional<(T::width + !T::is_signed <= 16), std::int16_t,
                              typename std::conditional<(T::width + !T::is_signed <= 32), std::int32_t,
                                                        std::int64_t>::type>::type>::type;

// The narrowest of int16/32/64 holding codes of both X and Wt: products are widening multiplies from it.
template <class X, class Wt>
using operand_t = typename std::conditional<
    (sizeof(X) <= 2 && sizeof(Wt) <= 2), std::int16_t,
    typename std::conditional<(sizeof(X) <= 4 && sizeof(Wt) <= 4), std::int32_t, std::int64_t>::type>::type;

// v * 2**s, s >= 0 (a multiply: left shifts of negative numbers are undefined before C++20).
template <class A> inline A shift_left(A v, int s) { return s == 0 ? v : v * (A(1) << s); }

// ------------------------------------------------------------- epilogues
struct NoAccum {};

// After a dense or convolution channel's dot product (fractional bits fx +
// fw[o]): align it and the bias to their common binary point and add, cast to
// the optional accumulator format, then to the output format.
template <class Out, class Accum, class Acc, int Channels>
struct DotEpilogue {
  bool has_bias;
  std::int64_t bias[Channels];
  int sum_shift[Channels];   // the dot product's shift to the common point
  int bias_shift[Channels];  // the bias's shift to the common point
  int drop[Channels];        // common point minus the next format's fractional bits

  std::int64_t operator()(int o, Acc sum) const {
    Acc total = shift_left(sum, sum_shift[o]);
    if (has_bias) total += shift_left(static_cast<Acc>(bias[o]), bias_shift[o]);
    if constexpr (std::is_same<Accum, NoAccum>::value) {
      return cast<Out>(total, drop[o]);
    } else {
      return cast<Out>(cast<Accum>(total, drop[o]), Accum::frac - Out::frac);
    }
  }
};

// ----------------------------------------------------------------- dense
template <int In, int Outs, class Acc, class X, class Wt, class E, class Y>
void dense(const X* x, const Wt* w, const E& epilogue, Y* y) {
  for (int o = 0; o < Outs; ++o) {
    const Wt* row = w + o * In;
    Acc sum = 0;
    for (int i = 0; i < In; ++i)
      sum += static_cast<Acc>(static_cast<operand_t<X, Wt>>(x[i])) * static_cast<Acc>(static_cast<operand_t<X, Wt>>(row[i]));
    y[o] = static_cast<Y>(epilogue(o, sum));
  }
}

// ----------------------------------------------------------- convolution
// PT, PL: zero rows/columns before the input; PB, PR: after it, as many as the
// last window reaches (the code generator works them out from the output size).
template <int C_, int H_, int W_, int O_, int KH_, int KW_, int SH_, int SW_, int PT_, int PB_, int PL_, int PR_,
          int DH_, int DW_, int G_, int OH_, int OW_>
struct Conv2dShape {
  static constexpr int C = C_, H = H_, W = W_, O = O_, KH = KH_, KW = KW_, SH = SH_, SW = SW_, PT = PT_, PB = PB_,
                       PL = PL_, PR = PR_, DH = DH_, DW = DW_, G = G_, OH = OH_, OW = OW_;
  static constexpr int HP = H + PT + PB, WP = W + PL + PR;  // the zero-padded input
  static constexpr bool padded = PT || PB || PL || PR;
};

// acc[i] += x[i * Stride] * w for i < N; `restrict` tells the compiler the rows never overlap, so it vectorises.
// Operand holds both x's codes and w (int16 for 8-bit formats): the compiler then sees a widening
// multiply (SSE2's pmullw/pmulhw for int16) rather than a full-width one.
template <int N, int Stride, class Acc, class Operand, class X>
inline void multiply_add_row(Acc* __restrict acc, const X* __restrict x, Operand w) {
  for (int i = 0; i < N; ++i) acc[i] += static_cast<Acc>(static_cast<Operand>(x[i * Stride])) * static_cast<Acc>(w);
}

// Zero-padded, strided, dilated, grouped 2-D convolution (a 1-D one is H = KH = 1).
// The input is first copied into `padded` (C * HP * WP codes, unused without
// padding), so that every loop has a fixed trip count; then, weight by weight,
// whole output rows are multiply-added into `plane` (OH * OW accumulators):
// the innermost loop is a fixed-length multiply-add the compiler vectorises.
template <class S, class Acc, class X, class Wt, class E, class Y>
void conv2d(const X* x, const Wt* w, const E& epilogue, X* padded, Acc* plane, Y* y) {
  constexpr int CG = S::C / S::G, OG = S::O / S::G, P = S::OH * S::OW;
  using Operand = operand_t<X, Wt>;
  const X* source = x;
  if constexpr (S::padded) {
    for (int i = 0; i < S::C * S::HP * S::WP; ++i) padded[i] = 0;
    for (int c = 0; c < S::C; ++c)
      for (int iy = 0; iy < S::H; ++iy)
        for (int ix = 0; ix < S::W; ++ix)
          padded[(c * S::HP + iy + S::PT) * S::WP + ix + S::PL] = x[(c * S::H + iy) * S::W + ix];
    source = padded;
  }
  for (int o = 0; o < S::O; ++o) {
    const int g = o / OG;
    for (int p = 0; p < P; ++p) plane[p] = 0;
    for (int c = 0; c < CG; ++c) {
      const X* xc = source + (g * CG + c) * S::HP * S::WP;
      for (int ky = 0; ky < S::KH; ++ky) {
        for (int kx = 0; kx < S::KW; ++kx) {
          const Operand wv = static_cast<Operand>(w[((o * CG + c) * S::KH + ky) * S::KW + kx]);
          if (wv == 0) continue;  // pruned and K-hot weights cost nothing
          for (int oy = 0; oy < S::OH; ++oy)
            multiply_add_row<S::OW, S::SW, Acc>(plane + oy * S::OW, xc + (oy * S::SH + ky * S::DH) * S::WP + kx * S::DW,
                                           wv);
        }
      }
    }
    Y* yo = y + o * P;
    for (int p = 0; p < P; ++p) yo[p] = static_cast<Y>(epilogue(o, plane[p]));
  }
}

// ------------------------------------------------------ scale and shift
// x[c, ...] * scale[c] + shift[c] (folded BatchNorm), aligned like the interpreter.
// Terms > 0: each scale is a sum of `Terms` signed powers of two (K-hot), and
// the product is formed with shifts and adds, as the hardware does.
template <class Out, class Acc, int Channels, int Terms>
struct ScaleShiftParams {
  std::int64_t scale[Channels];
  int term_shift[Channels * (Terms > 0 ? Terms : 1)];  // digit positions of the scale's CSD form
  int term_sign[Channels * (Terms > 0 ? Terms : 1)];   // +1, -1, or 0 for an unused digit
  int product_shift[Channels];
  std::int64_t shift[Channels];
  int shift_shift[Channels];
  int drop[Channels];
};

template <class Out, class Acc, int Channels, int Size, int Terms, class X, class Y>
void scale_shift(const X* x, const ScaleShiftParams<Out, Acc, Channels, Terms>& p, Y* y) {
  for (int c = 0; c < Channels; ++c) {
    const Acc offset = shift_left(static_cast<Acc>(p.shift[c]), p.shift_shift[c]);
    const Acc scale = static_cast<Acc>(p.scale[c]);
    for (int i = c * Size; i < (c + 1) * Size; ++i) {
      const Acc v = static_cast<Acc>(x[i]);
      Acc product = 0;
      if constexpr (Terms > 0) {
        for (int k = 0; k < Terms; ++k) {
          const int sign = p.term_sign[c * Terms + k];
          if (sign) product += sign > 0 ? shift_left(v, p.term_shift[c * Terms + k])
                                        : -shift_left(v, p.term_shift[c * Terms + k]);
        }
      } else {
        product = v * scale;
      }
      y[i] = static_cast<Y>(cast<Out>(shift_left(product, p.product_shift[c]) + offset, p.drop[c]));
    }
  }
}

// ----------------------------------------------------------- activations
template <class Out, int Size, class X, class Y>
void relu(const X* x, int drop, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = static_cast<Y>(cast<Out>(x[i] > 0 ? std::int64_t(x[i]) : 0, drop));
}

// min(max(x * 2**up, 0), 6 * 2**common), at the common binary point.
template <class Out, class Acc, int Size, class X, class Y>
void relu6(const X* x, int up, int common, int drop, Y* y) {
  const Acc six = shift_left(Acc(6), common);
  for (int i = 0; i < Size; ++i) {
    const Acc v = shift_left(static_cast<Acc>(x[i]), up);
    y[i] = static_cast<Y>(cast<Out>(v < 0 ? Acc(0) : (v > six ? six : v), drop));
  }
}

// x >= 0 ? x * 2**up_pos : x * slope * 2**up_neg, at the common point.
template <class Out, class Acc, int Size, class X, class Y>
void leaky_relu(const X* x, std::int64_t slope, int up_pos, int up_neg, int drop, Y* y) {
  for (int i = 0; i < Size; ++i) {
    const Acc v = static_cast<Acc>(x[i]);
    const Acc r = v >= 0 ? shift_left(v, up_pos) : shift_left(v * static_cast<Acc>(slope), up_neg);
    y[i] = static_cast<Y>(cast<Out>(r, drop));
  }
}

// ------------------------------------------------------------------- add
template <class Out, class Acc, int Size, class A, class B, class Y>
void add(const A* a, int up_a, const B* b, int up_b, int drop, Y* y) {
  for (int i = 0; i < Size; ++i) {
    const Acc sum = shift_left(static_cast<Acc>(a[i]), up_a) + shift_left(static_cast<Acc>(b[i]), up_b);
    y[i] = static_cast<Y>(cast<Out>(sum, drop));
  }
}

// --------------------------------------------------------------- pooling
template <int C_, int H_, int W_, int KH_, int KW_, int SH_, int SW_, int PH_, int PW_, int DH_, int DW_, int OH_,
          int OW_>
struct PoolShape {
  static constexpr int C = C_, H = H_, W = W_, KH = KH_, KW = KW_, SH = SH_, SW = SW_, PH = PH_, PW = PW_, DH = DH_,
                       DW = DW_, OH = OH_, OW = OW_;
};

// The window's maximum over positions inside the input (padding never wins).
template <class Out, class S, class X, class Y>
void maxpool2d(const X* x, int drop, Y* y) {
  for (int c = 0; c < S::C; ++c) {
    const X* xc = x + c * S::H * S::W;
    for (int oy = 0; oy < S::OH; ++oy) {
      for (int ox = 0; ox < S::OW; ++ox) {
        bool found = false;
        X best = 0;
        for (int ky = 0; ky < S::KH; ++ky) {
          const int iy = oy * S::SH + ky * S::DH - S::PH;
          if (iy < 0 || iy >= S::H) continue;
          for (int kx = 0; kx < S::KW; ++kx) {
            const int ix = ox * S::SW + kx * S::DW - S::PW;
            if (ix < 0 || ix >= S::W) continue;
            const X v = xc[iy * S::W + ix];
            if (!found || v > best) best = v;
            found = true;
          }
        }
        y[(c * S::OH + oy) * S::OW + ox] = static_cast<Y>(cast<Out>(std::int64_t(best), drop));
      }
    }
  }
}

// sum(window) * divisor: zero padding adds nothing to the sum but counts in the divisor.
template <class Out, class Acc, class S, class X, class Y>
void avgpool2d(const X* x, std::int64_t divisor, int drop, Y* y) {
  for (int c = 0; c < S::C; ++c) {
    const X* xc = x + c * S::H * S::W;
    for (int oy = 0; oy < S::OH; ++oy) {
      for (int ox = 0; ox < S::OW; ++ox) {
        Acc sum = 0;
        for (int ky = 0; ky < S::KH; ++ky) {
          const int iy = oy * S::SH + ky - S::PH;
          if (iy < 0 || iy >= S::H) continue;
          for (int kx = 0; kx < S::KW; ++kx) {
            const int ix = ox * S::SW + kx - S::PW;
            if (ix >= 0 && ix < S::W) sum += static_cast<Acc>(xc[iy * S::W + ix]);
          }
        }
        y[(c * S::OH + oy) * S::OW + ox] = static_cast<Y>(cast<Out>(sum * static_cast<Acc>(divisor), drop));
      }
    }
  }
}

template <class Out, class Acc, int Channels, int Size, class X, class Y>
void global_avgpool2d(const X* x, std::int64_t divisor, int drop, Y* y) {
  for (int c = 0; c < Channels; ++c) {
    Acc sum = 0;
    for (int i = c * Size; i < (c + 1) * Size; ++i) sum += static_cast<Acc>(x[i]);
    y[c] = static_cast<Y>(cast<Out>(sum * static_cast<Acc>(divisor), drop));
  }
}

// ---------------------------------------------------------------- flatten
template <int Size, class X, class Y>
void copy(const X* x, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = static_cast<Y>(x[i]);
}

}  // namespace qfx

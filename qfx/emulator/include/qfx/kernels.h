// Layer kernels on integer codes, one sample at a time, shapes as template
// constants. Each mirrors its op in qfx/ir/interpreter.py: the exact result
// is formed in the accumulator type Acc (int32, int64 or __int128, chosen by
// the code generator from the node's exact width) and cast once.
// Tensors are channels first, row-major; codes are stored in the narrowest
// of int8/16/32/64 that holds the format (code_t).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cast.h"
#include "cast_loop.h"

namespace qfx {

// The narrowest integer holding every code of T.
template <class T>
using code_t = typename std::conditional<
    (T::width + !T::is_signed <= 8), std::int8_t,
    typename std::conditional<(T::width + !T::is_signed <= 16), std::int16_t,
                              typename std::conditional<(T::width + !T::is_signed <= 32), std::int32_t,
                                                        std::int64_t>::type>::type>::type;

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

  // y[i] = (*this)(o, sums[i]) for i < n: one channel's outputs in one loop the compiler vectorises.
  template <class Y> void channel(int o, const Acc* __restrict sums, int n, Y* __restrict y) const {
    if constexpr (std::is_same<Accum, NoAccum>::value) {
      const Acc scale = shift_left(Acc(1), sum_shift[o]);
      const Acc offset = has_bias ? shift_left(static_cast<Acc>(bias[o]), bias_shift[o]) : Acc(0);
      cast_loop<Out, Acc>(n, drop[o], [&](int i) { return sums[i] * scale + offset; }, y);
    } else {
      for (int i = 0; i < n; ++i) y[i] = static_cast<Y>((*this)(o, sums[i]));
    }
  }
};

// ----------------------------------------------------------------- dense
template <int In, int Outs, class Acc, class X, class Wt, class E, class Y>
void dense(const X* x, const Wt* w, const E& epilogue, Y* y) {
  for (int o = 0; o < Outs; ++o) {
    const Wt* row = w + o * In;
    Acc sum = 0;
    for (int i = 0; i < In; ++i) sum += static_cast<Acc>(x[i]) * static_cast<Acc>(row[i]);
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

// Dot products of OB weight rows with PB patch rows, each of K operands (int16 for 8-bit formats), exactly in
// Acc: OB * PB fixed-length reductions in one loop, which the compiler vectorises into multiply-add
// instructions (pmaddwd), each loaded vector used OB or PB times.  sums[o * stride + p] receives row o . row p.
template <int K, int OB, int PB, class Acc, class Operand>
inline void dot_block(const Operand* __restrict w, const Operand* __restrict x, Acc* __restrict sums, int stride) {
  Acc s[OB][PB] = {};
  for (int k = 0; k < K; ++k)
    for (int o = 0; o < OB; ++o)
      for (int p = 0; p < PB; ++p) s[o][p] += static_cast<Acc>(w[o * K + k]) * static_cast<Acc>(x[p * K + k]);
  for (int o = 0; o < OB; ++o)
    for (int p = 0; p < PB; ++p) sums[o * stride + p] = s[o][p];
}

// sums[o * P + p] = w[o] . x[p] for OB weight rows and P patch rows, two patches at a time.
template <int K, int OB, int P, class Acc, class Operand>
inline void dot_rows(const Operand* w, const Operand* x, Acc* sums) {
  int p = 0;
  for (; p + 2 <= P; p += 2) dot_block<K, OB, 2>(w, x + p * K, sums + p, P);
  if (p < P) dot_block<K, OB, 1>(w, x + p * K, sums + p, P);
}

// Output channels per block of the convolution (the scratch `sums` holds CONV_BLOCK * OH * OW sums).
constexpr int CONV_BLOCK = 4;

// Zero-padded, strided, dilated, grouped 2-D convolution (a 1-D one is H = KH = 1).
// The input is copied, zero-padded and channels last, into `padded` (HP * WP * C operands of type Wt, int16
// at least: the code generator stores weights so); group by group, each output position's window is gathered
// into a row of `patches` (OH * OW rows of K = KH * KW * C/G operands, runs of C/G channels in the order
// ky, kx, c: the weights' order [o][ky][kx][c]), so that every output is one fixed-length dot product.
// Blocks of CONV_BLOCK output channels are formed into `sums`, then each channel's epilogue runs over them.
template <class S, class Acc, class X, class Wt, class E, class Y>
void conv2d(const X* x, const Wt* w, const E& epilogue, Wt* padded, Wt* patches, Acc* sums, Y* y) {
  static_assert(sizeof(Wt) >= sizeof(X), "weights must be stored in a type that holds the input codes");
  using Operand = Wt;
  constexpr int CG = S::C / S::G, OG = S::O / S::G, P = S::OH * S::OW, K = CG * S::KH * S::KW;
  if constexpr (S::padded)
    for (int i = 0; i < S::HP * S::WP * S::C; ++i) padded[i] = 0;
  for (int c = 0; c < S::C; ++c)
    for (int iy = 0; iy < S::H; ++iy)
      for (int ix = 0; ix < S::W; ++ix)
        padded[((iy + S::PT) * S::WP + ix + S::PL) * S::C + c] = static_cast<Operand>(x[(c * S::H + iy) * S::W + ix]);
  // A window row is one run of KW * C codes when the columns are adjacent and every channel is taken.
  constexpr bool whole_rows = S::G == 1 && S::DW == 1;
  constexpr int RUNS = whole_rows ? 1 : S::KW, RUN = whole_rows ? S::KW * CG : CG;
  for (int g = 0; g < S::G; ++g) {
    for (int oy = 0; oy < S::OH; ++oy)
      for (int ox = 0; ox < S::OW; ++ox) {
        Operand* row = patches + (oy * S::OW + ox) * K;
        for (int ky = 0; ky < S::KH; ++ky)
          for (int r = 0; r < RUNS; ++r) {
            const Operand* from = padded + ((oy * S::SH + ky * S::DH) * S::WP + ox * S::SW + r * S::DW) * S::C + g * CG;
            Operand* to = row + (ky * RUNS + r) * RUN;
            for (int c = 0; c < RUN; ++c) to[c] = from[c];
          }
      }
    int o = 0;
    for (; o + CONV_BLOCK <= OG; o += CONV_BLOCK) {
      dot_rows<K, CONV_BLOCK, P>(w + (g * OG + o) * K, patches, sums);
      for (int b = 0; b < CONV_BLOCK; ++b) epilogue.channel(g * OG + o + b, sums + b * P, P, y + (g * OG + o + b) * P);
    }
    for (; o < OG; ++o) {
      dot_rows<K, 1, P>(w + (g * OG + o) * K, patches, sums);
      epilogue.channel(g * OG + o, sums, P, y + (g * OG + o) * P);
    }
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
    const Acc up = shift_left(Acc(1), p.product_shift[c]);
    const X* xc = x + c * Size;
    if constexpr (Terms > 0) {
      Acc digit[Terms];  // each signed digit's value (0 for an unused one)
      for (int k = 0; k < Terms; ++k) digit[k] = static_cast<Acc>(p.term_sign[c * Terms + k]) *
                                                 shift_left(Acc(1), p.term_shift[c * Terms + k]);
      cast_loop<Out, Acc>(Size, p.drop[c], [&](int i) {
        const Acc v = static_cast<Acc>(xc[i]);
        Acc product = 0;
        for (int k = 0; k < Terms; ++k) product += v * digit[k];  // shifts and adds: +-v * 2**shift
        return product * up + offset;
      }, y + c * Size);
    } else {
      const Acc scale = static_cast<Acc>(p.scale[c]) * up;
      cast_loop<Out, Acc>(Size, p.drop[c], [&](int i) { return static_cast<Acc>(xc[i]) * scale + offset; },
                          y + c * Size);
    }
  }
}

// ----------------------------------------------------------- activations
// Shifts and binary points are template constants here, so each cast
// compiles down to the few operations its modes need.
template <class Out, int Size, int Drop, class X, class Y>
void relu(const X* x, Y* y) {
  using A = typename std::conditional<sizeof(X) <= 4, std::int32_t, std::int64_t>::type;
  cast_loop<Out, A>(Size, Drop, [&](int i) { return x[i] > 0 ? static_cast<A>(x[i]) : A(0); }, y);
}

// min(max(x * 2**Up, 0), 6 * 2**Common), at the common binary point.
template <class Out, class Acc, int Size, int Up, int Common, int Drop, class X, class Y>
void relu6(const X* x, Y* y) {
  const Acc six = shift_left(Acc(6), Common);
  cast_loop<Out, Acc>(Size, Drop, [&](int i) {
    const Acc v = shift_left(static_cast<Acc>(x[i]), Up);
    return v < 0 ? Acc(0) : (v > six ? six : v);
  }, y);
}

// x >= 0 ? x * 2**UpPos : x * Slope * 2**UpNeg, at the common binary point.
template <class Out, class Acc, int Size, long long Slope, int UpPos, int UpNeg, int Drop, class X, class Y>
void leaky_relu(const X* x, Y* y) {
  cast_loop<Out, Acc>(Size, Drop, [&](int i) {
    const Acc v = static_cast<Acc>(x[i]);
    return v >= 0 ? shift_left(v, UpPos) : shift_left(v * static_cast<Acc>(Slope), UpNeg);
  }, y);
}

// ---------------------------------------------------------- lookup table
// y = rom[Index(x) - Index::code_min]: x cast to the table's input format addresses the output codes.
template <class Index, int Size, int Drop, class X, class R, class Y>
void lookup(const X* x, const R* rom, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = static_cast<Y>(rom[cast<Index>(std::int64_t(x[i]), Drop) - Index::code_min]);
}

// --------------------------------------------------------------- softmax
// Over C channels at each of P positions: d = x - max(x), e = exp_rom[Table(d)], s = Sum(sum e), then
// Out(e * second_rom[s]) or, for log-softmax, Out(d * 2**UpD - second_rom[s] * 2**UpR).
template <class Table, class Sum, class Out, int C, int P, int DropD, int DropS, bool Log, int UpD, int UpR,
          int DropY, class X, class R1, class R2, class Y>
void softmax(const X* x, const R1* exp_rom, const R2* second_rom, Y* y) {
  std::int64_t e[C];
  for (int p = 0; p < P; ++p) {
    std::int64_t top = x[p];
    for (int c = 1; c < C; ++c) top = std::max<std::int64_t>(top, x[c * P + p]);
    i128 total = 0;
    for (int c = 0; c < C; ++c) {
      e[c] = exp_rom[cast<Table>(i128(x[c * P + p]) - top, DropD) - Table::code_min];
      total += e[c];
    }
    const i128 r = second_rom[cast<Sum>(total, DropS) - Sum::code_min];
    for (int c = 0; c < C; ++c) {
      const i128 d = i128(x[c * P + p]) - top;
      const i128 v = Log ? shift_left(d, UpD) - shift_left(r, UpR) : i128(e[c]) * r;
      y[c * P + p] = static_cast<Y>(cast<Out>(v, DropY));
    }
  }
}

// ------------------------------------------------------------------- add
template <class Out, class Acc, int Size, int UpA, int UpB, int Drop, class A, class B, class Y>
void add(const A* a, const B* b, Y* y) {
  cast_loop<Out, Acc>(Size, Drop, [&](int i) {
    return shift_left(static_cast<Acc>(a[i]), UpA) + shift_left(static_cast<Acc>(b[i]), UpB);
  }, y);
}

// --------------------------------------------------------------- pooling
template <int C_, int H_, int W_, int KH_, int KW_, int SH_, int SW_, int PH_, int PW_, int DH_, int DW_, int OH_,
          int OW_>
struct PoolShape {
  static constexpr int C = C_, H = H_, W = W_, KH = KH_, KW = KW_, SH = SH_, SW = SW_, PH = PH_, PW = PW_, DH = DH_,
                       DW = DW_, OH = OH_, OW = OW_;
};

// The window's maximum over positions inside the input (padding never wins).
template <class Out, class S, int Drop, class X, class Y>
void maxpool2d(const X* x, Y* y) {
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
        y[(c * S::OH + oy) * S::OW + ox] = static_cast<Y>(cast<Out>(std::int64_t(best), Drop));
      }
    }
  }
}

// sum(window) * Divisor: zero padding adds nothing to the sum but counts in the divisor.
template <class Out, class Acc, class S, long long Divisor, int Drop, class X, class Y>
void avgpool2d(const X* x, Y* y) {
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
        y[(c * S::OH + oy) * S::OW + ox] = static_cast<Y>(cast<Out>(sum * static_cast<Acc>(Divisor), Drop));
      }
    }
  }
}

template <class Out, class Acc, int Channels, int Size, long long Divisor, int Drop, class X, class Y>
void global_avgpool2d(const X* x, Y* y) {
  for (int c = 0; c < Channels; ++c) {
    Acc sum = 0;
    for (int i = c * Size; i < (c + 1) * Size; ++i) sum += static_cast<Acc>(x[i]);
    y[c] = static_cast<Y>(cast<Out>(sum * static_cast<Acc>(Divisor), Drop));
  }
}

// ---------------------------------------------------------------- flatten
template <int Size, class X, class Y>
void copy(const X* x, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = static_cast<Y>(x[i]);
}

// ----------------------------------------------------------------- prelu
// t = x * 2**x_up + bias * 2**b_up; p = t >= 0 ? t * 2**pos_up : t * slope * 2**neg_up;
// y = p * 2**y_up + shift * 2**z_up, cast with drop (per channel, aligned like the interpreter).
template <int Channels>
struct PReLUParams {
  std::int64_t bias[Channels];
  int x_up[Channels], b_up[Channels];
  std::int64_t slope[Channels];
  int pos_up[Channels], neg_up[Channels];
  std::int64_t shift[Channels];
  int y_up[Channels], z_up[Channels], drop[Channels];
};

template <class Out, class Acc, int Channels, int Size, class X, class Y>
void prelu(const X* x, const PReLUParams<Channels>& p, Y* y) {
  for (int c = 0; c < Channels; ++c)
    for (int i = 0; i < Size; ++i) {
      const Acc t = shift_left(static_cast<Acc>(x[c * Size + i]), p.x_up[c]) + shift_left(static_cast<Acc>(p.bias[c]), p.b_up[c]);
      const Acc r = t >= 0 ? shift_left(t, p.pos_up[c]) : shift_left(t * static_cast<Acc>(p.slope[c]), p.neg_up[c]);
      const Acc v = shift_left(r, p.y_up[c]) + shift_left(static_cast<Acc>(p.shift[c]), p.z_up[c]);
      y[c * Size + i] = static_cast<Y>(cast<Out>(v, p.drop[c]));
    }
}

}  // namespace qfx

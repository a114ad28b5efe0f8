// Binary kernels: a binary tensor holds the codes -1 and +1; these kernels
// pack it into 64-bit words (bit 1 for +1) and form each dot product of N
// terms as N - 2 * popcount(x ^ w) = 2 * popcount(xnor(x, w)) - N, with the
// processor's popcount instruction. Bits past the last channel of a word are
// 0 in both operands, so they never count. The integer sum is then cast once.
#pragma once

#include <cstdint>

#include "cast.h"
#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define QFX_POPCOUNT_TARGET __attribute__((target("popcnt")))
#else
#define QFX_POPCOUNT_TARGET
#endif

namespace qfx {

QFX_POPCOUNT_TARGET inline int popcount64(std::uint64_t v) { return __builtin_popcountll(v); }

// x >= 0 ? +1 : -1 (x's sign does not depend on its binary point).
template <int Size, class X, class Y>
void sign(const X* x, Y* y) {
  for (int i = 0; i < Size; ++i) y[i] = x[i] >= 0 ? Y(1) : Y(-1);
}

// y[(c * T + t) * Size + i] = x[c * Size + i] * 2**Up >= thresholds[t] ? +1 : -1
// (the thresholds already at the common binary point).
template <int C, int Size, int T, int Up, class X, class Y>
void thermometer(const X* x, const std::int64_t* thresholds, Y* y) {
  for (int c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < Size; ++i)
        y[(c * T + t) * Size + i] = shift_left(static_cast<std::int64_t>(x[c * Size + i]), Up) >= thresholds[t]
                                        ? Y(1) : Y(-1);
}

// Dense: In binary inputs, Outs rows of Words packed weights each.
template <class Out, int In, int Outs, int Words, class X, class Y>
QFX_POPCOUNT_TARGET void binary_dense(const X* x, const std::uint64_t* w, std::uint64_t* packed, Y* y) {
  for (int k = 0; k < Words; ++k) packed[k] = 0;
  for (int i = 0; i < In; ++i) packed[i / 64] |= std::uint64_t(x[i] > 0) << (i % 64);
  for (int o = 0; o < Outs; ++o) {
    int differ = 0;
    for (int k = 0; k < Words; ++k) differ += popcount64(packed[k] ^ w[o * Words + k]);
    y[o] = static_cast<Y>(cast<Out>(std::int64_t(In - 2 * differ), -Out::frac));
  }
}

// Convolution (shape S as for conv2d; a 1-D one is H = KH = 1), padded with
// PadValue. The input is packed pixel by pixel: for group g and padded pixel
// (h, w), Words words hold the group's C/G channels. Weights: [o][kh][kw][Words].
template <class Out, class S, int Words, int PadValue, class X, class Y>
QFX_POPCOUNT_TARGET void binary_conv2d(const X* x, const std::uint64_t* w, std::uint64_t* packed, Y* y) {
  constexpr int CG = S::C / S::G, OG = S::O / S::G, K = CG * S::KH * S::KW;
  for (int g = 0; g < S::G; ++g)
    for (int h = 0; h < S::HP; ++h)
      for (int v = 0; v < S::WP; ++v) {
        std::uint64_t* word = packed + ((g * S::HP + h) * S::WP + v) * Words;
        for (int k = 0; k < Words; ++k) word[k] = 0;
        const int ih = h - S::PT, iw = v - S::PL;
        const bool inside = ih >= 0 && ih < S::H && iw >= 0 && iw < S::W;
        for (int c = 0; c < CG; ++c) {
          const bool one = inside ? x[((g * CG + c) * S::H + ih) * S::W + iw] > 0 : PadValue > 0;
          word[c / 64] |= std::uint64_t(one) << (c % 64);
        }
      }
  for (int g = 0; g < S::G; ++g)
    for (int oh = 0; oh < S::OH; ++oh)
      for (int ow = 0; ow < S::OW; ++ow)
        for (int oc = 0; oc < OG; ++oc) {
          const int o = g * OG + oc;
          const std::uint64_t* wo = w + o * S::KH * S::KW * Words;
          int differ = 0;
          for (int kh = 0; kh < S::KH; ++kh) {
            const std::uint64_t* row = packed + ((g * S::HP + oh * S::SH + kh * S::DH) * S::WP + ow * S::SW) * Words;
            for (int kw = 0; kw < S::KW; ++kw) {
              const std::uint64_t* px = row + kw * S::DW * Words;
              const std::uint64_t* wk = wo + (kh * S::KW + kw) * Words;
              for (int k = 0; k < Words; ++k) differ += popcount64(px[k] ^ wk[k]);
            }
          }
          y[(o * S::OH + oh) * S::OW + ow] = static_cast<Y>(cast<Out>(std::int64_t(K - 2 * differ), -Out::frac));
        }
}

}  // namespace qfx

// The ap_fixed rounding and overflow rules on one element, shared by the native cast
// (qfx/cast_kernels.cpp) and the fused training kernels (qfx/fused/kernels.cpp).
//
// round_code<R>(v, big): the integer code of v = x * 2**F under rounding mode R, with the formulas of
// qfx.functional (every step exact while |v| < 2**(mantissa-1); larger v are integers already and kept).
// wrapped<Rule>(code, source, word): the code WRAP or WRAP_SM stores for an integer code outside the
// range, in int64.  Compiled without -ffast-math and with -ffp-contract=off: every operation rounds as
// PyTorch's does.

#ifndef QFX_CAST_MODES_H
#define QFX_CAST_MODES_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace qfx_cast {

// The enums' order in qfx/cast_native.py.
enum Rounding { RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV, TRN, TRN_ZERO };
enum Overflow { SAT, SAT_ZERO, SAT_SYM, WRAP, WRAP_SM };

template <int R, class T>
inline T round_code(T v, T big) {
    if constexpr (R == RND_CONV) {
        return std::rint(v);  // the default rounding mode: to nearest, ties to even
    } else if constexpr (R == TRN) {
        return std::floor(v);
    } else if constexpr (R == TRN_ZERO) {
        return std::trunc(v);
    } else {
        // Half-rounding: 2v is exact and so is rounding it, where v + 0.5 would not be.
        T r;
        if constexpr (R == RND) {
            r = std::floor((std::floor(v * T(2)) + T(1)) * T(0.5));
        } else if constexpr (R == RND_MIN_INF) {
            r = std::ceil((std::ceil(v * T(2)) - T(1)) * T(0.5));
        } else if constexpr (R == RND_ZERO) {
            r = std::copysign(std::ceil(std::fabs(v) - T(0.5)), v);
        } else {  // RND_INF
            r = std::copysign(std::floor((std::floor(std::fabs(v) * T(2)) + T(1)) * T(0.5)), v);
        }
        return std::fabs(v) >= big ? v : r;
    }
}

// The word rules of WRAP and WRAP_SM, chosen once per call from the mode and the saturation bits N.
enum Rule { PLAIN, WRAP_N, SM_0, SM_1, SM_N };

// Integer constants of the word rules.
struct Word {
    int width, sat_bits;
    bool is_signed;
    int64_t mask;  // the word's W bits
    int64_t top;   // its top N bits
    int64_t sign;  // its top bit

    Word(int width_, int sat_bits_, bool is_signed_)
        : width(width_), sat_bits(sat_bits_), is_signed(is_signed_), mask((int64_t(1) << width_) - 1),
          top(((int64_t(1) << sat_bits_) - 1) << (width_ - sat_bits_)), sign(int64_t(1) << (width_ - 1)) {}
};

// Signed words: positive overflow gets sign 0 and the next N-1 bits 1; negative, sign 1 and 0s.
inline int64_t saturate_top_bits(int64_t w, bool neg, const Word& b) {
    return neg ? ((w & ~b.top) | b.sign) : ((w & ~b.top) | (b.top & ~b.sign));
}

// The code WRAP or WRAP_SM stores for an integer code outside the range (|code| < 2**62); `source`
// is floor of the unrounded scaled value, whose first dropped bit WRAP_SM without N reads.
template <int Rule>
int64_t wrapped(int64_t code, int64_t source, const Word& b) {
    const bool neg = code < 0;
    int64_t w = code & b.mask;  // two's complement: the low bits of the code
    const int64_t msb = (w >> (b.width - 1)) & 1;
    const int64_t flipped = ~w & b.mask;
    if constexpr (Rule == WRAP_N) {
        w = b.is_signed ? saturate_top_bits(w, neg, b) : (w | b.top);  // ap_ufixed: either way
    } else if constexpr (Rule == SM_0) {
        w = ((source >> b.width) & 1) != msb ? flipped : w;
    } else if constexpr (Rule == SM_1) {
        w = int64_t(neg) != msb ? flipped : w;
    } else if constexpr (Rule == SM_N) {
        w = ((w >> (b.width - b.sat_bits)) & 1) == int64_t(neg) ? flipped : w;
        w = saturate_top_bits(w, neg, b);
    }
    return b.is_signed ? w - (((w >> (b.width - 1)) & 1) << b.width) : w;
}

// fix(i) for every i < n whose inside[i] is false, skipping eight flags at a time where all are set:
// the few codes outside the range are redone one by one, in int64.
template <class Fix>
inline void for_each_outside(const bool* inside, int64_t n, Fix fix) {
    constexpr uint64_t kAllIn = 0x0101010101010101ull;
    for (int64_t j = 0; j < n; j += 8) {
        uint64_t flags = kAllIn;
        if (j + 8 <= n) std::memcpy(&flags, inside + j, 8);
        if (flags == kAllIn && j + 8 <= n) continue;
        for (int64_t i = j; i < j + 8 && i < n; ++i)
            if (!inside[i]) fix(i);
    }
}

}  // namespace qfx_cast

#endif  // QFX_CAST_MODES_H

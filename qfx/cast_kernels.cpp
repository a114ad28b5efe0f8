// The exact ap_fixed cast on a contiguous float32/float64 array, one pass (see qfx/cast_native.py).
//
// Per element, as qfx.functional.cast_codes does with PyTorch ops: v = x * 2**F (exact: a power of
// two), the rounding mode's integer code n of v (the same float formulas, every step exact while
// |v| < 2**(mantissa-1); larger v are integers already and kept), then the overflow mode.  The codes
// inside the range pass through; the few outside take the overflow mode's rule, in int64 for the
// bit-pattern modes (WRAP, WRAP_SM).  Writes the codes, or the values codes * 2**-F; optionally
// also where the code was in range.
//
// What this pass does not handle it reports instead of computing: a NaN, an infinity or a |v| at or
// past `huge` (where cast_codes first folds the value) makes the call return kFallback, and the
// caller casts the whole array with PyTorch ops (which also raise on NaN/Inf).  The caller also keeps
// to PyTorch the binary points whose scaling needs fix-ups (TRN with F < 0, float64 with F >= 1022).
//
// Compiled without -ffast-math and with -ffp-contract=off: every operation rounds as PyTorch's does.

#include <cmath>
#include <cstdint>

#include <omp.h>

#include "cast_modes.h"

namespace {

using namespace qfx_cast;

// Bits of the status the call returns.
constexpr int kFallback = 1;  // a NaN, an infinity or a value too large for this pass: nothing is valid
constexpr int kOutside = 2;   // some code lay outside the range

// Elements below which one thread does the work; elements per OpenMP chunk.
constexpr int64_t kParallelGrain = 1 << 17;
constexpr int64_t kChunk = 1 << 14;

template <class T>
struct Spec {
    T scale;               // 2**F
    T code_min, code_max;  // the range of codes
    T low;                 // SAT_SYM's lower end: code_min | 1 (signed), 0 (unsigned)
    T big;                 // 2**(mantissa-1): half-rounding keeps |v| at or past it as it is
    T huge;                // |v| at or past it goes back to the caller
    T out_scale;           // what the codes are multiplied by when written: 1, or 2**-F for values
    int width, sat_bits;
    bool is_signed;
};

// One block (at most kChunk elements) of the cast; returns the status bits it saw.  The first loop
// is branch-free, so that it vectorizes (the pointers and bounds are locals, the flags or-ed
// integers): it rounds, saturates and records where each code lay.  WRAP and WRAP_SM then redo, in
// int64, the few codes outside, found eight flags at a time.
template <class T, int R, int O, int Rule, bool Mask>
int cast_block(const T* __restrict x, T* __restrict out, bool* __restrict inside, int64_t n, const Spec<T>& s,
               const Word& word) {
    constexpr bool kWraps = O == WRAP || O == WRAP_SM;
    bool local[kWraps && !Mask ? kChunk : 1];
    bool* __restrict in_flags = Mask ? inside : local;
    const T scale = s.scale, lo = s.code_min, hi = s.code_max, low = s.low, big = s.big, huge = s.huge;
    const T out_scale = s.out_scale;
    const bool sym = O == SAT_SYM && s.is_signed;
    int bad = 0, outside = 0;
#pragma omp simd reduction(| : bad, outside)
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i] * scale;
        bad |= !(std::fabs(v) < huge);  // also true for NaN
        T c = round_code<R>(v, big);
        bool in = (c >= lo) & (c <= hi);
        if (sym) in = in & (c != lo);
        outside |= !in;
        if constexpr (Mask || kWraps) in_flags[i] = in;
        if constexpr (O == SAT) {
            c = c < lo ? lo : c;
            c = c > hi ? hi : c;
        } else if constexpr (O == SAT_SYM) {
            c = c < low ? low : c;
            c = c > hi ? hi : c;
        } else if constexpr (O == SAT_ZERO) {
            c = in ? c : T(0);
        }
        out[i] = c * out_scale;  // exact: a power of two
    }
    if constexpr (kWraps) {
        if (outside && !bad) {
            for_each_outside(in_flags, n, [&](int64_t i) {
                const T v = x[i] * scale;
                const int64_t source = Rule == SM_0 ? static_cast<int64_t>(std::floor(v)) : 0;
                out[i] = static_cast<T>(wrapped<Rule>(static_cast<int64_t>(round_code<R>(v, big)), source, word)) *
                         out_scale;
            });
        }
    }
    return (bad ? kFallback : 0) | (outside ? kOutside : 0);
}

template <class T, int R, int O, int Rule>
int cast_all(const T* x, T* out, bool* inside, int64_t n, const Spec<T>& s, int threads) {
    const Word word(s.width, s.sat_bits, s.is_signed);
    const int team = n > kParallelGrain ? (threads > 1 ? threads : 1) : 1;
    int status = 0;
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1) reduction(| : status)
    for (int64_t b = 0; b < n; b += kChunk) {
        const int64_t e = b + kChunk < n ? b + kChunk : n;
        status |= inside == nullptr ? cast_block<T, R, O, Rule, false>(x + b, out + b, nullptr, e - b, s, word)
                                    : cast_block<T, R, O, Rule, true>(x + b, out + b, inside + b, e - b, s, word);
    }
    return status;
}

template <class T, int R>
int dispatch_overflow(int overflow, const T* x, T* out, bool* inside, int64_t n, const Spec<T>& s, int threads) {
    const int n_bits = s.sat_bits;
    switch (overflow) {
        case SAT: return cast_all<T, R, SAT, PLAIN>(x, out, inside, n, s, threads);
        case SAT_ZERO: return cast_all<T, R, SAT_ZERO, PLAIN>(x, out, inside, n, s, threads);
        case SAT_SYM: return cast_all<T, R, SAT_SYM, PLAIN>(x, out, inside, n, s, threads);
        case WRAP:
            return n_bits == 0 ? cast_all<T, R, WRAP, PLAIN>(x, out, inside, n, s, threads)
                               : cast_all<T, R, WRAP, WRAP_N>(x, out, inside, n, s, threads);
        case WRAP_SM:
            return n_bits == 0   ? cast_all<T, R, WRAP_SM, SM_0>(x, out, inside, n, s, threads)
                   : n_bits == 1 ? cast_all<T, R, WRAP_SM, SM_1>(x, out, inside, n, s, threads)
                                 : cast_all<T, R, WRAP_SM, SM_N>(x, out, inside, n, s, threads);
    }
    return kFallback;
}

template <class T>
int cast_codes(const T* x, T* out, bool* inside, int64_t n, int rounding, int overflow, const double* reals,
               const int64_t* ints, int threads) {
    const Spec<T> s{T(reals[0]), T(reals[1]), T(reals[2]), T(reals[3]), T(reals[4]), T(reals[5]), T(reals[6]),
                    int(ints[0]),  int(ints[1]),  ints[2] != 0};
    switch (rounding) {
        case RND: return dispatch_overflow<T, RND>(overflow, x, out, inside, n, s, threads);
        case RND_ZERO: return dispatch_overflow<T, RND_ZERO>(overflow, x, out, inside, n, s, threads);
        case RND_MIN_INF: return dispatch_overflow<T, RND_MIN_INF>(overflow, x, out, inside, n, s, threads);
        case RND_INF: return dispatch_overflow<T, RND_INF>(overflow, x, out, inside, n, s, threads);
        case RND_CONV: return dispatch_overflow<T, RND_CONV>(overflow, x, out, inside, n, s, threads);
        case TRN: return dispatch_overflow<T, TRN>(overflow, x, out, inside, n, s, threads);
        case TRN_ZERO: return dispatch_overflow<T, TRN_ZERO>(overflow, x, out, inside, n, s, threads);
    }
    return kFallback;
}

}  // namespace

// reals: 2**F, code_min, code_max, SAT_SYM's low end, 2**(mantissa-1), the fallback bound of |v|,
// the output scale (all exact in T); ints: width, saturation bits, signed.  `inside` may be null.
extern "C" int qfx_cast_codes_f32(const float* x, float* out, bool* inside, int64_t n, int rounding, int overflow,
                                  const double* reals, const int64_t* ints, int threads) {
    return cast_codes<float>(x, out, inside, n, rounding, overflow, reals, ints, threads);
}

extern "C" int qfx_cast_codes_f64(const double* x, double* out, bool* inside, int64_t n, int rounding,
                                  int overflow, const double* reals, const int64_t* ints, int threads) {
    return cast_codes<double>(x, out, inside, n, rounding, overflow, reals, ints, threads);
}

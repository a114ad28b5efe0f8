// The ap_fixed cast on integer codes: what `T y = x;` stores, for an exact
// fixed-point x given as an integer code and its fractional bits.
//
// Mirrors qfx/ir/integer.py, the executable specification, step for step:
// `drop = src_frac - T::frac` bits are dropped (drop > 0, rounded by one
// small function per ap_q_mode) or zeros appended (drop <= 0); the rounded
// code R overflows outside [code_min, code_max] (for signed AP_SAT_SYM also
// at code_min), and one small function per ap_o_mode rewrites the word.
// AP_WRAP_SM without saturation bits reads bit W of the truncated source
// (before rounding), as the header's lD does.
#pragma once

#include <climits>
#include <cstdint>
#include <type_traits>

// Platform assumptions, each checked where the compiler can see it.
// Right shift of a negative integer must be arithmetic (floor division):
// every rounding step reads `code >> drop` as floor(code / 2**drop).
static_assert((-7 >> 1) == -4 && (INT64_C(-1) >> 63) == -1, "qfx needs arithmetic right shifts on signed integers");
// Codes travel as 64-bit long long; accumulators are int32, int64 or __int128.
static_assert(sizeof(long long) == 8 && sizeof(std::int64_t) == 8 && CHAR_BIT == 8,
              "qfx needs 64-bit long long and 8-bit bytes");
// Converting an unsigned pattern to signed must keep the bits (two's complement).
static_assert(static_cast<std::int64_t>(UINT64_MAX) == -1, "qfx needs two's complement integers");
#ifndef __SIZEOF_INT128__
#error "qfx needs __int128 (GCC or Clang on a 64-bit target) for accumulators of 64 to 127 bits"
#endif

namespace qfx {

using i128 = __int128;
using u128 = unsigned __int128;

enum class Rounding { RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV, TRN, TRN_ZERO };
enum class Overflow { SAT, SAT_ZERO, SAT_SYM, WRAP, WRAP_SM };

// ap_fixed<W, W - F, Q, O, N> (ap_ufixed when !S): codes are W-bit integers.
template <int W, int F, bool S, Rounding Q, Overflow O, int N>
struct Format {
  // Codes are stored in int64: 64 bits signed, 63 unsigned.
  static_assert(W >= 1 && W <= (S ? 64 : 63), "qfx's emulator holds codes of at most 64 bits (63 unsigned)");
  static_assert(N >= 0 && N <= W, "saturation bits must lie in [0, W]");
  static constexpr int width = W;
  static constexpr int frac = F;
  static constexpr bool is_signed = S;
  static constexpr Rounding rounding = Q;
  static constexpr Overflow overflow = O;
  static constexpr int sat_bits = N;
  static constexpr std::int64_t code_max =
      static_cast<std::int64_t>((static_cast<u128>(1) << (S ? W - 1 : W)) - 1);
  static constexpr std::int64_t code_min = S ? static_cast<std::int64_t>(-(static_cast<i128>(1) << (W - 1))) : 0;
};

// ------------------------------------------------------------ bit helpers
template <class T> struct unsigned_of;
template <> struct unsigned_of<std::int64_t> { using type = std::uint64_t; };
template <> struct unsigned_of<i128> { using type = u128; };

template <class T> constexpr int bits_of = static_cast<int>(sizeof(T) * CHAR_BIT);

// floor(v / 2**s) for any s >= 0 (the sign extends forever).
template <class T> inline T shift_right(T v, int s) {
  return s >= bits_of<T> ? (v < 0 ? T(-1) : T(0)) : static_cast<T>(v >> s);
}

// Bit k of v's two's complement pattern, sign-extended beyond the word.
template <class T> inline bool bit(T v, int k) {
  return k >= bits_of<T> - 1 ? v < 0 : ((v >> k) & 1) != 0;
}

// Whether any of bits 0 .. k-1 of v is set.
template <class T> inline bool any_below(T v, int k) {
  using U = typename unsigned_of<T>::type;
  if (k <= 0) return false;
  if (k >= bits_of<T>) return v != 0;
  return (static_cast<U>(v) & ((U(1) << k) - 1)) != 0;
}

// Bits low .. high of a 64-bit word set (ones) or cleared (!ones); nothing when high < low.
inline std::uint64_t set_range(std::uint64_t word, int low, int high, bool ones) {
  if (high < low) return word;
  const int count = high - low + 1;
  const std::uint64_t mask = (count >= 64 ? ~UINT64_C(0) : ((UINT64_C(1) << count) - 1)) << low;
  return ones ? (word | mask) : (word & ~mask);
}

// The low W bits of a pattern, read back as a code of T (two's complement when signed).
template <class T> inline std::int64_t word_code(std::uint64_t pattern) {
  constexpr int W = T::width;
  constexpr std::uint64_t mask = W >= 64 ? ~UINT64_C(0) : ((UINT64_C(1) << W) - 1);
  std::uint64_t word = pattern & mask;
  if (T::is_signed && W < 64 && ((word >> (W - 1)) & 1)) word |= ~mask;
  return static_cast<std::int64_t>(word);
}

// ------------------------------------------------------------- rounding
// Each returns the 0/1 increment added to floor, given the dropped bits:
// `half` the first dropped bit, `rest` whether a lower one is set,
// `negative` the sign of the source.
inline bool rnd(bool, bool half, bool, bool) { return half; }                                        // ties to +inf
inline bool rnd_zero(bool, bool half, bool rest, bool negative) { return half && (rest || negative); }  // ties to 0
inline bool rnd_min_inf(bool, bool half, bool rest, bool) { return half && rest; }                   // ties to -inf
inline bool rnd_inf(bool, bool half, bool rest, bool negative) { return half && (rest || !negative); }  // away from 0
inline bool rnd_conv(bool odd, bool half, bool rest, bool) { return half && (rest || odd); }         // ties to even
inline bool trn(bool, bool, bool, bool) { return false; }                                            // toward -inf
inline bool trn_zero(bool, bool half, bool rest, bool negative) { return negative && (half || rest); }  // toward 0

template <Rounding Q> inline bool round_increment(bool odd, bool half, bool rest, bool negative) {
  if constexpr (Q == Rounding::RND) return rnd(odd, half, rest, negative);
  else if constexpr (Q == Rounding::RND_ZERO) return rnd_zero(odd, half, rest, negative);
  else if constexpr (Q == Rounding::RND_MIN_INF) return rnd_min_inf(odd, half, rest, negative);
  else if constexpr (Q == Rounding::RND_INF) return rnd_inf(odd, half, rest, negative);
  else if constexpr (Q == Rounding::RND_CONV) return rnd_conv(odd, half, rest, negative);
  else if constexpr (Q == Rounding::TRN) return trn(odd, half, rest, negative);
  else return trn_zero(odd, half, rest, negative);
}

// ------------------------------------------------------------- overflow
// Each returns the code stored for an overflowing R, given R's low 64 bits
// (`pattern`), whether R < 0 (`negative`) and bit W of the truncated source (`lead`).
template <class T> inline std::int64_t sat(std::uint64_t, bool negative, bool) {
  return negative ? T::code_min : T::code_max;
}

template <class T> inline std::int64_t sat_zero(std::uint64_t, bool, bool) { return 0; }

// -code_max below the range (the word 10...01; code_min when W = 1; 0 when unsigned).
template <class T> inline std::int64_t sat_sym(std::uint64_t, bool negative, bool) {
  if (!negative) return T::code_max;
  return T::is_signed ? word_code<T>((UINT64_C(1) << (T::width - 1)) | 1) : 0;
}

// The low W bits; with N saturation bits the top N follow the sign (signed) or are set (unsigned).
template <class T> inline std::int64_t wrap(std::uint64_t pattern, bool negative, bool) {
  constexpr int w = T::width, n = T::sat_bits;
  std::uint64_t word = pattern;
  if (n && T::is_signed) {
    word = set_range(word, w - 1, w - 1, negative);
    word = set_range(word, w - n, w - 2, !negative);
  } else if (n) {
    word = set_range(word, w - n, w - 1, true);
  }
  return word_code<T>(word);
}

// Sign-magnitude wrap: the word is inverted when its sign disagrees with the source's.
template <class T> inline std::int64_t wrap_sm(std::uint64_t pattern, bool negative, bool lead) {
  constexpr int w = T::width, n = T::sat_bits;
  const std::uint64_t ones = w >= 64 ? ~UINT64_C(0) : ((UINT64_C(1) << w) - 1);
  std::uint64_t word = pattern & ones;
  const bool sign = ((word >> (w - 1)) & 1) != 0;
  if (n == 0) return word_code<T>(lead != sign ? set_range(word ^ ones, w - 1, w - 1, lead) : word);
  if (n == 1) {
    if (negative != sign) word ^= ones;
  } else {
    if ((((word >> (w - n)) & 1) != 0) == negative) word ^= ones;
    word = set_range(word, w - n, w - 2, !negative);
  }
  return word_code<T>(set_range(word, w - 1, w - 1, negative));
}

template <class T> inline std::int64_t on_overflow(std::uint64_t pattern, bool negative, bool lead) {
  if constexpr (T::overflow == Overflow::SAT) return sat<T>(pattern, negative, lead);
  else if constexpr (T::overflow == Overflow::SAT_ZERO) return sat_zero<T>(pattern, negative, lead);
  else if constexpr (T::overflow == Overflow::SAT_SYM) return sat_sym<T>(pattern, negative, lead);
  else if constexpr (T::overflow == Overflow::WRAP) return wrap<T>(pattern, negative, lead);
  else return wrap_sm<T>(pattern, negative, lead);
}

// ----------------------------------------------------------------- cast
// Whether SAT_SYM also refuses code_min (signed types never yield it).
template <class T> constexpr bool refuses_min = T::overflow == Overflow::SAT_SYM && T::is_signed;

// The code T stores for the exact value `value * 2**-(T::frac + drop)`.
// `value` is any integer up to __int128; the work happens in int64 when the
// source and T leave room for a carry there, else in __int128.
template <class T, class A> inline std::int64_t cast(A value, int drop) {
  using Work = typename std::conditional<(sizeof(A) > 8 || T::width >= 62), i128, std::int64_t>::type;
  const Work v = static_cast<Work>(value);
  const Work lo = T::code_min, hi = T::code_max;
  if (drop > 0) {
    const Work floor = shift_right(v, drop);
    const bool increment = round_increment<T::rounding>((floor & 1) != 0, bit(v, drop - 1), any_below(v, drop - 1),
                                                        v < 0);
    const Work rounded = floor + (increment ? 1 : 0);
    const bool below = refuses_min<T> ? rounded <= lo : rounded < lo;
    if (!below && rounded <= hi) return static_cast<std::int64_t>(rounded);
    return on_overflow<T>(static_cast<std::uint64_t>(rounded), rounded < 0, bit(floor, T::width));
  }
  // Zeros appended: v * 2**up, compared with the range without forming it (it may not fit).
  const int up = -drop;
  const Work top = shift_right(hi, up);  // v * 2**up > hi  <=>  v > floor(hi / 2**up)
  const bool below = refuses_min<T> ? v <= shift_right(lo, up)   // v * 2**up <= lo (lo is -2**(W-1))
                                    : v < -shift_right(static_cast<Work>(-lo), up);  // v < ceil(lo / 2**up)
  if (!below && v <= top) return v == 0 ? 0 : static_cast<std::int64_t>(v * (Work(1) << up));  // then up <= W
  const std::uint64_t pattern = up >= 64 ? 0 : static_cast<std::uint64_t>(v) << up;
  const bool lead = T::width >= up && bit(v, T::width - up);
  return on_overflow<T>(pattern, v < 0, lead);
}

}  // namespace qfx

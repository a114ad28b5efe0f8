// The cast over a run of values that share one drop, as the kernels use it:
// y[i] = cast<T>(value(i), drop) for i < n.
//
// For the common formats (every rounding; SAT, SAT_ZERO, SAT_SYM, and WRAP
// without saturation bits) and 0 <= drop < the lane's width, each value is
// rounded and saturated with a few branch-free integer operations in int32
// (sources of at most 32 bits, codes of at most 32) or int64 lanes, so the
// compiler vectorises the loop; the rounding increments are those of cast.h
// on 0/1 integers.  Every other mode, drop or width takes cast() per value.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cast.h"

namespace qfx {

// Whether the branch-free lane cast covers T's overflow mode.
template <class T>
constexpr bool lane_castable =
    T::overflow == Overflow::SAT || T::overflow == Overflow::SAT_ZERO || T::overflow == Overflow::SAT_SYM ||
    (T::overflow == Overflow::WRAP && T::sat_bits == 0);

// The lane for a source of type A cast to T: int32 or int64, void when neither holds both.
template <class T, class A>
using lane_t = typename std::conditional<
    (sizeof(A) <= 4 && T::width + !T::is_signed <= 32), std::int32_t,
    typename std::conditional<(sizeof(A) <= 8 && T::width + !T::is_signed <= 64), std::int64_t, void>::type>::type;

// floor(v / 2**drop) plus the rounding increment of T's mode, 1 <= drop < bits of L.
template <class T, class L> inline L lane_round(L v, int drop) {
  const L floor = v >> drop;
  const L half = (v >> (drop - 1)) & 1;
  const L rest = (v & ((L(1) << (drop - 1)) - 1)) != 0;
  const L odd = floor & 1, negative = v < 0;
  L increment = 0;
  if constexpr (T::rounding == Rounding::RND) increment = half;
  else if constexpr (T::rounding == Rounding::RND_ZERO) increment = half & (rest | negative);
  else if constexpr (T::rounding == Rounding::RND_MIN_INF) increment = half & rest;
  else if constexpr (T::rounding == Rounding::RND_INF) increment = half & (rest | (negative ^ 1));
  else if constexpr (T::rounding == Rounding::RND_CONV) increment = half & (rest | odd);
  else if constexpr (T::rounding == Rounding::TRN_ZERO) increment = negative & (half | rest);
  return floor + increment;  // TRN: floor
}

// The code T stores for a rounded value r (exact in L).
template <class T, class L> inline L lane_overflow(L r) {
  constexpr L hi = static_cast<L>(T::code_max);
  // SAT_SYM refuses code_min of a signed type: -code_max instead (code_min itself when W = 1).
  constexpr L lo = T::overflow == Overflow::SAT_SYM && T::is_signed && T::width > 1 ? -hi
                                                                                       : static_cast<L>(T::code_min);
  if constexpr (T::overflow == Overflow::WRAP) {
    constexpr int spare = static_cast<int>(sizeof(L) * 8) - T::width;
    using U = typename std::make_unsigned<L>::type;
    if constexpr (spare == 0) return r;
    else if constexpr (T::is_signed) return static_cast<L>(static_cast<U>(r) << spare) >> spare;
    else return static_cast<L>(static_cast<U>(r) & ((U(1) << T::width) - 1));
  } else if constexpr (T::overflow == Overflow::SAT_ZERO) {
    return (r < lo) | (r > hi) ? L(0) : r;
  } else {
    return r < lo ? lo : (r > hi ? hi : r);
  }
}

// y[i] = cast<T>(value(i), drop) for i < n; value(i) returns an A.
template <class T, class A, class F, class Y>
inline void cast_loop(int n, int drop, F&& value, Y* __restrict y) {
  using L = lane_t<T, A>;
  if constexpr (!std::is_void<L>::value && lane_castable<T>) {
    if (drop == 0) {
      for (int i = 0; i < n; ++i) y[i] = static_cast<Y>(lane_overflow<T, L>(static_cast<L>(value(i))));
      return;
    }
    if (drop > 0 && drop < static_cast<int>(sizeof(L) * 8)) {
      for (int i = 0; i < n; ++i) y[i] = static_cast<Y>(lane_overflow<T, L>(lane_round<T, L>(static_cast<L>(value(i)), drop)));
      return;
    }
  }
  for (int i = 0; i < n; ++i) y[i] = static_cast<Y>(cast<T>(static_cast<A>(value(i)), drop));
}

}  // namespace qfx

// Fused training-mode kernels, each one pass over memory (see qfx/fused/__init__.py).
//
// The cast: q = Q(r), r = max(v, floor) (floor 0 for a ReLU before the cast, else -inf), v = x * scale[c]
// + shift[c] (or v = x), Q the ap_fixed cast for the rounding modes RND_CONV, TRN, RND and the overflow
// modes SAT, SAT_ZERO, SAT_SYM, WRAP (with or without saturation bits): the code n = round(r * 2**F)
// with the formulas of qfx/cast_modes.h (those of qfx.functional.cast_codes, operation for operation),
// then the overflow mode, then q = n * 2**-F.  Its backward pass keeps the gradient where n lay in
// range (SAT_SYM: and was not the most negative code) and v > floor, and sums, in the same sweep, what
// the binary point and the per-channel scale and shift need.  A table holds the cast's constants, one
// row for the tensor or one per channel.
//
// What the cast leaves to the caller: outside SAT, a NaN, an infinity or a |r * 2**F| at or past
// `huge` (where the exact cast folds the value first) makes the forward pass return kFallback, and the
// caller casts with the exact cast (which refuses NaN and Inf).  With SAT, NaN stays NaN and
// infinities saturate, as the training-mode cast does.
//
// Batch statistics: per-channel mean and biased variance (one read pass, no temporaries), and
// the per-channel affine map their backward pass needs, added to another gradient in the same pass.
// BatchNorm's fold of the statistics into its scale and shift, with their casts: folding.h.
//
// Layout: element i belongs to channel (i / inner) % channels.  Compiled without -ffast-math and
// with -ffp-contract=off: x * scale + shift must round twice, as PyTorch's separate multiply and add
// do, and the rounding formulas step by step.  Sums are deterministic for a given thread count:
// per-thread partial sums, added in thread order.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "cast_modes.h"

namespace {

using namespace qfx_cast;

// Elements each thread of a team takes at least: a parallel region costs microseconds, a pass over this
// many elements about ten.
constexpr int64_t kParallelGrain = 1 << 15;
// Elements per OpenMP chunk, and at most per partial sum in the tensor's dtype (then added in double).
constexpr int64_t kChunk = 1 << 12;
// Columns of the cast table: 2**F, 2**-F, code_min, code_max, SAT_SYM's low code, code_min * 2**-F,
// code_max * 2**-F.
constexpr int kColumns = 7;
// Status bit of the forward pass: a value this pass leaves to the caller (nothing written is valid).
constexpr int kFallback = 1;

// One row of the table: the constants of one binary point.
template <class T>
struct Row {
    T scale, lsb;          // 2**F and 2**-F
    T code_min, code_max;  // the range of codes
    T low;                 // SAT_SYM's lower end: code_min | 1 (signed), 0 (unsigned)
    T value_min, value_max;  // the range of values: what the binary point's gradient saturates x to

    explicit Row(const T* r)
        : scale(r[0]), lsb(r[1]), code_min(r[2]), code_max(r[3]), low(r[4]), value_min(r[5]), value_max(r[6]) {}
};

// The per-call constants: rounding and overflow, the word, and three reals.
template <class T>
struct Modes {
    int rounding, overflow;
    Word word;
    T big;    // 2**(mantissa-1): half-rounding keeps |v| at or past it as it is
    T huge;   // outside SAT, |r * 2**F| at or past it goes back to the caller
    T floor;  // 0 after a ReLU, else -inf

    Modes(const int64_t* ints, const double* reals)
        : rounding(int(ints[0])), overflow(int(ints[1])), word(int(ints[2]), int(ints[3]), ints[4] != 0),
          big(T(reals[0])), huge(T(reals[1])), floor(T(reals[2])) {}
};

// As many threads as the element count keeps busy (at batch 8 a 16x32x32 activation takes 4).
int team_size(int64_t n, int threads) {
    return int(std::max<int64_t>(1, std::min<int64_t>(threads, n / kParallelGrain)));
}

// The table row of channel c: index[c] where the rows are chosen per channel, else the one row or row c.
inline int64_t row_of(const int32_t* index, int64_t rows, int64_t c) {
    return index != nullptr ? index[c] : (rows == 1 ? 0 : c);
}

// Calls run(begin, end, channel) over the maximal runs of [begin, end) that share a channel.
template <class Run>
inline void for_each_run(int64_t begin, int64_t end, int64_t channels, int64_t inner, Run run) {
    for (int64_t i = begin; i < end;) {
        const int64_t block = i / inner;
        const int64_t stop = std::min(end, (block + 1) * inner);
        run(i, stop, block % channels);
        i = stop;
    }
}

// Calls run(begin, end, channel, thread) over every run, chunks split statically among the team.
template <class Run>
void parallel_runs(int64_t n, int64_t channels, int64_t inner, int team, Run run) {
#pragma omp parallel num_threads(team) if (team > 1)
    {
        const int t = omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t chunk = 0; chunk < n; chunk += kChunk) {
            for_each_run(chunk, std::min(n, chunk + kChunk), channels, inner,
                         [&](int64_t b, int64_t e, int64_t c) { run(b, e, c, t); });
        }
    }
}

// Adds the team's rows of partial sums (team x width) into out[width], in thread order.
void reduce_rows(const std::vector<double>& rows, int team, int64_t width, double* out) {
    for (int64_t j = 0; j < width; ++j) {
        double total = 0;
        for (int t = 0; t < team; ++t) total += rows[t * width + j];
        out[j] = total;
    }
}

// ------------------------------------------------------------------------------------------ the cast
// The loops over one run take their pointers as arguments: pointers captured by a lambda are
// reloaded every iteration, and the vectorizer falls back to gathers.  The first loop is branch-free,
// so that it vectorizes; WRAP then redoes, in int64, the codes outside, if the run has any.
template <class T, int R, int O, int Rule, bool Affine>
int cast_forward_run(const T* __restrict x, T* __restrict q, int64_t n, T s, T sh, const Row<T>& k,
                     const Modes<T>& m) {
    // The constants as locals: read through the references, they would be reloaded every iteration.
    const T floor = m.floor, big = m.big, huge = m.huge, scale = k.scale, lsb = k.lsb, code_min = k.code_min;
    const T code_max = k.code_max, low = k.low;
    constexpr bool kWraps = O == WRAP;
    bool inside[kWraps ? kChunk : 1];  // a run lies within one chunk
    int bad = 0, outside = 0;
#pragma omp simd reduction(| : bad, outside)
    for (int64_t i = 0; i < n; ++i) {
        const T v = Affine ? x[i] * s + sh : x[i];
        const T u = (v < floor ? floor : v) * scale;  // NaN stays NaN
        if constexpr (O != SAT) bad |= !(std::fabs(u) < huge);  // also true for NaN
        T c = round_code<R>(u, big);
        if constexpr (O == SAT) {
            c = c < code_min ? code_min : c;
            c = c > code_max ? code_max : c;  // NaN stays NaN, as with torch.clamp
        } else if constexpr (O == SAT_SYM) {
            c = c < low ? low : c;
            c = c > code_max ? code_max : c;
        } else if constexpr (O == SAT_ZERO) {
            c = (c >= code_min) & (c <= code_max) ? c : T(0);
        } else {
            const bool in = (c >= code_min) & (c <= code_max);
            inside[kWraps ? i : 0] = in;
            outside |= !in;
        }
        q[i] = c * lsb;  // exact: a power of two
    }
    if constexpr (kWraps) {
        // The codes outside, in int64.
        if (outside && !bad) {
            for_each_outside(inside, n, [&](int64_t i) {
                const T v = Affine ? x[i] * s + sh : x[i];
                const T c = round_code<R>((v < floor ? floor : v) * scale, big);
                q[i] = T(wrapped<Rule>(static_cast<int64_t>(c), 0, m.word)) * lsb;
            });
        }
    }
    return bad ? kFallback : 0;
}

template <class T, int R, int O, int Rule>
int cast_forward(const T* x, T* q, int64_t n, int64_t channels, int64_t inner, const T* scale, const T* shift,
                 const T* table, int64_t rows, const int32_t* index, const Modes<T>& m, int threads) {
    int status = 0;
    const int team = team_size(n, threads);
    std::vector<int> seen(team, 0);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const Row<T> k(table + row_of(index, rows, c) * kColumns);
        seen[t] |= scale != nullptr ? cast_forward_run<T, R, O, Rule, true>(x + b, q + b, e - b, scale[c], shift[c], k, m)
                                    : cast_forward_run<T, R, O, Rule, false>(x + b, q + b, e - b, T(1), T(0), k, m);
    });
    for (int s : seen) status |= s;
    return status;
}

template <class T, int R>
int forward_overflow(const T* x, T* q, int64_t n, int64_t channels, int64_t inner, const T* scale,
                     const T* shift, const T* table, int64_t rows, const int32_t* index, const Modes<T>& m,
                     int threads) {
    switch (m.overflow) {
        case SAT: return cast_forward<T, R, SAT, PLAIN>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
        case SAT_ZERO:
            return cast_forward<T, R, SAT_ZERO, PLAIN>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
        case SAT_SYM:
            return cast_forward<T, R, SAT_SYM, PLAIN>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
        case WRAP:
            return m.word.sat_bits == 0
                       ? cast_forward<T, R, WRAP, PLAIN>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads)
                       : cast_forward<T, R, WRAP, WRAP_N>(x, q, n, channels, inner, scale, shift, table, rows, index, m,
                                                          threads);
    }
    return kFallback;
}

template <class T>
int cast_forward(const T* x, T* q, int64_t n, int64_t channels, int64_t inner, const T* scale, const T* shift,
                 const T* table, int64_t rows, const int32_t* index, const int64_t* ints, const double* reals,
                 int threads) {
    const Modes<T> m(ints, reals);
    switch (m.rounding) {
        case RND_CONV: return forward_overflow<T, RND_CONV>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
        case TRN: return forward_overflow<T, TRN>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
        case RND: return forward_overflow<T, RND>(x, q, n, channels, inner, scale, shift, table, rows, index, m, threads);
    }
    return kFallback;
}

// x where keep, else +0.0, as a bitwise and (a select here becomes slow masked stores).
template <class T>
inline T keep_if(bool keep, T x) {
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U bits;
    std::memcpy(&bits, &x, sizeof bits);
    bits &= U(0) - U(keep);
    std::memcpy(&x, &bits, sizeof bits);
    return x;
}

// Sums of one run: sum g*d, sum g'*r, sum g'*x, sum g' (g' the gradient kept by the range test, d the
// value q where the code lay in range and the saturated r outside).
struct Sums {
    double gq = 0, gv = 0, gx = 0, g = 0;
};

template <class T, int R, bool Sym, bool Affine>
Sums cast_backward_run(const T* __restrict g, const T* __restrict x, T* __restrict grad_x, int64_t n, T s, T sh,
                       const Row<T>& k, const Modes<T>& m) {
    // The constants as locals: read through the references, they would be reloaded every iteration (the
    // stores might alias them), and the loop would not vectorize as well.
    const T floor = m.floor, big = m.big, scale = k.scale, lsb = k.lsb, code_min = k.code_min;
    const T code_max = k.code_max, value_min = k.value_min, value_max = k.value_max;
    // A run is at most kChunk long: partial sums in T lose little before they go into double.
    T gq = 0, gv = 0, gx = 0, gs = 0;
#pragma omp simd reduction(+ : gq, gv, gx, gs)
    for (int64_t i = 0; i < n; ++i) {
        const T xi = x[i];
        const T v = Affine ? xi * s + sh : xi;
        const T r = v < floor ? floor : v;
        const T c = round_code<R>(r * scale, big);
        const bool in = (c >= code_min) & (c <= code_max) & (!Sym | (c != code_min));
        const T gi = g[i];
        const T kept = keep_if(in & (v > floor), gi);
        const T saturated = r < value_min ? value_min : (r > value_max ? value_max : r);
        grad_x[i] = Affine ? kept * s : kept;
        gq += gi * (in ? c * lsb : saturated);
        gv += kept * r;
        gx += kept * xi;
        gs += kept;
    }
    return Sums{gq, gv, gx, gs};
}

// point[p] = weight[row] * (sum g*d - sum g'*r) per binary point p (what its gradient is made of, in
// float): one per table row, or one per channel where index chooses each channel's row; dscale[c] = sum
// g'*x and dshift[c] = sum g' per channel (with a scale).  Returns 1 where some point is not finite.
template <class T, int R, bool Sym>
int cast_backward(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner, const T* scale,
                  const T* shift, const T* table, int64_t rows, const int32_t* index, const Modes<T>& m,
                  const double* weight, float* point, T* dscale, T* dshift, int threads) {
    const int team = team_size(n, threads);
    const int64_t points_count = index != nullptr ? channels : rows;
    std::vector<double> points(team * points_count, 0.0), ds(team * channels, 0.0), dsh(team * channels, 0.0);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const int64_t row = row_of(index, rows, c);
        const Row<T> k(table + row * kColumns);
        const Sums s = scale != nullptr
                           ? cast_backward_run<T, R, Sym, true>(g + b, x + b, grad_x + b, e - b, scale[c], shift[c], k, m)
                           : cast_backward_run<T, R, Sym, false>(g + b, x + b, grad_x + b, e - b, T(1), T(0), k, m);
        points[t * points_count + (index != nullptr ? c : row)] += s.gq - s.gv;
        ds[t * channels + c] += s.gx;
        dsh[t * channels + c] += s.g;
    });
    std::vector<double> total(std::max(points_count, channels));
    reduce_rows(points, team, points_count, total.data());
    int status = 0;
    for (int64_t p = 0; p < points_count; ++p) {
        point[p] = float(weight[index != nullptr ? index[p] : p] * total[p]);
        status |= !std::isfinite(point[p]);
    }
    if (scale != nullptr) {
        reduce_rows(ds, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dscale[c] = T(total[c]);
        reduce_rows(dsh, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dshift[c] = T(total[c]);
    }
    return status;
}

template <class T, int R>
int backward_range(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner,
                   const T* scale, const T* shift, const T* table, int64_t rows, const int32_t* index,
                   const Modes<T>& m, const double* weight, float* point, T* dscale, T* dshift, int threads) {
    if (m.overflow == SAT_SYM && m.word.is_signed) {
        return cast_backward<T, R, true>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, m,
                                         weight, point, dscale, dshift, threads);
    }
    return cast_backward<T, R, false>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, m, weight,
                                      point, dscale, dshift, threads);
}

template <class T>
int cast_backward(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner, const T* scale,
                  const T* shift, const T* table, int64_t rows, const int32_t* index, const int64_t* ints,
                  const double* reals, const double* weight, float* point, T* dscale, T* dshift, int threads) {
    const Modes<T> m(ints, reals);
    switch (m.rounding) {
        case RND_CONV:
            return backward_range<T, RND_CONV>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, m,
                                               weight, point, dscale, dshift, threads);
        case TRN:
            return backward_range<T, TRN>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, m,
                                          weight, point, dscale, dshift, threads);
        case RND:
            return backward_range<T, RND>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, m,
                                          weight, point, dscale, dshift, threads);
    }
    return 0;
}

// ------------------------------------------------------------------------------- binary points
// A learned binary point's pending move folded in: bits = clamp(bits + k * move, lo, hi) (the sum rounded
// once in T, k * move exact), move = 0.  Returns kNotFinite, with nothing written, where some sum is not
// finite, else kMoved where some move was not zero (and was folded), else 0 (nothing written).
constexpr int kNotFinite = 1, kMoved = 2;

template <class T>
int fold_points(T* bits, T* move, int64_t n, double k, double lo, double hi) {
    bool moved = false;
    for (int64_t i = 0; i < n; ++i) {
        if (move[i] == T(0)) continue;
        moved = true;
        const T step = T(k) * move[i];
        if (!std::isfinite(T(bits[i] + step))) return kNotFinite;
    }
    if (!moved) return 0;
    for (int64_t i = 0; i < n; ++i) {
        const T step = T(k) * move[i];
        const T b = bits[i] + step;
        bits[i] = b < T(lo) ? T(lo) : (b > T(hi) ? T(hi) : b);
        move[i] = T(0);
    }
    return kMoved;
}

// index[i] = the table row of binary point i: F - first with F = width - round(bits[i]) (half to even, as
// torch.round); returns 1 where some F lies outside the count rows from first (or bits[i] is NaN).
template <class T>
int point_rows(const T* bits, int64_t n, int64_t width, int64_t first, int64_t count, int32_t* index) {
    for (int64_t i = 0; i < n; ++i) {
        const double row = double(width) - double(std::nearbyint(bits[i])) - double(first);
        if (!(row >= 0 && row < double(count))) return 1;
        index[i] = int32_t(row);
    }
    return 0;
}

// ------------------------------------------------------------------------------- batch statistics
template <class T>
T sum_run(const T* x, int64_t n) {
    T total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += x[i];
    return total;
}

template <class T>
T squared_deviation_run(const T* x, int64_t n, T mean) {
    T total = 0;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < n; ++i) total += (x[i] - mean) * (x[i] - mean);
    return total;
}

template <class T, bool Add>
void affine_run(const T* x, const T* z, T* y, int64_t n, T a, T b) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = Add ? (x[i] * a + b) + z[i] : x[i] * a + b;
}

// Count, mean and sum of squared deviations of some values; merge() adds another part (Chan et al.).
struct Moments {
    double count = 0, mean = 0, m2 = 0;

    void merge(const Moments& other) {
        if (other.count == 0) return;
        const double total = count + other.count, delta = other.mean - mean;
        mean += delta * (other.count / total);
        m2 += other.m2 + delta * delta * (count * other.count / total);
        count = total;
    }
};

// The moments of one run: its own two passes read it from cache.
template <class T>
Moments run_moments(const T* x, int64_t n) {
    const double count = double(n);
    const double run_mean = double(sum_run(x, n)) / count;
    const double m2 = double(squared_deviation_run(x, n, T(run_mean)));
    // The deviations were taken from run_mean rounded to T: correct the sum for that offset.
    const double offset = double(T(run_mean)) - run_mean;
    return Moments{count, run_mean, m2 - count * offset * offset};
}

// mean[c] and var[c] from the team's parts (team x channels), merged in thread order, in double, then each
// rounded once to T (as PyTorch's conversion of the double results rounds them).
template <class T>
void merge_moments(const std::vector<Moments>& parts, int team, int64_t channels, T* mean, T* var) {
    for (int64_t c = 0; c < channels; ++c) {
        Moments total;
        for (int t = 0; t < team; ++t) total.merge(parts[t * channels + c]);
        mean[c] = T(total.mean);
        var[c] = T(total.count > 0 ? total.m2 / total.count : 0.0);
    }
}

// mean[c] and the biased variance var[c] = mean((x - mean)**2), in double rounded to T, in one pass over
// memory: each run's own two passes read it from cache, and the runs' moments are merged in order.
template <class T>
void channel_moments(const T* x, int64_t n, int64_t channels, int64_t inner, T* mean, T* var,
                     int threads) {
    const int team = team_size(n, threads);
    std::vector<Moments> parts(team * channels);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        parts[t * channels + c].merge(run_moments(x + b, e - b));
    });
    merge_moments(parts, team, channels, mean, var);
}

// y = x * a[c] + b[c], plus z where z is given.
template <class T>
void channel_affine(const T* x, const T* z, T* y, int64_t n, int64_t channels, int64_t inner, const T* a,
                    const T* b, int threads) {
    parallel_runs(n, channels, inner, team_size(n, threads), [&](int64_t begin, int64_t end, int64_t c, int) {
        if (z != nullptr) {
            affine_run<T, true>(x + begin, z + begin, y + begin, end - begin, a[c], b[c]);
        } else {
            affine_run<T, false>(x + begin, nullptr, y + begin, end - begin, a[c], b[c]);
        }
    });
}

#include "chained.h"
#include "folding.h"

}  // namespace

#define QFX_FUSED_ENTRY_POINTS(T, SUFFIX)                                                                       \
    extern "C" int qfx_cast_forward_##SUFFIX(const T* x, T* q, int64_t n, int64_t channels, int64_t inner,      \
                                             const T* scale, const T* shift, const T* table, int64_t rows,     \
                                             const int32_t* index, const int64_t* ints, const double* reals,   \
                                             int threads) {                                                    \
        return cast_forward<T>(x, q, n, channels, inner, scale, shift, table, rows, index, ints, reals,        \
                               threads);                                                                       \
    }                                                                                                          \
    extern "C" int qfx_cast_backward_##SUFFIX(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels,   \
                                              int64_t inner, const T* scale, const T* shift, const T* table,   \
                                              int64_t rows, const int32_t* index, const int64_t* ints,         \
                                              const double* reals, const double* weight, float* point,         \
                                              T* dscale, T* dshift, int threads) {                             \
        return cast_backward<T>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, index, ints,      \
                                reals, weight, point, dscale, dshift, threads);                                \
    }                                                                                                          \
    extern "C" int qfx_pair_forward_##SUFFIX(const T* x, T* q1, T* q2, int64_t n, int64_t channels,            \
                                             int64_t inner, const T* scale, const T* shift, const T* table1,   \
                                             int64_t rows1, const int64_t* ints1, const double* reals1,        \
                                             const T* table2, const int64_t* ints2, const double* reals2,      \
                                             int threads) {                                                    \
        return pair_forward<T>(x, q1, q2, n, channels, inner, scale, shift, table1, rows1, ints1, reals1,      \
                               table2, ints2, reals2, threads);                                                \
    }                                                                                                          \
    extern "C" int qfx_pair_backward_##SUFFIX(const T* g1, const T* g2, const T* x, T* grad_x, int64_t n,       \
                                              int64_t channels, int64_t inner, const T* scale, const T* shift, \
                                              const T* table1, int64_t rows1, const int64_t* ints1,            \
                                              const double* reals1, const T* table2, const int64_t* ints2,     \
                                              const double* reals2, const double* weight1,                     \
                                              const double* weight2, float* point1, float* point2, T* dscale,  \
                                              T* dshift, int threads) {                                        \
        return pair_backward<T>(g1, g2, x, grad_x, n, channels, inner, scale, shift, table1, rows1, ints1,     \
                                reals1, table2, ints2, reals2, weight1, weight2, point1, point2, dscale,       \
                                dshift, threads);                                                              \
    }                                                                                                          \
    extern "C" int qfx_fold_points_##SUFFIX(T* bits, T* move, int64_t n, double k, double lo, double hi) {      \
        return fold_points<T>(bits, move, n, k, lo, hi);                                                       \
    }                                                                                                          \
    extern "C" int qfx_point_rows_##SUFFIX(const T* bits, int64_t n, int64_t width, int64_t first,             \
                                           int64_t count, int32_t* index) {                                    \
        return point_rows<T>(bits, n, width, first, count, index);                                             \
    }                                                                                                          \
    extern "C" void qfx_channel_moments_##SUFFIX(const T* x, int64_t n, int64_t channels, int64_t inner,        \
                                                 T* mean, T* var, int threads) {                               \
        channel_moments<T>(x, n, channels, inner, mean, var, threads);                                         \
    }                                                                                                          \
    extern "C" int qfx_cast_moments_##SUFFIX(const T* x, T* q, int64_t n, int64_t channels, int64_t inner,      \
                                             const T* table, const int64_t* ints, const double* reals,         \
                                             T* mean, T* var, int threads) {                                   \
        return cast_moments<T>(x, q, n, channels, inner, table, ints, reals, mean, var, threads);             \
    }                                                                                                          \
    extern "C" int qfx_cast_moments_backward_##SUFFIX(const T* grad_q, const T* x, T* grad_x, int64_t n,       \
                                                      int64_t channels, int64_t inner, const T* grad_mean,     \
                                                      const T* grad_var, const T* mean, const T* table,        \
                                                      const int64_t* ints, const double* reals,                \
                                                      const double* weight, float* point, int threads) {       \
        return cast_moments_backward<T>(grad_q, x, grad_x, n, channels, inner, grad_mean, grad_var, mean,      \
                                        table, ints, reals, weight, point, threads);                           \
    }                                                                                                          \
    extern "C" int qfx_fold_forward_##SUFFIX(const T* mean, const T* r, const T* gamma, const T* beta,           \
                                            int64_t channels, T* scale, T* shift, T* qscale, T* qshift,        \
                                            const T* bits1, const T* table1, int64_t first1, int64_t count1,   \
                                            const int64_t* ints1, const double* reals1, int32_t* index1,       \
                                            const T* bits2, const T* table2, int64_t first2, int64_t count2,   \
                                            const int64_t* ints2, const double* reals2, int32_t* index2) {     \
        return fold_forward<T>(mean, r, gamma, beta, channels, scale, shift, qscale, qshift,                   \
                               FoldCast<T>{bits1, table1, first1, count1, ints1, reals1, index1},              \
                               FoldCast<T>{bits2, table2, first2, count2, ints2, reals2, index2});             \
    }                                                                                                          \
    extern "C" int qfx_fold_backward_##SUFFIX(const T* grad_qscale, const T* grad_qshift, const T* scale,       \
                                             const T* shift, const T* mean, const T* r, const T* gamma,        \
                                             int64_t channels, const T* table1, int64_t count1,                \
                                             const int64_t* ints1, const double* reals1, int32_t* index1,      \
                                             const double* weight1, float* point1, const T* table2,            \
                                             int64_t count2, const int64_t* ints2, const double* reals2,       \
                                             int32_t* index2, const double* weight2, float* point2,            \
                                             T* grad_mean, T* grad_var, T* grad_gamma, T* grad_beta) {         \
        return fold_backward<T>(grad_qscale, grad_qshift, scale, shift, mean, r, gamma, channels,              \
                                FoldCast<T>{nullptr, table1, 0, count1, ints1, reals1, index1}, weight1,       \
                                point1, FoldCast<T>{nullptr, table2, 0, count2, ints2, reals2, index2},        \
                                weight2, point2, grad_mean, grad_var, grad_gamma, grad_beta);                  \
    }                                                                                                          \
    extern "C" void qfx_channel_affine_##SUFFIX(const T* x, const T* z, T* y, int64_t n, int64_t channels,      \
                                                int64_t inner, const T* a, const T* b, int threads) {          \
        channel_affine<T>(x, z, y, n, channels, inner, a, b, threads);                                         \
    }

QFX_FUSED_ENTRY_POINTS(float, f32)
QFX_FUSED_ENTRY_POINTS(double, f64)

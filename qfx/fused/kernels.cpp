// Fused training-mode kernels, each one pass over memory (see qfx/fused/__init__.py).
//
// The cast: q = clamp((v + M) - M, lo, hi) with v = x * scale[c] + shift[c] (or v = x).  The float
// addition of M = 1.5 * 2**(m - 1 - F) rounds v to the nearest multiple of the LSB, ties to even
// (qfx.fused.nearest_even states when this holds); the clamp saturates.  Its backward pass keeps
// the gradient where below < v < above (in range after rounding) and sums, in the same sweep, what
// the binary point and the per-channel scale and shift need.  A table holds the cast's constants,
// one row for the tensor or one per channel.
//
// Batch statistics: per-channel mean and biased variance (one read pass, no temporaries), and
// the per-channel affine map their backward pass needs, added to another gradient in the same pass.
//
// Layout: element i belongs to channel (i / inner) % channels.  Compiled without -ffast-math and
// with -ffp-contract=off: (v + M) - M must be two rounded operations, and x * scale + shift must
// round twice, as PyTorch's separate multiply and add do.  Sums are deterministic for a given
// thread count: per-thread partial sums, added in thread order.

#include <algorithm>
#include <cstdint>
#include <vector>

#include <omp.h>

namespace {

// Elements below which one thread does the work: a parallel region costs microseconds.
constexpr int64_t kParallelGrain = 1 << 17;
// Elements per OpenMP chunk, and at most per partial sum in the tensor's dtype (then added in double).
constexpr int64_t kChunk = 1 << 12;
// Columns of the cast table.
constexpr int kColumns = 5;

template <class T>
struct Cast {
    T magic, lo, hi;  // rounding constant and saturation bounds of the values
    T below, above;   // open interval of v whose gradient passes

    explicit Cast(const T* row) : magic(row[0]), lo(row[1]), hi(row[2]), below(row[3]), above(row[4]) {}
};

template <class T>
inline T round_and_saturate(T v, const Cast<T>& c) {
    T r = (v + c.magic) - c.magic;
    return r < c.lo ? c.lo : (r > c.hi ? c.hi : r);  // NaN stays NaN, as with torch.clamp
}

int team_size(int64_t n, int threads) { return n > kParallelGrain ? std::max(threads, 1) : 1; }

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
// reloaded every iteration, and the vectorizer falls back to gathers.
template <class T, bool Affine>
void cast_forward_run(const T* x, T* q, int64_t n, T s, T sh, const Cast<T>& k) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) q[i] = round_and_saturate(Affine ? x[i] * s + sh : x[i], k);
}

template <class T>
void cast_forward(const T* x, T* q, int64_t n, int64_t channels, int64_t inner, const T* scale, const T* shift,
                  const T* table, int64_t rows, int threads) {
    parallel_runs(n, channels, inner, team_size(n, threads), [&](int64_t b, int64_t e, int64_t c, int) {
        const Cast<T> k(table + (rows == 1 ? 0 : c) * kColumns);
        if (scale != nullptr) {
            cast_forward_run<T, true>(x + b, q + b, e - b, scale[c], shift[c], k);
        } else {
            cast_forward_run<T, false>(x + b, q + b, e - b, T(1), T(0), k);
        }
    });
}

// Sums of one run: sum g*q, sum g'*v, sum g'*x, sum g' (g' the gradient kept by the range test).
struct Sums {
    double gq = 0, gv = 0, gx = 0, g = 0;
};

template <class T, bool Affine>
Sums cast_backward_run(const T* g, const T* x, T* grad_x, int64_t n, T s, T sh, const Cast<T>& k) {
    // A run is at most kChunk long: partial sums in T lose little before they go into double.
    T gq = 0, gv = 0, gx = 0, gs = 0;
#pragma omp simd reduction(+ : gq, gv, gx, gs)
    for (int64_t i = 0; i < n; ++i) {
        const T xi = x[i];
        const T v = Affine ? xi * s + sh : xi;
        const T gi = g[i];
        const T kept = (v > k.below && v < k.above) ? gi : T(0);
        grad_x[i] = Affine ? kept * s : kept;
        gq += gi * round_and_saturate(v, k);
        gv += kept * v;
        gx += kept * xi;
        gs += kept;
    }
    return Sums{gq, gv, gx, gs};
}

// point[r] = weight[r] * (sum g*q - sum g'*v) per table row (what the binary point's gradient is made
// of, in float); dscale[c] = sum g'*x and dshift[c] = sum g' per channel (with a scale).
template <class T>
void cast_backward(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner, const T* scale,
                   const T* shift, const T* table, int64_t rows, const double* weight, float* point, T* dscale,
                   T* dshift, int threads) {
    const int team = team_size(n, threads);
    std::vector<double> points(team * rows, 0.0), ds(team * channels, 0.0), dsh(team * channels, 0.0);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const int64_t row = rows == 1 ? 0 : c;
        const Cast<T> k(table + row * kColumns);
        const Sums s = scale != nullptr
                           ? cast_backward_run<T, true>(g + b, x + b, grad_x + b, e - b, scale[c], shift[c], k)
                           : cast_backward_run<T, false>(g + b, x + b, grad_x + b, e - b, T(1), T(0), k);
        points[t * rows + row] += s.gq - s.gv;
        ds[t * channels + c] += s.gx;
        dsh[t * channels + c] += s.g;
    });
    std::vector<double> total(std::max(rows, channels));
    reduce_rows(points, team, rows, total.data());
    for (int64_t r = 0; r < rows; ++r) point[r] = float(weight[r] * total[r]);
    if (scale != nullptr) {
        reduce_rows(ds, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dscale[c] = T(total[c]);
        reduce_rows(dsh, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dshift[c] = T(total[c]);
    }
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

// mean[c] and the biased variance var[c] = mean((x - mean)**2), in double, in one pass over memory:
// each run's own two passes read it from cache, and the runs' moments are merged in order.
template <class T>
void channel_moments(const T* x, int64_t n, int64_t channels, int64_t inner, double* mean, double* var,
                     int threads) {
    const int team = team_size(n, threads);
    std::vector<Moments> parts(team * channels);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const double count = double(e - b);
        const double run_mean = double(sum_run(x + b, e - b)) / count;
        const double m2 = double(squared_deviation_run(x + b, e - b, T(run_mean)));
        // The deviations were taken from run_mean rounded to T: correct the sum for that offset.
        const double offset = double(T(run_mean)) - run_mean;
        parts[t * channels + c].merge(Moments{count, run_mean, m2 - count * offset * offset});
    });
    for (int64_t c = 0; c < channels; ++c) {
        Moments total;
        for (int t = 0; t < team; ++t) total.merge(parts[t * channels + c]);
        mean[c] = total.mean;
        var[c] = total.count > 0 ? total.m2 / total.count : 0.0;
    }
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

}  // namespace

#define QFX_FUSED_ENTRY_POINTS(T, SUFFIX)                                                                       \
    extern "C" void qfx_cast_forward_##SUFFIX(const T* x, T* q, int64_t n, int64_t channels, int64_t inner,     \
                                              const T* scale, const T* shift, const T* table, int64_t rows,    \
                                              int threads) {                                                   \
        cast_forward<T>(x, q, n, channels, inner, scale, shift, table, rows, threads);                         \
    }                                                                                                          \
    extern "C" void qfx_cast_backward_##SUFFIX(const T* g, const T* x, T* grad_x, int64_t n, int64_t channels,  \
                                               int64_t inner, const T* scale, const T* shift, const T* table,  \
                                               int64_t rows, const double* weight, float* point, T* dscale,    \
                                               T* dshift, int threads) {                                       \
        cast_backward<T>(g, x, grad_x, n, channels, inner, scale, shift, table, rows, weight, point, dscale,   \
                         dshift, threads);                                                                     \
    }                                                                                                          \
    extern "C" void qfx_channel_moments_##SUFFIX(const T* x, int64_t n, int64_t channels, int64_t inner,        \
                                                 double* mean, double* var, int threads) {                     \
        channel_moments<T>(x, n, channels, inner, mean, var, threads);                                         \
    }                                                                                                          \
    extern "C" void qfx_channel_affine_##SUFFIX(const T* x, const T* z, T* y, int64_t n, int64_t channels,      \
                                                int64_t inner, const T* a, const T* b, int threads) {          \
        channel_affine<T>(x, z, y, n, channels, inner, a, b, threads);                                         \
    }

QFX_FUSED_ENTRY_POINTS(float, f32)
QFX_FUSED_ENTRY_POINTS(double, f64)

// Casts chained with what comes after them, in one pass each way (see qfx/fused/__init__.py): included
// by kernels.cpp inside its namespace, after the single cast, its runs and the batch statistics it
// builds on (qfx.cast_native.kernel_source inlines it: one translation unit).

// ------------------------------------------------------------------------------- two casts in a row
// q1 = Q1(v), q2 = Q2(max(q1, 0)): a cast, then a ReLU and a second cast (a BatchNorm's or a sum's output,
// then a ReLU's), in one pass each way.  Each run of the pair is the single cast's run twice, the second
// reading what the first wrote while it is still in cache, so the values and the input gradients are the
// single casts' bit for bit.  The runs are those of the first cast's layout; the second cast's sums, added
// per run, differ from a separate pass's in summation order only.
template <class T>
using ForwardRun = int (*)(const T*, T*, int64_t, T, T, const Row<T>&, const Modes<T>&);
template <class T>
using BackwardRun = Sums (*)(const T*, const T*, T*, int64_t, T, T, const Row<T>&, const Modes<T>&);

template <class T, int R, bool Affine>
ForwardRun<T> forward_run_of(const Modes<T>& m) {
    switch (m.overflow) {
        case SAT: return cast_forward_run<T, R, SAT, PLAIN, Affine>;
        case SAT_ZERO: return cast_forward_run<T, R, SAT_ZERO, PLAIN, Affine>;
        case SAT_SYM: return cast_forward_run<T, R, SAT_SYM, PLAIN, Affine>;
        case WRAP:
            return m.word.sat_bits == 0 ? cast_forward_run<T, R, WRAP, PLAIN, Affine>
                                        : cast_forward_run<T, R, WRAP, WRAP_N, Affine>;
    }
    return nullptr;
}

template <class T, bool Affine>
ForwardRun<T> forward_run(const Modes<T>& m) {
    switch (m.rounding) {
        case RND_CONV: return forward_run_of<T, RND_CONV, Affine>(m);
        case TRN: return forward_run_of<T, TRN, Affine>(m);
        case RND: return forward_run_of<T, RND, Affine>(m);
    }
    return nullptr;
}

template <class T, int R, bool Affine>
BackwardRun<T> backward_run_of(const Modes<T>& m) {
    return m.overflow == SAT_SYM && m.word.is_signed ? cast_backward_run<T, R, true, Affine>
                                                     : cast_backward_run<T, R, false, Affine>;
}

template <class T, bool Affine>
BackwardRun<T> backward_run(const Modes<T>& m) {
    switch (m.rounding) {
        case RND_CONV: return backward_run_of<T, RND_CONV, Affine>(m);
        case TRN: return backward_run_of<T, TRN, Affine>(m);
        case RND: return backward_run_of<T, RND, Affine>(m);
    }
    return nullptr;
}

// The pair's forward pass: q1 and q2 written, x read once.  Tables: the first cast's (one row, or one per
// channel along the layout's channels), the second's one row.
template <class T>
int pair_forward(const T* x, T* q1, T* q2, int64_t n, int64_t channels, int64_t inner, const T* scale,
                 const T* shift, const T* table1, int64_t rows1, const int64_t* ints1, const double* reals1,
                 const T* table2, const int64_t* ints2, const double* reals2, int threads) {
    const Modes<T> m1(ints1, reals1), m2(ints2, reals2);
    const ForwardRun<T> first = scale != nullptr ? forward_run<T, true>(m1) : forward_run<T, false>(m1);
    const ForwardRun<T> second = forward_run<T, false>(m2);
    if (first == nullptr || second == nullptr) return kFallback;
    const Row<T> k2(table2);
    const int team = team_size(n, threads);
    std::vector<int> seen(team, 0);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const Row<T> k1(table1 + row_of(nullptr, rows1, c) * kColumns);
        const T s = scale != nullptr ? scale[c] : T(1), sh = scale != nullptr ? shift[c] : T(0);
        seen[t] |= first(x + b, q1 + b, e - b, s, sh, k1, m1);
        seen[t] |= second(q1 + b, q2 + b, e - b, T(1), T(0), k2, m2);
    });
    int status = 0;
    for (int s : seen) status |= s;
    return status;
}

// The pair's backward pass from g2 = dL/dq2 (and g1 = dL/dq1 where q1 is used elsewhere too, else null):
// per run, q1 recomputed into scratch, the second cast's backward run gives dL/dq1 (plus g1), the
// first's gives grad_x.  point1[row] and point2[0] as cast_backward's point; dscale, dshift per channel.
template <class T>
int pair_backward(const T* g1, const T* g2, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner,
                  const T* scale, const T* shift, const T* table1, int64_t rows1, const int64_t* ints1,
                  const double* reals1, const T* table2, const int64_t* ints2, const double* reals2,
                  const double* weight1, const double* weight2, float* point1, float* point2, T* dscale,
                  T* dshift, int threads) {
    const Modes<T> m1(ints1, reals1), m2(ints2, reals2);
    const bool affine = scale != nullptr;
    const ForwardRun<T> first = affine ? forward_run<T, true>(m1) : forward_run<T, false>(m1);
    const BackwardRun<T> first_back = affine ? backward_run<T, true>(m1) : backward_run<T, false>(m1);
    const BackwardRun<T> second_back = backward_run<T, false>(m2);
    if (first == nullptr || first_back == nullptr || second_back == nullptr) return 1;
    const Row<T> k2(table2);
    const int team = team_size(n, threads);
    std::vector<T> scratch(size_t(team) * 2 * kChunk);
    std::vector<double> points1(team * rows1, 0.0), points2(team, 0.0), ds(team * channels, 0.0),
        dsh(team * channels, 0.0);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        const int64_t len = e - b, row = row_of(nullptr, rows1, c);
        const Row<T> k1(table1 + row * kColumns);
        const T s = affine ? scale[c] : T(1), sh = affine ? shift[c] : T(0);
        T* q1 = scratch.data() + size_t(t) * 2 * kChunk;
        T* grad_q1 = q1 + kChunk;
        first(x + b, q1, len, s, sh, k1, m1);
        const Sums second = second_back(g2 + b, q1, grad_q1, len, T(1), T(0), k2, m2);
        if (g1 != nullptr) {
            const T* other = g1 + b;
#pragma omp simd
            for (int64_t i = 0; i < len; ++i) grad_q1[i] += other[i];
        }
        const Sums sums = first_back(grad_q1, x + b, grad_x + b, len, s, sh, k1, m1);
        points2[t] += second.gq - second.gv;
        points1[t * rows1 + row] += sums.gq - sums.gv;
        ds[t * channels + c] += sums.gx;
        dsh[t * channels + c] += sums.g;
    });
    std::vector<double> total(std::max(rows1, channels));
    int status = 0;
    reduce_rows(points1, team, rows1, total.data());
    for (int64_t p = 0; p < rows1; ++p) {
        point1[p] = float(weight1[p] * total[p]);
        status |= !std::isfinite(point1[p]);
    }
    reduce_rows(points2, team, 1, total.data());
    point2[0] = float(weight2[0] * total[0]);
    status |= !std::isfinite(point2[0]);
    if (affine) {
        reduce_rows(ds, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dscale[c] = T(total[c]);
        reduce_rows(dsh, team, channels, total.data());
        for (int64_t c = 0; c < channels; ++c) dshift[c] = T(total[c]);
    }
    return status;
}

// ------------------------------------------------------------------------- a cast, then batch statistics
// q = Q(x) (one row: a layer's output cast) and the per-channel moments of q, as channel_moments gives them
// (the same runs, merged in the same order), x read once: a convolution's output cast and the batch
// statistics of the BatchNorm that reads it.  Returns the forward cast's status.
template <class T>
int cast_moments(const T* x, T* q, int64_t n, int64_t channels, int64_t inner, const T* table,
                 const int64_t* ints, const double* reals, T* mean, T* var, int threads) {
    const Modes<T> m(ints, reals);
    const ForwardRun<T> cast = forward_run<T, false>(m);
    if (cast == nullptr) return kFallback;
    const Row<T> k(table);
    const int team = team_size(n, threads);
    std::vector<int> seen(team, 0);
    std::vector<Moments> parts(team * channels);
    parallel_runs(n, channels, inner, team, [&](int64_t b, int64_t e, int64_t c, int t) {
        seen[t] |= cast(x + b, q + b, e - b, T(1), T(0), k, m);
        parts[t * channels + c].merge(run_moments(q + b, e - b));
    });
    merge_moments(parts, team, channels, mean, var);
    int status = 0;
    for (int s : seen) status |= s;
    return status;
}

// Its backward pass: g = (q * a[c] + b[c]) + grad_q (the statistics' gradient added to the one q received,
// as channel_affine computes it), then the cast's backward with g: grad_x and the binary point's sum
// (point[0], as cast_backward's).  q is recomputed run by run.  The statistics' gradient per channel, from
// those of mean and var (null: zero) over the count = n / channels values of a channel,
//     a[c] = grad_var[c] * (2 / count),  b[c] = grad_mean[c] / count - a[c] * mean[c]
// rounds as qfx.nn.batchnorm._BatchStatistics's PyTorch operations do: 2 / count in double, then every
// operation in T.
template <class T>
int cast_moments_backward(const T* grad_q, const T* x, T* grad_x, int64_t n, int64_t channels, int64_t inner,
                          const T* grad_mean, const T* grad_var, const T* mean, const T* table,
                          const int64_t* ints, const double* reals, const double* weight, float* point,
                          int threads) {
    std::vector<T> a(channels), b(channels);
    const int64_t values = n / channels;
    const T twice = T(2.0 / double(values)), count = T(values);
    for (int64_t c = 0; c < channels; ++c) {
        a[c] = (grad_var != nullptr ? grad_var[c] : T(0)) * twice;
        b[c] = (grad_mean != nullptr ? grad_mean[c] : T(0)) / count - a[c] * mean[c];
    }
    const Modes<T> m(ints, reals);
    const ForwardRun<T> cast = forward_run<T, false>(m);
    const BackwardRun<T> back = backward_run<T, false>(m);
    if (cast == nullptr || back == nullptr) return 1;
    const Row<T> k(table);
    const int team = team_size(n, threads);
    std::vector<T> scratch(size_t(team) * 2 * kChunk);
    std::vector<double> points(team, 0.0);
    parallel_runs(n, channels, inner, team, [&](int64_t begin, int64_t end, int64_t c, int t) {
        const int64_t len = end - begin;
        T* q = scratch.data() + size_t(t) * 2 * kChunk;
        T* g = q + kChunk;
        cast(x + begin, q, len, T(1), T(0), k, m);
        affine_run<T, true>(q, grad_q + begin, g, len, a[c], b[c]);
        const Sums sums = back(g, x + begin, grad_x + begin, len, T(1), T(0), k, m);
        points[t] += sums.gq - sums.gv;
    });
    double total = 0;
    reduce_rows(points, team, 1, &total);
    point[0] = float(weight[0] * total);
    return !std::isfinite(point[0]);
}

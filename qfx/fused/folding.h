// BatchNorm's statistics folded into its two per-channel constants and both constants cast, in one call
// each way (see qfx/fused/__init__.py): included by kernels.cpp inside its namespace, after the single
// cast it builds on (qfx.cast_native.kernel_source inlines it: one translation unit).
//
// Forward, per channel c, with r = 1 / sqrt(var + eps) computed by the caller (PyTorch's own square root
// and reciprocal, which are not always correctly rounded):
//     scale[c] = gamma[c] * r[c]              (r[c] without gamma)
//     shift[c] = beta[c] - mean[c] * scale[c]  ((-mean[c]) * scale[c] without beta)
//     qscale = Qs(scale), qshift = Qsh(shift)  (one binary point per channel each)
// each operation rounded once, as PyTorch's separate element-wise operations round.
//
// Backward, from the gradients of qscale and qshift: the two casts' backward passes (the binary points'
// gradients and the gradients gs, gsh of scale and shift), then
//     gs'       = gs - gsh * mean
//     grad_mean = (-gsh) * scale
//     grad_gamma = gs' * r
//     grad_var  = gs' * slope * r * r * -0.5   (slope = gamma * r, or r; left to right)
//     grad_beta = gsh
// operation for operation what qfx.nn.batchnorm._FoldStatistics computes with PyTorch.

// One per-channel cast of a fold: its table (every binary point the format takes, from `first`), the
// binary points (index[c], written forward and read backward, is channel c's row).
template <class T>
struct FoldCast {
    const T* bits;
    const T* table;
    int64_t first, count;
    const int64_t* ints;
    const double* reals;
    int32_t* index;
};

template <class T>
int fold_forward(const T* mean, const T* r, const T* gamma, const T* beta, int64_t channels, T* scale, T* shift,
                 T* qscale, T* qshift, const FoldCast<T>& s, const FoldCast<T>& sh) {
    for (int64_t c = 0; c < channels; ++c) {
        const T a = gamma != nullptr ? gamma[c] * r[c] : r[c];
        scale[c] = a;
        shift[c] = beta != nullptr ? beta[c] - mean[c] * a : (-mean[c]) * a;
    }
    for (const FoldCast<T>* cast : {&s, &sh}) {
        const int64_t width = cast->ints[2];
        if (point_rows(cast->bits, channels, width, cast->first, cast->count, cast->index)) return kFallback;
    }
    return cast_forward<T>(scale, qscale, channels, channels, 1, nullptr, nullptr, s.table, s.count, s.index, s.ints,
                           s.reals, 1) |
           cast_forward<T>(shift, qshift, channels, channels, 1, nullptr, nullptr, sh.table, sh.count, sh.index,
                           sh.ints, sh.reals, 1);
}

// Returns 1 where some binary point's gradient is not finite.
template <class T>
int fold_backward(const T* grad_qscale, const T* grad_qshift, const T* scale, const T* shift, const T* mean,
                  const T* r, const T* gamma, int64_t channels, const FoldCast<T>& s, const double* weight_s,
                  float* point_s, const FoldCast<T>& sh, const double* weight_sh, float* point_sh, T* grad_mean,
                  T* grad_var, T* grad_gamma, T* grad_beta) {
    std::vector<T> gs(channels);
    int status = cast_backward<T>(grad_qscale, scale, gs.data(), channels, channels, 1, nullptr, nullptr, s.table,
                                  s.count, s.index, s.ints, s.reals, weight_s, point_s, nullptr, nullptr, 1);
    status |= cast_backward<T>(grad_qshift, shift, grad_beta, channels, channels, 1, nullptr, nullptr, sh.table,
                               sh.count, sh.index, sh.ints, sh.reals, weight_sh, point_sh, nullptr, nullptr, 1);
    for (int64_t c = 0; c < channels; ++c) {
        const T gsh = grad_beta[c];
        const T g = gs[c] - gsh * mean[c];
        grad_mean[c] = (-gsh) * scale[c];
        if (grad_gamma != nullptr) grad_gamma[c] = g * r[c];
        const T slope = gamma != nullptr ? gamma[c] * r[c] : r[c];
        grad_var[c] = g * slope * r[c] * r[c] * T(-0.5);
    }
    return status;
}

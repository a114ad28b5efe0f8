// The qfx layer library: each layer forms its exact result on integer codes, then casts it once.
//
// A tensor element is an ap_fixed value; its integer code is its bit pattern (code_of).  Every layer
// computes the exact code of its result in an ap_int wide enough for any input (the generator sizes
// C::exact_code_t from the actual weights), reads it back as the ap_fixed C::exact_t, and assigns it
// to the node's accumulator format (C::accum_t, which is C::exact_t when the node has none) and then
// to the output type.  Those ap_fixed assignments are the only roundings, as in qfx.ir.run.
//
// Each layer takes a configuration struct C (parameters.h) with its types, sizes and trace id.
// Weights are integer codes aligned to one binary point per layer (weights.h); K-hot weights are
// tables of signed power-of-two digits (csd<K>) and multiply by shifts and adds, with no DSP.
#ifndef QFX_LAYERS_H
#define QFX_LAYERS_H

#include <ap_fixed.h>
#include <ap_int.h>
#include <hls_stream.h>

#include "qfx_trace.h"

namespace qfx {

// The integer code of a fixed-point value: its bits, read as Code (ap_int or ap_uint of the same width).
template <class Code, class T>
Code code_of(const T& value) {
    Code code = value.range(T::width - 1, 0);
    return code;
}

// The fixed-point value whose bits are code.
template <class T, class Code>
T from_code(const Code& code) {
    T value;
    value.range(T::width - 1, 0) = code;
    return value;
}

// The exact code of a layer's result, cast to the accumulator format, then to the output type.
// exact_t and accum_wide_t hold the same values as the code and accum_t, in formats whose binary
// point lies inside the word and which reach the target's lowest bit: the shape of source for which
// the header's cast reads no bit past the word (C simulation asserts otherwise).
template <class C>
typename C::out_t finish(const typename C::exact_code_t& code) {
    typename C::exact_bits_t bits = code;
    bits <<= C::exact_shift;
    typename C::accum_t accum = from_code<typename C::exact_t>(bits);
    typename C::accum_wide_t wide = accum;
    typename C::out_t out = wide;
    return out;
}

// At most K nonzero signed digits: w = sum_k sign[k] * 2**shift[k] (sign 0 marks an unused digit).
template <int K>
struct csd {
    signed char sign[K];
    unsigned char shift[K];
};

// x * w for an integer weight code: one multiplier.
template <class Acc, class X, class W>
Acc product(const X& x, const W& w) {
    Acc p = x * w;
    return p;
}

// x * w for a K-hot weight: K shifts and adds, no multiplier.
template <class Acc, class X, int K>
Acc product(const X& x, const csd<K>& w) {
    Acc p = 0;
    for (int k = 0; k < K; k++) {
#pragma HLS UNROLL
        Acc term = Acc(x) << w.shift[k];
        if (w.sign[k] > 0) p += term;
        else if (w.sign[k] < 0) p -= term;
    }
    return p;
}

// ------------------------------------------------------------------ dense
template <class C, class W>
void dense(const typename C::in_t x[C::n_in], typename C::out_t y[C::n_out], const W w[C::n_out][C::n_in],
           const typename C::bias_code_t b[C::n_out]) {
    typename C::in_code_t xc[C::n_in];
    for (int i = 0; i < C::n_in; i++) {
#pragma HLS UNROLL
        xc[i] = code_of<typename C::in_code_t>(x[i]);
    }
    for (int o = 0; o < C::n_out; o++) {
#pragma HLS PIPELINE II = C::reuse
        typename C::exact_code_t acc = b[o];
        for (int i = 0; i < C::n_in; i++) acc += product<typename C::exact_code_t>(xc[i], w[o][i]);
        y[o] = finish<C>(acc);
        QFX_RECORD(C::trace_id, o, code_of<typename C::out_code_t>(y[o]));
    }
}

// ----------------------------------------------------------------- conv2d
// Channels first, zero padding; conv1d is conv2d with in_h = kh = 1.  Weights are [out_c][k] with
// k = (in_c / groups) * kh * kw in (channel, row, column) order.
template <class C, class W>
void conv2d(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
            typename C::out_t y[C::out_c * C::out_h * C::out_w], const W w[C::out_c][C::k],
            const typename C::bias_code_t b[C::out_c]) {
    const int group_in = C::in_c / C::groups, group_out = C::out_c / C::groups;
    for (int oc = 0; oc < C::out_c; oc++) {
        for (int oh = 0; oh < C::out_h; oh++) {
            for (int ow = 0; ow < C::out_w; ow++) {
#pragma HLS PIPELINE II = C::reuse
                typename C::exact_code_t acc = b[oc];
                for (int ic = 0; ic < group_in; ic++) {
                    for (int i = 0; i < C::kh; i++) {
                        for (int j = 0; j < C::kw; j++) {
                            const int h = oh * C::stride_h + i * C::dil_h - C::pad_top;
                            const int v = ow * C::stride_w + j * C::dil_w - C::pad_left;
                            if (h < 0 || h >= C::in_h || v < 0 || v >= C::in_w) continue;  // zero padding
                            const int c = (oc / group_out) * group_in + ic;
                            typename C::in_code_t xc =
                                code_of<typename C::in_code_t>(x[(c * C::in_h + h) * C::in_w + v]);
                            acc += product<typename C::exact_code_t>(xc, w[oc][(ic * C::kh + i) * C::kw + j]);
                        }
                    }
                }
                const int index = (oc * C::out_h + oh) * C::out_w + ow;
                y[index] = finish<C>(acc);
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
        }
    }
}

// The streaming convolution: pixels arrive row by row, channels innermost (HWC).  A line buffer keeps
// the span_h = dil_h * (kh - 1) + 1 most recent rows of the zero-padded input; each time the last row
// of a window has arrived, one output row is computed and written (HWC again).
template <class C, class W>
void conv2d_stream(hls::stream<typename C::in_t>& x, hls::stream<typename C::out_t>& y,
                   const W w[C::out_c][C::k], const typename C::bias_code_t b[C::out_c]) {
    const int padded_h = C::in_h + C::pad_top + C::pad_bottom;
    const int padded_w = C::in_w + C::pad_left + C::pad_right;
    const int group_in = C::in_c / C::groups, group_out = C::out_c / C::groups;
    typename C::in_code_t rows[C::span_h][C::in_w + C::pad_left + C::pad_right][C::in_c];
    for (int r = 0; r < padded_h; r++) {
        const int slot = r % C::span_h;
        const bool row_inside = r >= C::pad_top && r < C::pad_top + C::in_h;
        for (int col = 0; col < padded_w; col++) {
            for (int c = 0; c < C::in_c; c++) {
#pragma HLS PIPELINE II = 1
                const bool inside = row_inside && col >= C::pad_left && col < C::pad_left + C::in_w;
                rows[slot][col][c] = inside ? code_of<typename C::in_code_t>(x.read()) : typename C::in_code_t(0);
            }
        }
        const int top = r - (C::span_h - 1);
        if (top < 0 || top % C::stride_h != 0) continue;
        const int oh = top / C::stride_h;
        for (int ow = 0; ow < C::out_w; ow++) {
            for (int oc = 0; oc < C::out_c; oc++) {
#pragma HLS PIPELINE II = C::reuse
                typename C::exact_code_t acc = b[oc];
                for (int ic = 0; ic < group_in; ic++) {
                    for (int i = 0; i < C::kh; i++) {
                        for (int j = 0; j < C::kw; j++) {
                            const int c = (oc / group_out) * group_in + ic;
                            acc += product<typename C::exact_code_t>(
                                rows[(top + i * C::dil_h) % C::span_h][ow * C::stride_w + j * C::dil_w][c],
                                w[oc][(ic * C::kh + i) * C::kw + j]);
                        }
                    }
                }
                typename C::out_t out = finish<C>(acc);
                QFX_RECORD(C::trace_id, (oc * C::out_h + oh) * C::out_w + ow, code_of<typename C::out_code_t>(out));
                y.write(out);
            }
        }
    }
}

// ------------------------------------------------------- element-wise ops
// Element i of a (channels, spatial) tensor lies in channel i / C::spatial.

// BatchNorm: x * scale[c] + shift[c], both aligned to the exact result's binary point.
template <class C>
void scale_shift(const typename C::in_t x[C::n], typename C::out_t y[C::n],
                 const typename C::scale_code_t scale[C::channels],
                 const typename C::shift_code_t shift[C::channels]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS PIPELINE II = C::reuse
        const int c = i / C::spatial;
        typename C::exact_code_t exact = code_of<typename C::in_code_t>(x[i]) * scale[c];
        exact += shift[c];
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

template <class C>
void relu(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::exact_code_t exact = code_of<typename C::in_code_t>(x[i]);
        if (exact < 0) exact = 0;
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// min(max(x, 0), 6) with x shifted left by C::shift so that 6 is a code (C::six).
template <class C>
void relu6(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::exact_code_t exact = code_of<typename C::in_code_t>(x[i]);
        exact <<= C::shift;
        if (exact < 0) exact = 0;
        if (exact > C::six) exact = C::six;
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// x >= 0 ? x : x * slope, both sides on the exact result's binary point.
template <class C>
void leaky_relu(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::in_code_t xc = code_of<typename C::in_code_t>(x[i]);
        typename C::exact_code_t exact = xc;
        if (xc >= 0) exact <<= C::positive_shift;
        else { exact *= C::slope; exact <<= C::negative_shift; }
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// y = table[index_t(x) - lowest]: x cast once (an ap_fixed assignment) to the table's input format,
// whose code addresses a ROM of output codes.  exact_t holds x's values in the shape finish() uses.
template <class C>
void lookup(const typename C::in_t x[C::n], typename C::out_t y[C::n],
            const typename C::out_code_t table[C::entries]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::exact_bits_t bits = code_of<typename C::in_code_t>(x[i]);
        bits <<= C::exact_shift;
        typename C::index_t index = from_code<typename C::exact_t>(bits);
        typename C::address_t address = code_of<typename C::index_code_t>(index) - C::lowest;
        y[i] = from_code<typename C::out_t>(table[address]);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// Softmax over C::channels at each of C::positions: d = x - max(x), e = exp_table[table_t(d)],
// s = sum_t(sum e); y = e * second_table[s] (reciprocals) or, with C::log, d - second_table[s] (logs).
// Each cast is an ap_fixed assignment from the exact code read as a fixed-point value, as in finish().
template <class C>
void softmax(const typename C::in_t x[C::n], typename C::out_t y[C::n],
             const typename C::exp_code_t exp_table[C::exp_entries],
             const typename C::second_code_t second_table[C::second_entries]) {
    for (int p = 0; p < C::positions; p++) {
        typename C::diff_code_t top = code_of<typename C::in_code_t>(x[p]);
        for (int c = 1; c < C::channels; c++) {
            typename C::diff_code_t v = code_of<typename C::in_code_t>(x[c * C::positions + p]);
            if (v > top) top = v;
        }
        typename C::exp_code_t e[C::channels];
        typename C::total_code_t total = 0;
        for (int c = 0; c < C::channels; c++) {
            typename C::diff_code_t d = code_of<typename C::in_code_t>(x[c * C::positions + p]);
            d -= top;
            typename C::diff_bits_t bits = d;
            bits <<= C::diff_shift;
            typename C::table_t index = from_code<typename C::diff_t>(bits);
            typename C::table_address_t address = code_of<typename C::table_code_t>(index) - C::table_lowest;
            e[c] = exp_table[address];
            total += e[c];
        }
        typename C::total_bits_t total_bits = total;
        total_bits <<= C::total_shift;
        typename C::sum_t s = from_code<typename C::total_t>(total_bits);
        typename C::sum_address_t address = code_of<typename C::sum_code_t>(s) - C::sum_lowest;
        typename C::result_code_t r = second_table[address];
        for (int c = 0; c < C::channels; c++) {
            typename C::result_code_t v;
            if (C::log) {
                typename C::diff_code_t d = code_of<typename C::in_code_t>(x[c * C::positions + p]);
                d -= top;
                v = d;
                v <<= C::up_d;
                typename C::result_code_t right = r;
                right <<= C::up_r;
                v -= right;
            } else {
                v = e[c];
                v *= r;
            }
            typename C::result_bits_t bits = v;
            bits <<= C::result_shift;
            const int i = c * C::positions + p;
            y[i] = from_code<typename C::result_t>(bits);
            QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
        }
    }
}

// a + b, or a - b where Subtract, on their common binary point.
template <class C, bool Subtract>
void add_or_sub(const typename C::a_t a[C::n], const typename C::b_t b[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::exact_code_t exact = code_of<typename C::a_code_t>(a[i]);
        typename C::exact_code_t other = code_of<typename C::b_code_t>(b[i]);
        exact <<= C::a_shift;
        other <<= C::b_shift;
        if (Subtract)
            exact -= other;
        else
            exact += other;
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

template <class C>
void add(const typename C::a_t a[C::n], const typename C::b_t b[C::n], typename C::out_t y[C::n]) {
    add_or_sub<C, false>(a, b, y);
}

// ---------------------------------------------------------------- pooling
// The window's maximum; padding and positions past the edge (ceil_mode) never take part.
template <class C>
void maxpool2d(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
               typename C::out_t y[C::in_c * C::out_h * C::out_w]) {
    for (int c = 0; c < C::in_c; c++) {
        for (int oh = 0; oh < C::out_h; oh++) {
            for (int ow = 0; ow < C::out_w; ow++) {
#pragma HLS PIPELINE II = C::reuse
                typename C::exact_code_t best = C::lowest;
                for (int i = 0; i < C::kh; i++) {
                    for (int j = 0; j < C::kw; j++) {
                        const int h = oh * C::stride_h + i * C::dil_h - C::pad_h;
                        const int v = ow * C::stride_w + j * C::dil_w - C::pad_w;
                        if (h < 0 || h >= C::in_h || v < 0 || v >= C::in_w) continue;
                        typename C::exact_code_t xc =
                            code_of<typename C::in_code_t>(x[(c * C::in_h + h) * C::in_w + v]);
                        if (xc > best) best = xc;
                    }
                }
                const int index = (c * C::out_h + oh) * C::out_w + ow;
                y[index] = finish<C>(best);
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
        }
    }
}

// sum(window) * divisor, padding counting as zeros; global average pooling is the window H x W.
template <class C>
void avgpool2d(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
               typename C::out_t y[C::in_c * C::out_h * C::out_w]) {
    for (int c = 0; c < C::in_c; c++) {
        for (int oh = 0; oh < C::out_h; oh++) {
            for (int ow = 0; ow < C::out_w; ow++) {
#pragma HLS PIPELINE II = C::reuse
                typename C::sum_code_t sum = 0;
                for (int i = 0; i < C::kh; i++) {
                    for (int j = 0; j < C::kw; j++) {
                        const int h = oh * C::stride_h + i - C::pad_h;
                        const int v = ow * C::stride_w + j - C::pad_w;
                        if (h < 0 || h >= C::in_h || v < 0 || v >= C::in_w) continue;
                        sum += code_of<typename C::in_code_t>(x[(c * C::in_h + h) * C::in_w + v]);
                    }
                }
                typename C::exact_code_t exact = sum * typename C::divisor_code_t(C::divisor);
                const int index = (c * C::out_h + oh) * C::out_w + ow;
                y[index] = finish<C>(exact);
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
        }
    }
}

// ------------------------------------------------------------------ copies
// flatten: the same values in the same (channels-first) order.
template <class C>
void copy(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        y[i] = x[i];
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// ---------------------------------------------------------------- streams
// A stream carries a (channels, height, width) tensor pixel by pixel, channels innermost (HWC); a
// one-dimensional tensor in its own order.  These adapt a stream to the array layers.
template <int CH, int H, int W, class T>
void read_frame(hls::stream<T>& s, T x[CH * H * W]) {
    for (int p = 0; p < H * W; p++) {
        for (int c = 0; c < CH; c++) {
#pragma HLS PIPELINE II = 1
            x[c * H * W + p] = s.read();
        }
    }
}

template <int CH, int H, int W, class T>
void write_frame(const T x[CH * H * W], hls::stream<T>& s) {
    for (int p = 0; p < H * W; p++) {
        for (int c = 0; c < CH; c++) {
#pragma HLS PIPELINE II = 1
            s.write(x[c * H * W + p]);
        }
    }
}

// One stream into several, for a tensor that more than one layer reads.
template <int N, class T>
void fork2(hls::stream<T>& x, hls::stream<T>& a, hls::stream<T>& b) {
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        T v = x.read();
        a.write(v);
        b.write(v);
    }
}

}  // namespace qfx

#endif

// Binarized layers and PReLU.
//
// A binary tensor holds the codes -1 and +1 as ap_fixed<2,2> values.  Binary dense and convolution
// layers pack it into ap_uint words (C::word_t, bit 1 for +1; channel j of a word at bit j) and form
// each dot product of C::k terms as k - 2 * popcount(x ^ w) = 2 * popcount(xnor(x, w)) - k: XNOR and
// an adder tree of bits, no multiplier.  Bits past the last channel of a word are 0 in the input and
// the weights alike, so they never count.  The integer sum is then cast once (finish), as in
// qfx_layers.h.  Convolution weights are [out_c][kh * kw][words], the channels of the output's group.
#ifndef QFX_BINARY_H
#define QFX_BINARY_H

#include "qfx_layers.h"

namespace qfx {

// The number of 1 bits of v: an adder tree once unrolled.
template <int W>
ap_uint<8> popcount(const ap_uint<W>& v) {
    ap_uint<8> n = 0;
    for (int b = 0; b < W; b++) {
#pragma HLS UNROLL
        n += v[b];
    }
    return n;
}

// k - 2 * differ: the dot product of k terms of which differ disagree.
template <class C>
typename C::out_t binary_sum(const typename C::count_t& differ) {
    typename C::exact_code_t exact = C::k;
    exact -= differ;
    exact -= differ;
    return finish<C>(exact);
}

// x >= 0 ? +1 : -1.
template <class C>
void sign(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        y[i] = x[i] >= 0 ? typename C::out_t(1) : typename C::out_t(-1);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// y[(c * levels + t) * spatial + i] = x[c * spatial + i] >= thresholds[t] ? +1 : -1, the codes of x
// shifted left by C::up to the thresholds' binary point.
template <class C>
void thermometer(const typename C::in_t x[C::channels * C::spatial],
                 typename C::out_t y[C::channels * C::levels * C::spatial],
                 const typename C::threshold_code_t thresholds[C::levels]) {
    for (int c = 0; c < C::channels; c++) {
        for (int i = 0; i < C::spatial; i++) {
#pragma HLS PIPELINE II = C::reuse
            typename C::compare_t v = code_of<typename C::in_code_t>(x[c * C::spatial + i]);
            v <<= C::up;
            for (int t = 0; t < C::levels; t++) {
                const int index = (c * C::levels + t) * C::spatial + i;
                y[index] = v >= thresholds[t] ? typename C::out_t(1) : typename C::out_t(-1);
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
        }
    }
}

// Bit `bit` of a binary value: 1 for +1.
template <class T>
ap_uint<1> bit_of(const T& v) {
    return v > 0 ? 1 : 0;
}

// ------------------------------------------------------------ binary dense
template <class C>
void binary_dense(const typename C::in_t x[C::n_in], typename C::out_t y[C::n_out],
                  const typename C::word_t w[C::n_out][C::words]) {
    typename C::word_t packed[C::words];
    for (int k = 0; k < C::words; k++) {
#pragma HLS UNROLL
        packed[k] = 0;
    }
    for (int i = 0; i < C::n_in; i++) {
#pragma HLS UNROLL
        packed[i / C::word][i % C::word] = bit_of(x[i]);
    }
    for (int o = 0; o < C::n_out; o++) {
#pragma HLS PIPELINE II = C::reuse
        typename C::count_t differ = 0;
        for (int k = 0; k < C::words; k++) differ += popcount(typename C::word_t(packed[k] ^ w[o][k]));
        y[o] = binary_sum<C>(differ);
        QFX_RECORD(C::trace_id, o, code_of<typename C::out_code_t>(y[o]));
    }
}

// ------------------------------------------------------ binary convolution
// The words of a padding pixel: every channel bit set when the padding value is +1.
template <class C>
typename C::word_t pad_word(int k) {
    typename C::word_t v = 0;
    for (int j = 0; j < C::word; j++) {
#pragma HLS UNROLL
        if (C::pad_one && k * C::word + j < C::group_in) v[j] = 1;
    }
    return v;
}

// Channels first; conv1d is conv2d with in_h = kh = 1.  The input is packed pixel by pixel over the
// padded frame: packed[g][h][v] holds group g's channels at padded position (h, v).
template <class C>
void binary_conv2d(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
                   typename C::out_t y[C::out_c * C::out_h * C::out_w],
                   const typename C::word_t w[C::out_c][C::taps][C::words]) {
    const int padded_h = C::in_h + C::pad_top + C::pad_bottom;
    const int padded_w = C::in_w + C::pad_left + C::pad_right;
    const int group_out = C::out_c / C::groups;
    typename C::word_t packed[C::groups][C::in_h + C::pad_top + C::pad_bottom][C::in_w + C::pad_left + C::pad_right]
                             [C::words];
    for (int g = 0; g < C::groups; g++)
        for (int h = 0; h < padded_h; h++)
            for (int v = 0; v < padded_w; v++) {
                const int ih = h - C::pad_top, iv = v - C::pad_left;
                const bool inside = ih >= 0 && ih < C::in_h && iv >= 0 && iv < C::in_w;
                for (int k = 0; k < C::words; k++) {
                    packed[g][h][v][k] = inside ? typename C::word_t(0) : pad_word<C>(k);
                    for (int j = 0; j < C::word; j++) {
                        const int c = k * C::word + j;
                        if (inside && c < C::group_in)
                            packed[g][h][v][k][j] = bit_of(x[((g * C::group_in + c) * C::in_h + ih) * C::in_w + iv]);
                    }
                }
            }
    for (int oc = 0; oc < C::out_c; oc++) {
        const int g = oc / group_out;
        for (int oh = 0; oh < C::out_h; oh++) {
            for (int ow = 0; ow < C::out_w; ow++) {
#pragma HLS PIPELINE II = C::reuse
                typename C::count_t differ = 0;
                for (int i = 0; i < C::kh; i++)
                    for (int j = 0; j < C::kw; j++)
                        for (int k = 0; k < C::words; k++)
                            differ += popcount(typename C::word_t(
                                packed[g][oh * C::stride_h + i * C::dil_h][ow * C::stride_w + j * C::dil_w][k] ^
                                w[oc][i * C::kw + j][k]));
                const int index = (oc * C::out_h + oh) * C::out_w + ow;
                y[index] = binary_sum<C>(differ);
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
        }
    }
}

// The streaming binary convolution: pixels arrive row by row, channels innermost (HWC), and are
// packed as they arrive.  A line buffer keeps the span_h most recent rows of the padded frame as
// words; each time the last row of a window has arrived, one output row is computed (HWC again).
template <class C>
void binary_conv2d_stream(hls::stream<typename C::in_t>& x, hls::stream<typename C::out_t>& y,
                          const typename C::word_t w[C::out_c][C::taps][C::words]) {
    const int padded_h = C::in_h + C::pad_top + C::pad_bottom;
    const int padded_w = C::in_w + C::pad_left + C::pad_right;
    const int group_out = C::out_c / C::groups;
    typename C::word_t rows[C::span_h][C::in_w + C::pad_left + C::pad_right][C::groups][C::words];
    for (int r = 0; r < padded_h; r++) {
        const int slot = r % C::span_h;
        const bool row_inside = r >= C::pad_top && r < C::pad_top + C::in_h;
        for (int col = 0; col < padded_w; col++) {
            const bool inside = row_inside && col >= C::pad_left && col < C::pad_left + C::in_w;
            for (int g = 0; g < C::groups; g++)
                for (int k = 0; k < C::words; k++) rows[slot][col][g][k] = inside ? typename C::word_t(0)
                                                                                  : pad_word<C>(k);
            if (!inside) continue;
            for (int c = 0; c < C::in_c; c++) {
#pragma HLS PIPELINE II = 1
                const int g = c / C::group_in, bit = c % C::group_in;
                rows[slot][col][g][bit / C::word][bit % C::word] = bit_of(x.read());
            }
        }
        const int top = r - (C::span_h - 1);
        if (top < 0 || top % C::stride_h != 0) continue;
        const int oh = top / C::stride_h;
        for (int ow = 0; ow < C::out_w; ow++) {
            for (int oc = 0; oc < C::out_c; oc++) {
#pragma HLS PIPELINE II = C::reuse
                const int g = oc / group_out;
                typename C::count_t differ = 0;
                for (int i = 0; i < C::kh; i++)
                    for (int j = 0; j < C::kw; j++)
                        for (int k = 0; k < C::words; k++)
                            differ += popcount(typename C::word_t(
                                rows[(top + i * C::dil_h) % C::span_h][ow * C::stride_w + j * C::dil_w][g][k] ^
                                w[oc][i * C::kw + j][k]));
                typename C::out_t out = binary_sum<C>(differ);
                QFX_RECORD(C::trace_id, (oc * C::out_h + oh) * C::out_w + ow, code_of<typename C::out_code_t>(out));
                y.write(out);
            }
        }
    }
}

// ------------------------------------------------------------------- PReLU
// t = x + bias[c]; t >= 0 ? t : t * slope[c]; + shift[c].  The codes of t lie at one binary point,
// the slopes' at another; both branches are shifted to the exact result's, where shift[c] lies.  A
// K-hot slope (csd<K>) multiplies by shifts and adds.
template <class C, class S>
void prelu(const typename C::in_t x[C::n], typename C::out_t y[C::n], const S slope[C::channels],
           const typename C::bias_code_t bias[C::channels], const typename C::shift_code_t shift[C::channels]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS PIPELINE II = C::reuse
        const int c = i / C::spatial;
        typename C::t_code_t t = code_of<typename C::in_code_t>(x[i]);
        t <<= C::in_shift;
        t += bias[c];
        typename C::exact_code_t exact;
        if (t >= 0) {
            exact = t;
            exact <<= C::positive_shift;
        } else {
            exact = product<typename C::exact_code_t>(t, slope[c]);
            exact <<= C::negative_shift;
        }
        exact += shift[c];
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

}  // namespace qfx

#endif

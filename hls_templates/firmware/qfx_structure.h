// The structural layers: differences and products of two tensors, clamps, joins that cast each input,
// zero padding with zero insertion and nearest upsampling (the last two move values and never cast).
// As in qfx_layers.h, each forms the exact code of its result and casts it once (finish).
#ifndef QFX_STRUCTURE_H
#define QFX_STRUCTURE_H

#include "qfx_layers.h"

namespace qfx {

template <class C>
void sub(const typename C::a_t a[C::n], const typename C::b_t b[C::n], typename C::out_t y[C::n]) {
    add_or_sub<C, true>(a, b, y);
}

// a * b: the fractional bits add, nothing is lost before the cast.
template <class C>
void mul(const typename C::a_t a[C::n], const typename C::b_t b[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS PIPELINE II = C::reuse
        typename C::exact_code_t exact = code_of<typename C::a_code_t>(a[i]);
        exact *= code_of<typename C::b_code_t>(b[i]);
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// min(max(x, low), high) with x shifted left by C::shift so that the bounds are codes.
template <class C>
void clamp(const typename C::in_t x[C::n], typename C::out_t y[C::n]) {
    for (int i = 0; i < C::n; i++) {
#pragma HLS UNROLL
        typename C::exact_code_t exact = code_of<typename C::in_code_t>(x[i]);
        exact <<= C::shift;
        if (C::has_low && exact < C::low) exact = C::low;
        if (C::has_high && exact > C::high) exact = C::high;
        y[i] = finish<C>(exact);
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// One input of a join: C::outer blocks of Inner values, each cast and placed at Offset in a block of
// C::stride outputs; Shift aligns the input's codes to the join's common binary point.
template <class C, class Code, int Inner, int Offset, int Shift, class X>
void concat_part(const X x[], typename C::out_t y[]) {
    for (int o = 0; o < C::outer; o++) {
        for (int i = 0; i < Inner; i++) {
#pragma HLS UNROLL
            typename C::exact_code_t exact = code_of<Code>(x[o * Inner + i]);
            exact <<= Shift;
            const int index = o * C::stride + Offset + i;
            y[index] = finish<C>(exact);
            QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
        }
    }
}

template <class C, class X0, class X1>
void concat(const X0 x0[], const X1 x1[], typename C::out_t y[]) {
    concat_part<C, typename C::in0_code_t, C::inner0, C::offset0, C::shift0>(x0, y);
    concat_part<C, typename C::in1_code_t, C::inner1, C::offset1, C::shift1>(x1, y);
}

template <class C, class X0, class X1, class X2>
void concat(const X0 x0[], const X1 x1[], const X2 x2[], typename C::out_t y[]) {
    concat<C>(x0, x1, y);
    concat_part<C, typename C::in2_code_t, C::inner2, C::offset2, C::shift2>(x2, y);
}

template <class C, class X0, class X1, class X2, class X3>
void concat(const X0 x0[], const X1 x1[], const X2 x2[], const X3 x3[], typename C::out_t y[]) {
    concat<C>(x0, x1, x2, y);
    concat_part<C, typename C::in3_code_t, C::inner3, C::offset3, C::shift3>(x3, y);
}

// Zeros between neighbours (every C::insert_h-th row, C::insert_w-th column holds an input value), then
// C::pad_top rows and C::pad_left columns before the first.
template <class C>
void zero_pad(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
              typename C::out_t y[C::in_c * C::out_h * C::out_w]) {
    for (int i = 0; i < C::in_c * C::out_h * C::out_w; i++) {
#pragma HLS UNROLL
        y[i] = 0;
    }
    for (int c = 0; c < C::in_c; c++)
        for (int h = 0; h < C::in_h; h++)
            for (int w = 0; w < C::in_w; w++) {
#pragma HLS UNROLL
                y[(c * C::out_h + C::pad_top + h * C::insert_h) * C::out_w + C::pad_left + w * C::insert_w] =
                    x[(c * C::in_h + h) * C::in_w + w];
            }
    for (int i = 0; i < C::in_c * C::out_h * C::out_w; i++) {
        QFX_RECORD(C::trace_id, i, code_of<typename C::out_code_t>(y[i]));
    }
}

// Nearest upsampling by integer factors.
template <class C>
void upsample(const typename C::in_t x[C::in_c * C::in_h * C::in_w],
              typename C::out_t y[C::in_c * C::out_h * C::out_w]) {
    for (int c = 0; c < C::in_c; c++)
        for (int h = 0; h < C::out_h; h++)
            for (int w = 0; w < C::out_w; w++) {
#pragma HLS UNROLL
                const int index = (c * C::out_h + h) * C::out_w + w;
                y[index] = x[(c * C::in_h + h / C::scale_h) * C::in_w + w / C::scale_w];
                QFX_RECORD(C::trace_id, index, code_of<typename C::out_code_t>(y[index]));
            }
}

}  // namespace qfx

#endif

// AXI-Stream ports of the io_stream top: one element per beat, TLAST on the last element of a sample,
// so an AXI DMA ends each transfer.  A beat's TDATA is 8, 16, 32 or 64 bits; the element's bits sit
// at the bottom, zeros above.
//
// Under Vitis the beat is ap_axiu<W, 0, 0, 0> from ap_axi_sdata.h; C simulation without Vitis uses a
// struct with the same fields this file touches (data, keep, strb, last).
#ifndef QFX_AXIS_H
#define QFX_AXIS_H

#include <ap_int.h>
#include <hls_stream.h>

#if defined(__has_include)
#if __has_include(<ap_axi_sdata.h>)
#include <ap_axi_sdata.h>
#define QFX_AP_AXI_SDATA 1
#endif
#endif

namespace qfx {

#ifdef QFX_AP_AXI_SDATA
template <int W>
struct axis {
    typedef ap_axiu<W, 0, 0, 0> beat;
};
#else
template <int W>
struct axis {
    struct beat {
        ap_uint<W> data;
        ap_uint<W / 8> keep;
        ap_uint<W / 8> strb;
        ap_uint<1> last;
    };
};
#endif

// The beat carrying value; last marks the final element of a sample.
template <class Beat, class T>
Beat beat_of(const T& value, bool last) {
    Beat beat;
    beat.data = 0;
    beat.data.range(T::width - 1, 0) = value.range(T::width - 1, 0);
    beat.keep = -1;
    beat.strb = -1;
    beat.last = last;
    return beat;
}

// The value a beat carries.
template <class T, class Beat>
T value_of(const Beat& beat) {
    T value;
    value.range(T::width - 1, 0) = beat.data.range(T::width - 1, 0);
    return value;
}

// AXI-Stream beats of one sample (N elements) into the dataflow's element stream.
template <int N, class T, class Beat>
void from_axis(hls::stream<Beat>& in, hls::stream<T>& out) {
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        out.write(value_of<T>(in.read()));
    }
}

// One sample's N elements out as AXI-Stream beats, TLAST on the last.
template <int N, class T, class Beat>
void to_axis(hls::stream<T>& in, hls::stream<Beat>& out) {
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        out.write(beat_of<Beat>(in.read(), i == N - 1));
    }
}

}  // namespace qfx

#endif

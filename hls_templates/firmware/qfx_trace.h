// Per-layer trace for C simulation: with QFX_TRACE defined (the testbench does), every layer reports
// each output code with its tensor id and channels-first index, so a mismatch is pinned to the first
// layer that differs.  Synthesis and builds without QFX_TRACE see an empty macro.
#ifndef QFX_TRACE_H
#define QFX_TRACE_H

#if defined(QFX_TRACE) && !defined(__SYNTHESIS__)
void qfx_trace(int tensor, int index, long long code);  // defined by the testbench
#define QFX_RECORD(tensor, index, code) qfx_trace((tensor), (index), (code).to_int64())
#else
#define QFX_RECORD(tensor, index, code)
#endif

#endif

// The driver of a generated emulator program: reads a batch of input codes,
// runs the graph on every sample (the batch split across threads), writes the
// output codes, or every tensor's codes in trace mode.
//
// Command line: PROGRAM INPUT OUTPUT BATCH THREADS [trace]
// Files hold int64 codes in native byte order, tensor after tensor, each
// tensor BATCH samples of its size; INPUT holds the graph inputs in order,
// OUTPUT the graph outputs (or, with `trace`, every tensor in graph order).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace qfx {

// One tensor of a workspace: where its codes live and how wide each is.
struct TensorRef {
  void* data;
  int bytes;  // 1, 2, 4 or 8: the code_t of its format
  long long size;
};

// What the generated translation unit describes about its graph.
struct Program {
  const char* name;
  int inputs;               // the first `inputs` tensors are the graph inputs
  int tensors;              // inputs, then one per node, in graph order
  const long long* sizes;   // elements per sample, per tensor
  int outputs;
  const int* output_index;  // tensor index of each graph output
};

inline void store_code(const TensorRef& t, long long i, std::int64_t code) {
  switch (t.bytes) {
    case 1: static_cast<std::int8_t*>(t.data)[i] = static_cast<std::int8_t>(code); break;
    case 2: static_cast<std::int16_t*>(t.data)[i] = static_cast<std::int16_t>(code); break;
    case 4: static_cast<std::int32_t*>(t.data)[i] = static_cast<std::int32_t>(code); break;
    default: static_cast<std::int64_t*>(t.data)[i] = code;
  }
}

inline std::int64_t load_code(const TensorRef& t, long long i) {
  switch (t.bytes) {
    case 1: return static_cast<const std::int8_t*>(t.data)[i];
    case 2: return static_cast<const std::int16_t*>(t.data)[i];
    case 4: return static_cast<const std::int32_t*>(t.data)[i];
    default: return static_cast<const std::int64_t*>(t.data)[i];
  }
}

inline int fail(const std::string& message) {
  std::fprintf(stderr, "qfx emulator: %s\n", message.c_str());
  return 2;
}

// Runs samples [begin, end) with a workspace of its own.
template <class Workspace>
void run_samples(const Program& program, void (*forward)(Workspace&), void (*bind)(Workspace&, TensorRef*),
                 const std::vector<std::int64_t>& in, std::vector<std::int64_t>& out, const std::vector<int>& dumped,
                 long long batch, long long begin, long long end) {
  auto workspace = std::make_unique<Workspace>();  // on the heap: large graphs would overflow a thread's stack
  std::vector<TensorRef> refs(program.tensors);
  bind(*workspace, refs.data());
  for (long long s = begin; s < end; ++s) {
    long long offset = 0;
    for (int k = 0; k < program.inputs; ++k) {
      const long long size = program.sizes[k];
      for (long long i = 0; i < size; ++i) store_code(refs[k], i, in[offset + s * size + i]);
      offset += batch * size;
    }
    forward(*workspace);
    offset = 0;
    for (int k : dumped) {
      const long long size = program.sizes[k];
      for (long long i = 0; i < size; ++i) out[offset + s * size + i] = load_code(refs[k], i);
      offset += batch * size;
    }
  }
}

template <class Workspace>
int main(int argc, char** argv, const Program& program, void (*forward)(Workspace&),
         void (*bind)(Workspace&, TensorRef*)) {
  if (argc < 5 || argc > 6 || (argc == 6 && std::strcmp(argv[5], "trace") != 0))
    return fail(std::string("usage: ") + argv[0] + " INPUT OUTPUT BATCH THREADS [trace]");
  const long long batch = std::atoll(argv[3]);
  long long threads = std::atoll(argv[4]);
  if (batch < 0 || threads < 1) return fail("BATCH must be >= 0 and THREADS >= 1");
  const bool trace = argc == 6;

  long long in_count = 0;
  for (int k = 0; k < program.inputs; ++k) in_count += batch * program.sizes[k];
  std::vector<std::int64_t> in(in_count);
  std::FILE* f = std::fopen(argv[1], "rb");
  if (!f) return fail(std::string("cannot open input file ") + argv[1]);
  const bool complete = std::fread(in.data(), sizeof(std::int64_t), in.size(), f) == in.size() &&
                        std::fgetc(f) == EOF;
  std::fclose(f);
  if (!complete) return fail(std::string("input file ") + argv[1] + " does not hold " + std::to_string(in_count) +
                             " int64 codes for graph '" + program.name + "'");

  std::vector<int> dumped;
  if (trace) {
    for (int k = 0; k < program.tensors; ++k) dumped.push_back(k);
  } else {
    dumped.assign(program.output_index, program.output_index + program.outputs);
  }
  long long out_count = 0;
  for (int k : dumped) out_count += batch * program.sizes[k];
  std::vector<std::int64_t> out(out_count);

  if (threads > batch) threads = batch > 0 ? batch : 1;
  std::vector<std::thread> pool;
  for (long long t = 0; t < threads; ++t) {
    const long long begin = batch * t / threads, end = batch * (t + 1) / threads;
    pool.emplace_back(run_samples<Workspace>, std::cref(program), forward, bind, std::cref(in), std::ref(out),
                      std::cref(dumped), batch, begin, end);
  }
  for (auto& thread : pool) thread.join();

  std::FILE* g = std::fopen(argv[2], "wb");
  if (!g) return fail(std::string("cannot create output file ") + argv[2]);
  const bool written = std::fwrite(out.data(), sizeof(std::int64_t), out.size(), g) == out.size();
  if (std::fclose(g) != 0 || !written) return fail(std::string("cannot write output file ") + argv[2]);
  return 0;
}

}  // namespace qfx

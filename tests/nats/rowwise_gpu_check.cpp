// The CUDA row-wise NAtS kernels (nats/cuda/nats_kernels.cu) against their host run (nats_kernels_host.cpp)
// on random inputs, with the CUDA runtime only: no LibTorch, so it runs on a GPU machine even where the
// LibTorch-facing build does not, and it links the .cu code in every build that finds CUDA (so a missing
// symbol shows in CI). Exit 0: agree; 1: disagree or a CUDA error; 77: no GPU here (ctest: skipped).
// Usage: nats_rowwise_gpu_check [T] [D]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "nats/cuda/nats_kernels.h"
#include "nats/cuda/nats_rows.h"

namespace {

using nats::rows::Args;

struct Buffers {
  std::vector<float> q, k, v, dout, out, lse, lse_f, delta, dq, dk, dv, dtypes;
  std::vector<int8_t> types;
  std::vector<int32_t> last, next, prev;
  std::vector<double> type_sums;
};

template <typename T>
T* Upload(const std::vector<T>& host, std::vector<void*>* owned) {
  void* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(1, host.size()) * sizeof(T)) != cudaSuccess) return nullptr;
  cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  owned->push_back(p);
  return static_cast<T*>(p);
}

template <typename T>
void Download(const T* device, std::vector<T>* host) {
  cudaMemcpy(host->data(), device, host->size() * sizeof(T), cudaMemcpyDeviceToHost);
}

// Points `a` at the buffers of `b` (host) or at device copies of them (device).
Args<float> Bind(Buffers* b, const Args<float>& shape, bool device, std::vector<void*>* owned) {
  Args<float> a = shape;
  auto bind = [&](auto& vec) { return device ? Upload(vec, owned) : vec.data(); };
  a.q = bind(b->q);
  a.k = bind(b->k);
  a.v = bind(b->v);
  a.dout = bind(b->dout);
  a.types = bind(b->types);
  a.out = bind(b->out);
  a.lse_m = bind(b->lse);
  a.lse_f = bind(b->lse_f);
  a.delta = bind(b->delta);
  a.dq = bind(b->dq);
  a.dk = bind(b->dk);
  a.dv = bind(b->dv);
  a.dtypes = bind(b->dtypes);
  a.last = bind(b->last);
  a.next = bind(b->next);
  a.prev = bind(b->prev);
  a.type_sums = bind(b->type_sums);
  return a;
}

double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  double scale = 0, err = 0;
  for (size_t x = 0; x < want.size(); ++x) {
    scale = std::max(scale, static_cast<double>(std::fabs(want[x])));
    err = std::max(err, static_cast<double>(std::fabs(got[x] - want[x])));
  }
  return err / std::max(scale, 1e-30);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  Args<float> shape;
  shape.b = 1;
  shape.h = 8;
  shape.h_kv = 2;
  shape.n_rep = 4;
  shape.t = argc > 1 ? std::atoll(argv[1]) : 1000;
  shape.d = argc > 2 ? std::atoll(argv[2]) : 64;
  shape.window = 32;
  shape.lambda = 1e-3;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(shape.d));
  const size_t nq = shape.b * shape.h * shape.t * shape.d, nk = shape.b * shape.h_kv * shape.t * shape.d;
  const size_t rows = shape.b * shape.h * shape.t, cols = shape.b * shape.h_kv * shape.t;
  Buffers host;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform;
  auto randn = [&](size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = normal(rng);
    return x;
  };
  host.q = randn(nq);
  host.k = randn(nk);
  host.v = randn(nk);
  host.dout = randn(nq);
  host.types.resize(cols);
  for (size_t j = 0; j < cols; ++j) {  // a learned-looking mix: 3% global, 12% local, the rest sliding
    const float u = uniform(rng);
    host.types[j] = u < 0.03f ? 0 : (u < 0.15f ? 1 : 2);
    if (j % shape.t == 0) host.types[j] = 0;
  }
  for (auto* vec : {&host.out, &host.dq}) vec->assign(nq, 0);
  for (auto* vec : {&host.dk, &host.dv}) vec->assign(nk, 0);
  for (auto* vec : {&host.lse, &host.lse_f, &host.delta}) vec->assign(rows, 0);
  host.dtypes.assign(cols * 3, 0);
  for (auto* vec : {&host.last, &host.next, &host.prev}) vec->assign(cols, 0);
  host.type_sums.assign(cols * 4, 0.0);
  Buffers gpu = host;

  std::vector<void*> owned;
  const Args<float> on_host = Bind(&host, shape, false, &owned);
  nats::rows::host::BuildMeta(on_host);
  nats::rows::host::Forward(on_host);
  nats::rows::host::Backward(on_host);

  const Args<float> on_gpu = Bind(&gpu, shape, true, &owned);
  int code = nats::rows::gpu::BuildMeta(on_gpu, nullptr);
  if (code == 0) code = nats::rows::gpu::Forward(on_gpu, nullptr);
  if (code == 0) code = nats::rows::gpu::Backward(on_gpu, nullptr);
  if (code == 0) code = static_cast<int>(cudaDeviceSynchronize());
  if (code != 0) {
    std::printf("CUDA error: %s\n", nats::rows::gpu::ErrorString(code));
    return 1;
  }
  Download(on_gpu.out, &gpu.out);
  Download(on_gpu.dq, &gpu.dq);
  Download(on_gpu.dk, &gpu.dk);
  Download(on_gpu.dv, &gpu.dv);
  Download(on_gpu.dtypes, &gpu.dtypes);
  for (void* p : owned) cudaFree(p);

  bool ok = true;
  const std::pair<const char*, double> errors[] = {{"out", MaxRelError(gpu.out, host.out)},
                                                   {"dq", MaxRelError(gpu.dq, host.dq)},
                                                   {"dk", MaxRelError(gpu.dk, host.dk)},
                                                   {"dv", MaxRelError(gpu.dv, host.dv)},
                                                   {"dtypes", MaxRelError(gpu.dtypes, host.dtypes)}};
  std::printf("T %lld D %lld:", static_cast<long long>(shape.t), static_cast<long long>(shape.d));
  for (const auto& [name, err] : errors) {
    std::printf(" %s %.2e", name, err);
    ok = ok && err < 1e-3;
  }
  std::printf(" -> %s\n", ok ? "agree" : "DISAGREE");
  return ok ? 0 : 1;
}

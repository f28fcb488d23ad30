// nats/cuda/nats_kernels.h
//
// Launchers of the row-wise NAtS attention kernels (nats/cuda/nats_rows.h), on the GPU (nats_kernels.cu,
// compiled by nvcc in every build that finds CUDA) and on the host (nats_kernels_host.cpp, the same
// arithmetic in host loops: what the CPU tests run). Raw pointers only; the caller (nats/cuda/
// device_attention.cpp) allocates every buffer Args names, zero-fills type_sums, and checks the types.
// Order of one training step: BuildMeta, Forward, then Backward (delta, dq, column pass, collected term,
// type gradient).
#pragma once

#include <cstdint>

namespace nats::rows {

template <typename S>
struct Args;

namespace host {
template <typename S>
void BuildMeta(const Args<S>& a);
template <typename S>
void Forward(const Args<S>& a);
template <typename S>
void Backward(const Args<S>& a);
}  // namespace host

namespace gpu {
// Each returns 0 or the CUDA error code of its first failed launch (ErrorString names it). `stream` is a
// cudaStream_t (nullptr: the legacy default stream).
int BuildMeta(const Args<float>& a, void* stream);
int Forward(const Args<float>& a, void* stream);
int Backward(const Args<float>& a, void* stream);
const char* ErrorString(int code);
}  // namespace gpu

}  // namespace nats::rows

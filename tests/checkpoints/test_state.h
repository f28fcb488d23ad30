// tests/checkpoints/test_state.h
//
// Shared pieces of the checkpoint tests: a scratch directory every rank agrees on, and a synthetic
// training state whose global values depend only on the tensor's name (never on the world size), held
// in the layouts a trainer produces: replicated (plain DP parameters), ZeRO-style disjoint shards,
// overlapping shards, and a tensor only the last rank holds.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "runtime/checkpointing.h"

namespace nats::checkpoint_testing {

// <TMPDIR or /tmp>/nats_ckpt_<name>_<pid of rank 0>, created empty by rank 0; collective.
std::string SharedTempDir(parallel::Communicator& comm, const std::string& name);
// Collective: a barrier, then rank 0 removes `dir`.
void RemoveSharedDir(parallel::Communicator& comm, const std::string& dir);

enum class Layout { kReplicated, kSharded, kOverlapping, kLastRankOnly };

struct GlobalSpec {
  std::string name;
  std::vector<int64_t> shape;
  at::ScalarType dtype;
  Layout layout;
};

// float32, float64, int64, uint8 (and bfloat16), every layout; one replicated tensor above the 8 MiB
// split size so that its writes are shared between ranks.
std::vector<GlobalSpec> Specs();
at::Tensor GlobalValue(const GlobalSpec& spec);
// Elements [lo, hi) of the flattened global tensor that `rank` of `size` holds under spec.layout.
std::pair<int64_t, int64_t> HeldRange(const GlobalSpec& spec, int rank, int size);
std::vector<StateTensor> SyntheticState(int rank, int size);

// A deterministic tensor of any dtype (seeded; identical on every rank).
at::Tensor SeededTensor(uint64_t seed, at::IntArrayRef shape, at::ScalarType dtype);

// Flips one bit of the file at byte `offset`; truncates a file to `size` bytes.
void FlipBit(const std::string& path, uint64_t offset);
void Truncate(const std::string& path, uint64_t size);

}  // namespace nats::checkpoint_testing

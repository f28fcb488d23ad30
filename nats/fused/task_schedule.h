// nats/fused/task_schedule.h (internal to the fused kernel, nats/fused/)
//
// Tasks are (batch, query head, query block of kBlock rows), dealt round robin to the threads, largest
// blocks first (causal blocks differ in cost by up to T/kBlock); static so that results are deterministic.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "nats/attention_shapes.h"

namespace nats::fused {

// Runs fn(task, slot) for task in [0, n) on at::get_num_threads() threads; slot < NumSlots().
// Slot s takes tasks s, s + slots, s + 2 slots, ... (tasks come largest first, so the round robin balances
// well). A static assignment rather than a shared counter: each slot's dk/dv/type buffers then receive the
// same tasks in the same order on every run, so gradients are bit-identical for a given thread count, which
// exact resume (checkpoints) relies on.
inline int NumSlots() { return std::max(1, at::get_num_threads()); }

template <typename Fn>
void ForEachTask(int64_t n, const Fn& fn) {
  const int64_t slots = NumSlots();
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot) {
      for (int64_t task = slot; task < n; task += slots) fn(task, slot);
    }
  });
}

// Task -> (batch*head, query block), largest (latest) blocks first.
struct TaskIndex {
  int64_t bh, qb;
};
inline TaskIndex Decode(int64_t task, const AttentionDims& dims, int64_t n_blocks) {
  const int64_t bhs = dims.b * dims.h;
  return {task % bhs, n_blocks - 1 - task / bhs};
}

}  // namespace nats::fused

// parallel/process_grid.h
//
// The dp x sp layout of the world (docs/architecture.md section 5, parallel/). Sequence parallelism is
// innermost: world rank = dp_rank * sp + sp_rank, so the sp ranks that share one sequence (r*sp .. r*sp+sp-1)
// are neighbours, which mpirun places on one node. Every rank holds a full model replica. Each sp rank's
// gradient covers only its part of the sequence, so with a per-rank mean loss over equal token counts the
// gradient average runs over world() (dp x sp, docs/architecture.md section 4); with sp = 1, world() and dp()
// are the same group. Sequence-parallel KV exchanges happen on sp().
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace nats::parallel {

class ProcessGrid {
 public:
  // dp <= 0 means "world size / sp". Returns InvalidArgument naming parallel.dp and parallel.sp when
  // dp * sp != world size. Collective over `world` (it builds the sub-communicators with Split).
  static absl::StatusOr<std::unique_ptr<ProcessGrid>> Create(std::unique_ptr<Communicator> world, int dp,
                                                             int sp);

  Communicator& world() { return *world_; }
  // Ranks with the same sp_rank: gradient averaging and ZeRO sharding.
  Communicator& dp() { return *dp_; }
  // Ranks of one sequence.
  Communicator& sp() { return *sp_; }

  int dp_size() const { return dp_size_; }
  int sp_size() const { return sp_size_; }
  int dp_rank() const { return dp_rank_; }
  int sp_rank() const { return sp_rank_; }

 private:
  ProcessGrid() = default;
  std::unique_ptr<Communicator> world_, dp_, sp_;
  int dp_size_ = 1, sp_size_ = 1, dp_rank_ = 0, sp_rank_ = 0;
};

}  // namespace nats::parallel

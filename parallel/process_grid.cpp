#include "parallel/process_grid.h"

#include "absl/strings/str_cat.h"

namespace nats::parallel {

absl::StatusOr<std::unique_ptr<ProcessGrid>> ProcessGrid::Create(std::unique_ptr<Communicator> world, int dp,
                                                                 int sp) {
  const int n = world->size();
  if (sp < 1) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.sp must be >= 1, got ", sp));
  }
  if (dp <= 0) {
    if (n % sp != 0) {
      return absl::InvalidArgumentError(absl::StrCat("parallel.sp (", sp,
                                                     ") does not divide the world size (", n,
                                                     " ranks); choose parallel.sp dividing the rank count"));
    }
    dp = n / sp;
  }
  if (dp * sp != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.dp (", dp, ") x parallel.sp (", sp, ") = ", dp * sp, " but the world has ", n,
        " ranks; set parallel.dp * parallel.sp to the rank count (mpirun -np) or leave parallel.dp at 0"));
  }
  auto grid = std::unique_ptr<ProcessGrid>(new ProcessGrid());
  grid->dp_size_ = dp;
  grid->sp_size_ = sp;
  grid->dp_rank_ = world->rank() / sp;
  grid->sp_rank_ = world->rank() % sp;
  auto sp_comm = world->Split(/*color=*/grid->dp_rank_, /*key=*/grid->sp_rank_);
  if (!sp_comm.ok()) return sp_comm.status();
  auto dp_comm = world->Split(/*color=*/grid->sp_rank_, /*key=*/grid->dp_rank_);
  if (!dp_comm.ok()) return dp_comm.status();
  grid->sp_ = std::move(*sp_comm);
  grid->dp_ = std::move(*dp_comm);
  grid->world_ = std::move(world);
  return grid;
}

}  // namespace nats::parallel

// AgreeOnStatus (parallel/rank_agreement.h) with real ranks: runs plainly (LocalCommunicator) and under
// mpirun with 1, 2 and 4 ranks. Every rank computes what the verdict must be from the rule "rank r fails
// when f(r)" and checks that it got exactly that, so all ranks are held to the same message.
// Also: the timeout message names parallel.timeout_s, and a child of Split inherits the timeout policy.
#include "parallel/rank_agreement.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "parallel/communicator.h"
#include "parallel/local_communicator.h"
#include "tests/parallel/test_world.h"

namespace nats::parallel {
namespace {

using testing::World;

std::string ShardError(int rank) { return absl::StrCat("data/rank", rank, "/train.tok: no such file"); }

TEST(AgreeOnStatus, AllOkGivesOkEverywhere) {
  Communicator& comm = World();
  EXPECT_TRUE(AgreeOnStatus(comm, absl::OkStatus()).ok());
  // Twice in a row: the collective leaves nothing pending.
  EXPECT_TRUE(AgreeOnStatus(comm, absl::OkStatus()).ok());
}

TEST(AgreeOnStatus, OneFailingRankReachesEveryRank) {
  Communicator& comm = World();
  const int bad = comm.size() - 1;  // the last rank: on 1 rank that is rank 0 itself
  const absl::Status mine = comm.rank() == bad ? absl::NotFoundError(ShardError(bad)) : absl::OkStatus();
  const absl::Status got = AgreeOnStatus(comm, mine);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), absl::StatusCode::kNotFound) << got;
  EXPECT_TRUE(absl::StrContains(got.message(), ShardError(bad))) << got;
  if (comm.size() > 1) {
    EXPECT_EQ(got.message(), absl::StrCat("rank ", bad, " of ", comm.size(), " failed: ", ShardError(bad)))
        << got;
  } else {
    EXPECT_EQ(got, mine);  // one rank: the status unchanged
  }
}

TEST(AgreeOnStatus, SeveralFailingRanksNameAllAndReportTheFirst) {
  Communicator& comm = World();
  if (comm.size() < 4) GTEST_SKIP() << "needs 4 ranks";
  // Ranks 1 and 3 fail with different codes and messages; everybody gets rank 1's.
  absl::Status mine = absl::OkStatus();
  if (comm.rank() == 1) mine = absl::NotFoundError(ShardError(1));
  if (comm.rank() == 3)
    mine = absl::InvalidArgumentError("model.d_model = 7 must be a multiple of model.n_head");
  const absl::Status got = AgreeOnStatus(comm, mine);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), absl::StatusCode::kNotFound) << got;
  EXPECT_EQ(got.message(), absl::StrCat("ranks 1, 3 of 4 failed; rank 1: ", ShardError(1))) << got;
}

TEST(AgreeOnStatus, RankZeroFailingAndEmptyMessages) {
  Communicator& comm = World();
  const absl::Status mine = comm.rank() == 0 ? absl::InternalError("") : absl::OkStatus();
  const absl::Status got = AgreeOnStatus(comm, mine);
  EXPECT_EQ(got.code(), absl::StatusCode::kInternal) << got;
  if (comm.size() > 1) EXPECT_EQ(got.message(), absl::StrCat("rank 0 of ", comm.size(), " failed: ")) << got;
}

TEST(AgreeOnStatus, LongMessagesAreCut) {
  Communicator& comm = World();
  if (comm.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  const std::string long_text(100000, 'x');
  const absl::Status got =
      AgreeOnStatus(comm, comm.rank() == 1 ? absl::DataLossError(long_text) : absl::OkStatus());
  EXPECT_EQ(got.code(), absl::StatusCode::kDataLoss);
  const std::string prefix = absl::StrCat("rank 1 of ", comm.size(), " failed: ");
  EXPECT_EQ(got.message().size(), prefix.size() + 4096);
  EXPECT_TRUE(absl::StartsWith(got.message(), prefix));
}

TEST(TimeoutPolicy, DefaultAbortsAndSplitInheritsTheSetting) {
  LocalCommunicator local;
  EXPECT_TRUE(local.abort_on_timeout());  // what `nats train` runs with
  local.set_abort_on_timeout(false);
  auto child = local.Split(0, 0);
  ASSERT_TRUE(child.ok());
  EXPECT_FALSE((*child)->abort_on_timeout());

  Communicator& comm = World();
  EXPECT_FALSE(comm.abort_on_timeout());  // test_world turns it off
  auto sub = comm.Split(0, comm.rank());
  ASSERT_TRUE(sub.ok());
  EXPECT_FALSE((*sub)->abort_on_timeout());
}

TEST(TimeoutPolicy, MessageNamesTheConfigField) {
  Communicator& comm = World();
  if (comm.backend() == "local") GTEST_SKIP() << "nothing times out without peers";
  auto self = comm.Split(comm.rank(), 0);  // a communicator of one: only we could send the message
  ASSERT_TRUE(self.ok());
  (*self)->set_timeout(absl::Milliseconds(100));
  at::Tensor t = at::zeros({2});
  const absl::Status s = (*self)->Recv(t, 0, 5);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "parallel.timeout_s")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "on rank 0 of 1")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "waited")) << s;
  EXPECT_TRUE((*self)->Send(at::ones({2}), 0, 5).ok());  // complete the abandoned receive
}

TEST(TimeoutPolicy, HandleTimeoutReturnsStatusWhenNotAborting) {
  const absl::Status s = internal::HandleTimeout(false, "X did not complete");
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s.message(), "X did not complete");
}

TEST(TimeoutPolicyDeathTest, AbortPrintsOneLineAndEndsTheProcess) {
  // Forking is only safe without MPI; under mpirun the stopped-rank test (tests/runtime) covers MPI_Abort.
  if (World().backend() != "local") GTEST_SKIP() << "plain process only";
  EXPECT_EXIT((void)internal::HandleTimeout(true, "MPI Barrier did not complete"),
              ::testing::ExitedWithCode(kTimeoutExitCode),
              "nats: MPI Barrier did not complete; aborting the job");
}

}  // namespace
}  // namespace nats::parallel

// Every collective of the world communicator against its definition, computed locally from the inputs
// every rank can regenerate (RandomTensor is seeded per rank). Runs with 1, 2 and 4 ranks under mpirun
// and as a plain process (LocalCommunicator).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "data/fingerprint.h"
#include "parallel/communicator.h"
#include "parallel/local_communicator.h"
#include "parallel/process_grid.h"
#include "parallel/rank_agreement.h"
#include "tests/parallel/test_world.h"

namespace nats::parallel {
namespace {

using testing::RandomTensor;
using testing::World;

const std::vector<at::ScalarType> kReduceTypes = {at::kFloat, at::kDouble, at::kInt, at::kLong, at::kByte};
const std::vector<int64_t> kSizes = {0, 1, 7, 13, 1031};

void ExpectEqualTensors(const at::Tensor& got, const at::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  if (at::isFloatingType(want.scalar_type())) {
    // Reductions may add in another order than the reference.
    EXPECT_TRUE(at::allclose(got.to(at::kDouble), want.to(at::kDouble), 1e-5, 1e-6)) << what;
  } else {
    EXPECT_TRUE(at::equal(got, want)) << what;
  }
}

at::Tensor Reference(ReduceOp op, const std::vector<at::Tensor>& inputs) {
  at::Tensor acc = inputs[0].clone();
  for (size_t q = 1; q < inputs.size(); ++q) {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        acc = acc + inputs[q];
        break;
      case ReduceOp::kMax:
        acc = at::maximum(acc, inputs[q]);
        break;
      case ReduceOp::kMin:
        acc = at::minimum(acc, inputs[q]);
        break;
    }
  }
  if (op == ReduceOp::kAvg) acc = acc / static_cast<double>(inputs.size());
  return acc.to(inputs[0].scalar_type());
}

TEST(Collectives, AllReduceMatchesDefinition) {
  Communicator& comm = World();
  uint64_t seed = 1;
  for (auto dtype : kReduceTypes) {
    for (int64_t n : kSizes) {
      for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
        ++seed;
        if (op == ReduceOp::kAvg && !at::isFloatingType(dtype)) continue;
        std::vector<at::Tensor> inputs;
        for (int q = 0; q < comm.size(); ++q) inputs.push_back(RandomTensor(seed * 100 + q, {n}, dtype));
        at::Tensor mine = inputs[comm.rank()].clone();
        ASSERT_TRUE(comm.AllReduce(mine, op).ok());
        ExpectEqualTensors(
            mine, Reference(op, inputs),
            std::string(ReduceOpName(op)) + " " + c10::toString(dtype) + " n=" + std::to_string(n));
      }
    }
  }
}

TEST(Collectives, AllReduceAsyncOverlapsSeveral) {
  Communicator& comm = World();
  std::vector<at::Tensor> mine, want;
  std::vector<std::unique_ptr<Work>> works;
  for (int i = 0; i < 5; ++i) {
    std::vector<at::Tensor> inputs;
    for (int q = 0; q < comm.size(); ++q)
      inputs.push_back(RandomTensor(500 + 10 * i + q, {2, 3 + i}, at::kFloat));
    mine.push_back(inputs[comm.rank()].clone());
    want.push_back(Reference(ReduceOp::kAvg, inputs));
  }
  for (auto& t : mine) works.push_back(comm.AllReduceAsync(t, ReduceOp::kAvg));
  for (size_t i = 0; i < works.size(); ++i) {
    ASSERT_TRUE(works[i]->Wait().ok());
    ExpectEqualTensors(mine[i], want[i], "async " + std::to_string(i));
  }
}

TEST(Collectives, RejectsBadArguments) {
  Communicator& comm = World();
  at::Tensor strided = at::zeros({4, 4}).t();
  EXPECT_EQ(comm.AllReduce(strided, ReduceOp::kSum).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor ints = at::zeros({3}, at::kInt);
  EXPECT_EQ(comm.AllReduce(ints, ReduceOp::kAvg).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor half = at::zeros({3}, at::kHalf);
  EXPECT_EQ(comm.AllReduce(half, ReduceOp::kSum).code(), absl::StatusCode::kInvalidArgument);
  at::Tensor in = at::zeros({3});
  at::Tensor wrong = at::zeros({3 * comm.size() + 1});
  EXPECT_EQ(comm.AllGather(in, wrong).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Collectives, AllGatherMatchesDefinition) {
  Communicator& comm = World();
  for (auto dtype : {at::kFloat, at::kLong, at::kByte, at::kHalf}) {
    for (int64_t n : kSizes) {
      std::vector<at::Tensor> inputs;
      for (int q = 0; q < comm.size(); ++q) {
        inputs.push_back(
            RandomTensor(7000 + n * 10 + q, {n}, dtype == at::kHalf ? at::kFloat : dtype).to(dtype));
      }
      at::Tensor out = at::empty({n * comm.size()}, at::TensorOptions(dtype));
      ASSERT_TRUE(comm.AllGather(inputs[comm.rank()], out).ok());
      EXPECT_TRUE(at::equal(out, at::cat(inputs))) << c10::toString(dtype) << " n=" << n;
    }
  }
}

int64_t RowsOf(int rank) { return (rank * 3 + 1) % 4; }  // 1, 0, 3, 2: includes an empty piece

TEST(Collectives, AllGatherVConcatenatesFirstDimension) {
  Communicator& comm = World();
  for (auto dtype : {at::kFloat, at::kInt, at::kHalf}) {
    std::vector<at::Tensor> inputs;
    for (int q = 0; q < comm.size(); ++q) {
      inputs.push_back(
          RandomTensor(900 + q, {RowsOf(q), 3, 2}, dtype == at::kHalf ? at::kFloat : dtype).to(dtype));
    }
    std::vector<at::Tensor> out;
    ASSERT_TRUE(comm.AllGatherV(inputs[comm.rank()], &out).ok());
    ASSERT_EQ(out.size(), static_cast<size_t>(comm.size()));
    for (int q = 0; q < comm.size(); ++q) EXPECT_TRUE(at::equal(out[q], inputs[q])) << "piece of rank " << q;
  }
}

TEST(Collectives, AllGatherVReportsRowMismatchOnEveryRank) {
  Communicator& comm = World();
  if (comm.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  at::Tensor in = at::zeros({2, comm.rank() == 1 ? 4 : 3});
  std::vector<at::Tensor> out;
  absl::Status s = comm.AllGatherV(in, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "rank 1")) << s;
}

TEST(Collectives, ReduceScatterMatchesDefinition) {
  Communicator& comm = World();
  for (auto dtype : kReduceTypes) {
    for (int64_t n : {0, 1, 5, 33}) {
      for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
        if (op == ReduceOp::kAvg && !at::isFloatingType(dtype)) continue;
        std::vector<at::Tensor> inputs;
        for (int q = 0; q < comm.size(); ++q)
          inputs.push_back(RandomTensor(3000 + n * 7 + q, {n * comm.size()}, dtype));
        at::Tensor out = at::empty({n}, at::TensorOptions(dtype));
        ASSERT_TRUE(comm.ReduceScatter(inputs[comm.rank()], out, op).ok());
        at::Tensor want = Reference(op, inputs).narrow(0, comm.rank() * n, n);
        ExpectEqualTensors(out, want,
                           std::string("reduce-scatter ") + c10::toString(dtype) + " n=" + std::to_string(n));
      }
    }
  }
}

TEST(Collectives, BroadcastFromLastRank) {
  Communicator& comm = World();
  const int root = comm.size() - 1;
  for (auto dtype : {at::kFloat, at::kLong, at::kHalf}) {
    for (int64_t n : kSizes) {
      at::Tensor want = RandomTensor(11 + n, {n}, at::kFloat).to(dtype);
      at::Tensor t = comm.rank() == root ? want.clone() : at::zeros({n}, at::TensorOptions(dtype));
      ASSERT_TRUE(comm.Broadcast(t, root).ok());
      EXPECT_TRUE(at::equal(t, want));
    }
  }
  at::Tensor t = at::zeros({2});
  EXPECT_EQ(comm.Broadcast(t, comm.size()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Collectives, SendRecvRing) {
  Communicator& comm = World();
  if (comm.size() < 2) {
    at::Tensor t = at::zeros({2});
    if (comm.backend() == "local") EXPECT_FALSE(comm.Send(t, 0, 0).ok());
    GTEST_SKIP() << "needs 2 ranks";
  }
  const int next = (comm.rank() + 1) % comm.size();
  const int prev = (comm.rank() + comm.size() - 1) % comm.size();
  for (int64_t n : {int64_t{0}, int64_t{5}, int64_t{100000}}) {  // 100000 floats: beyond the eager limit
    at::Tensor out = RandomTensor(40 + comm.rank(), {n}, at::kFloat);
    at::Tensor in = at::empty({n});
    // Even ranks send first, odd ranks receive first: no cycle of blocked senders.
    if (comm.rank() % 2 == 0) {
      ASSERT_TRUE(comm.Send(out, next, 7).ok());
      ASSERT_TRUE(comm.Recv(in, prev, 7).ok());
    } else {
      ASSERT_TRUE(comm.Recv(in, prev, 7).ok());
      ASSERT_TRUE(comm.Send(out, next, 7).ok());
    }
    EXPECT_TRUE(at::equal(in, RandomTensor(40 + prev, {n}, at::kFloat)));
  }
}

at::Tensor AllToAllPiece(int from, int to) {
  const int64_t rows = (from + 2 * to) % 3;
  return at::arange(rows * 2, at::kLong).view({rows, 2}) + from * 100 + to * 10;
}

TEST(Collectives, AllToAllVMatchesDefinition) {
  Communicator& comm = World();
  std::vector<at::Tensor> send, recv;
  for (int to = 0; to < comm.size(); ++to) send.push_back(AllToAllPiece(comm.rank(), to));
  ASSERT_TRUE(comm.AllToAllV(send, &recv).ok());
  ASSERT_EQ(recv.size(), static_cast<size_t>(comm.size()));
  for (int from = 0; from < comm.size(); ++from) {
    EXPECT_TRUE(at::equal(recv[from], AllToAllPiece(from, comm.rank()))) << "from " << from;
  }
}

TEST(Collectives, SplitGroupsByColorOrdersByKey) {
  Communicator& comm = World();
  ASSERT_TRUE(comm.Barrier().ok());
  const int color = comm.rank() % 2;
  auto child = comm.Split(color, /*key=*/-comm.rank());
  ASSERT_TRUE(child.ok()) << child.status();
  std::vector<int> members;
  for (int r = comm.size() - 1; r >= 0; --r) {
    if (r % 2 == color) members.push_back(r);  // descending: key = -rank
  }
  EXPECT_EQ((*child)->size(), static_cast<int>(members.size()));
  EXPECT_EQ(members[(*child)->rank()], comm.rank());
  at::Tensor t = at::full({1}, comm.rank(), at::kLong);
  ASSERT_TRUE((*child)->AllReduce(t, ReduceOp::kSum).ok());
  EXPECT_EQ(t.item<int64_t>(), std::accumulate(members.begin(), members.end(), int64_t{0}));
  EXPECT_EQ((*child)->timeout(), comm.timeout());
}

TEST(RankAgreement, AgreesAndReportsTheDifferingRank) {
  Communicator& comm = World();
  EXPECT_TRUE(CheckRanksAgree(comm, "config hash", data::Fingerprint64("model { d: 64 }")).ok());
  const int odd = comm.size() - 1;
  absl::Status s = CheckRanksAgree(comm, "parameter count", comm.rank() == odd && odd > 0 ? 101 : 100);
  if (comm.size() == 1) {
    EXPECT_TRUE(s.ok());
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(
        s.message(), "parameter count: rank " + std::to_string(odd) + " has 101, rank 0 has 100"))
        << s;
  }
}

TEST(ProcessGrid, SequenceParallelIsInnermost) {
  Communicator& comm = World();
  for (int sp = 1; sp <= comm.size(); ++sp) {
    if (comm.size() % sp != 0) continue;
    auto world = comm.Split(0, comm.rank());
    ASSERT_TRUE(world.ok());
    auto grid = ProcessGrid::Create(std::move(*world), /*dp=*/0, sp);
    ASSERT_TRUE(grid.ok()) << grid.status();
    ProcessGrid& g = **grid;
    EXPECT_EQ(g.dp_size() * g.sp_size(), comm.size());
    EXPECT_EQ(g.dp_rank() * sp + g.sp_rank(), comm.rank());
    EXPECT_EQ(g.sp().size(), sp);
    EXPECT_EQ(g.sp().rank(), g.sp_rank());
    EXPECT_EQ(g.dp().size(), g.dp_size());
    EXPECT_EQ(g.dp().rank(), g.dp_rank());
    // The sp group of this rank is the block [dp_rank * sp, dp_rank * sp + sp).
    at::Tensor t = at::full({1}, comm.rank(), at::kLong);
    ASSERT_TRUE(g.sp().AllReduce(t, ReduceOp::kSum).ok());
    const int64_t first = g.dp_rank() * sp;
    EXPECT_EQ(t.item<int64_t>(), sp * first + sp * (sp - 1) / 2);
  }
}

TEST(ProcessGrid, RejectsWrongProduct) {
  Communicator& comm = World();
  auto world = comm.Split(0, comm.rank());
  ASSERT_TRUE(world.ok());
  auto grid = ProcessGrid::Create(std::move(*world), /*dp=*/comm.size() + 1, /*sp=*/1);
  ASSERT_FALSE(grid.ok());
  EXPECT_EQ(grid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(grid.status().message(), "parallel.dp")) << grid.status();
  EXPECT_TRUE(absl::StrContains(grid.status().message(), "parallel.sp")) << grid.status();
}

TEST(Timeout, UnmatchedReceiveReturnsDeadlineExceeded) {
  Communicator& comm = World();
  if (comm.backend() == "local") GTEST_SKIP() << "no peers";
  auto self = comm.Split(comm.rank(), 0);  // a communicator of one: the message can only come from us
  ASSERT_TRUE(self.ok());
  (*self)->set_timeout(absl::Milliseconds(200));
  at::Tensor t = at::zeros({4});
  absl::Status s = (*self)->Recv(t, 0, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "Recv")) << s;
  // Complete the abandoned receive so nothing is pending at MPI_Finalize.
  EXPECT_TRUE((*self)->Send(at::ones({4}), 0, 3).ok());
}

TEST(Timeout, CollectiveWithAMissingRankReturnsDeadlineExceeded) {
  Communicator& comm = World();
  if (comm.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  auto sub = comm.Split(0, comm.rank());
  ASSERT_TRUE(sub.ok());
  at::Tensor notice = at::zeros({1});
  if (comm.rank() == 0) {
    (*sub)->set_timeout(absl::Milliseconds(300));
    absl::Status s = (*sub)->Barrier();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "Barrier")) << s;
    for (int r = 1; r < comm.size(); ++r) ASSERT_TRUE(comm.Send(notice, r, 9).ok());
  } else {
    // Join only after rank 0 gave up, so its barrier really missed us.
    ASSERT_TRUE(comm.Recv(notice, 0, 9).ok());
    EXPECT_TRUE((*sub)->Barrier().ok());
  }
  EXPECT_TRUE(comm.Barrier().ok());
}

TEST(Factory, ParsesBackendNames) {
  EXPECT_EQ(*ParseBackend("auto"), Backend::kAuto);
  EXPECT_EQ(*ParseBackend("MPI"), Backend::kMpi);
  EXPECT_FALSE(ParseBackend("gloo").ok());
  auto local = MakeCommunicator(Backend::kLocal);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ((*local)->size(), 1);
  EXPECT_EQ(World().backend(), LaunchedByMpi() ? "mpi" : "local");
#if !NATS_HAVE_NCCL
  EXPECT_EQ(MakeCommunicator(Backend::kNccl).status().code(), absl::StatusCode::kUnimplemented);
#endif
}

}  // namespace
}  // namespace nats::parallel

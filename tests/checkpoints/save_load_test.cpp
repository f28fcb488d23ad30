// SaveCheckpoint/LoadCheckpoint on the world of the test (plain: LocalCommunicator; under mpirun: 2 or 4
// ranks): every dtype and holding layout round-trips exactly, requests in another sharding than the save,
// errors are agreed by all ranks and name the tensor, file and fix, retention and `latest`, the
// save/stop decision, RNG capture, and the ZeRO-1 optimizer state through Export/ImportState.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/crash_point.h"
#include "parallel/zero_optimizer.h"
#include "runtime/checkpointing.h"
#include "runtime/signals.h"
#include "tests/checkpoints/test_state.h"
#include "tests/parallel/test_world.h"

namespace nats {
namespace {

using checkpoint_testing::GlobalSpec;
using checkpoint_testing::GlobalValue;
using checkpoint_testing::Specs;
using parallel::testing::World;

checkpoint::Manifest Header(int d_model) {
  checkpoint::Manifest h;
  h.mutable_config()->mutable_model()->set_d_model(d_model);
  h.set_consumed_samples(1234);
  h.set_dp(World().size());
  h.set_sp(1);
  auto* p = h.add_history();
  p->set_step(10);
  p->set_loss(3.5);
  return h;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Load requests of this rank: every tensor whole, plus a piece in an even split that differs from the
// save's, plus a window that starts mid-slice.
std::vector<StateTensor> Requests(int rank, int size) {
  std::vector<StateTensor> out;
  for (const GlobalSpec& spec : Specs()) {
    const int64_t n = Numel(spec.shape);
    const auto options = at::TensorOptions().dtype(spec.dtype);
    out.push_back(StateTensor{spec.name, at::zeros(spec.shape, options), spec.shape, 0});
    const int64_t lo = n * rank / size, hi = n * (rank + 1) / size;
    out.push_back(StateTensor{spec.name, at::zeros({hi - lo}, options), spec.shape, lo});
    if (n > 10) out.push_back(StateTensor{spec.name, at::zeros({n / 3}, options), spec.shape, n / 2 - rank});
  }
  return out;
}

void ExpectMatchesGlobal(const std::vector<StateTensor>& loaded) {
  for (const StateTensor& st : loaded) {
    for (const GlobalSpec& spec : Specs()) {
      if (spec.name != st.name) continue;
      at::Tensor want = GlobalValue(spec).reshape({-1}).narrow(0, st.global_offset, st.tensor.numel());
      EXPECT_TRUE(at::equal(st.tensor.reshape({-1}), want)) << st.name << " at " << st.global_offset;
    }
  }
}

TEST(SaveLoad, EveryDtypeAndLayoutRoundTrips) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "roundtrip");
  auto state = checkpoint_testing::SyntheticState(comm.rank(), comm.size());
  auto saved =
      SaveCheckpoint(comm, root, 10, state, Header(64), absl::StrCat("rng of rank ", comm.rank()), {});
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->step_dir, checkpoint::StepDirPath(root, 10));

  auto targets = Requests(comm.rank(), comm.size());
  auto loaded = LoadCheckpoint(comm, root, targets);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectMatchesGlobal(targets);

  const checkpoint::Manifest& m = loaded->manifest;
  EXPECT_EQ(m.step(), 10);
  EXPECT_EQ(m.consumed_samples(), 1234);
  EXPECT_EQ(m.world_size(), comm.size());
  EXPECT_EQ(m.config().model().d_model(), 64);
  EXPECT_EQ(m.history_size(), 1);
  ASSERT_EQ(m.rank_states_size(), comm.size());
  EXPECT_EQ(*SavedRngState(m, comm.rank(), comm.size()), absl::StrCat("rng of rank ", comm.rank()));
  EXPECT_FALSE(SavedRngState(m, 0, comm.size() + 1).has_value());
  // Every tensor element was written exactly once (the reader validated coverage at Open); the large
  // replicated tensor was written by two ranks when there are two.
  for (const auto& t : m.tensors()) {
    std::set<int> writers;
    for (const auto& s : t.slices()) writers.insert(s.rank());
    if (t.name() == "model/big") EXPECT_EQ(static_cast<int>(writers.size()), std::min(comm.size(), 2));
    if (t.name() == "extra/last_only") EXPECT_EQ(writers, std::set<int>{comm.size() - 1});
  }
  EXPECT_EQ(*checkpoint::ReadLatest(root), 10);
  checkpoint_testing::RemoveSharedDir(comm, root);
}

TEST(SaveLoad, ShapeMismatchNamesTheConfigChange) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "shape");
  const std::vector<int64_t> shape = {384, 128};
  std::vector<StateTensor> state = {{"model/h0.qkv.weight", at::ones(shape), shape, 0}};
  ASSERT_TRUE(SaveCheckpoint(comm, root, 1, state, Header(128), "", {}).ok());
  config::Config current;
  current.mutable_model()->set_d_model(64);
  std::vector<StateTensor> targets = {{"model/h0.qkv.weight", at::zeros({384, 64}), {384, 64}, 0}};
  LoadOptions options;
  options.current_config = &current;
  auto loaded = LoadCheckpoint(comm, root, targets, options);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("tensor model/h0.qkv.weight: checkpoint shape [384, 128] but the "
                                           "model has [384, 64]; the model config "
                                           "changed: model.d_model 128 -> 64"),
            absl::string_view::npos)
      << loaded.status();
  // A tensor the checkpoint lacks: an error, or listed when allowed.
  std::vector<StateTensor> extra = {{"model/new", at::zeros({2}), {2}, 0}};
  EXPECT_EQ(LoadCheckpoint(comm, root, extra).status().code(), absl::StatusCode::kNotFound);
  options.allow_missing = true;
  options.current_config = nullptr;
  auto partial = LoadCheckpoint(comm, root, extra, options);
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ(partial->missing, std::vector<std::string>{"model/new"});
  checkpoint_testing::RemoveSharedDir(comm, root);
}

// Damage made by rank 0 between a save and a load; every rank must refuse the load.
void ExpectDamageRefused(const std::string& what, const std::function<void(const std::string&)>& damage,
                         const std::vector<std::string>& message_parts) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "damage");
  std::vector<StateTensor> state = {{"model/w", at::arange(1000, at::kFloat), {1000}, 0}};
  ASSERT_TRUE(SaveCheckpoint(comm, root, 3, state, Header(8), "", {}).ok());
  const std::string step_dir = checkpoint::StepDirPath(root, 3);
  if (comm.rank() == 0) damage(step_dir);
  ASSERT_TRUE(comm.Barrier().ok());
  std::vector<StateTensor> targets = {{"model/w", at::zeros({1000}), {1000}, 0}};
  auto loaded = LoadCheckpoint(comm, root, targets);
  ASSERT_FALSE(loaded.ok()) << what;
  for (const std::string& part : message_parts) {
    EXPECT_NE(loaded.status().message().find(part), absl::string_view::npos)
        << what << ": " << loaded.status();
  }
  checkpoint_testing::RemoveSharedDir(comm, root);
}

TEST(SaveLoad, CorruptionIsRefusedNamingTensorAndFile) {
  ExpectDamageRefused(
      "bit flip", [](const std::string& dir) { checkpoint_testing::FlipBit(dir + "/rank_0.bin", 64 + 100); },
      {"tensor model/w", "CRC mismatch", "rank_0.bin", "use an older step"});
  ExpectDamageRefused("truncated",
                      [](const std::string& dir) { checkpoint_testing::Truncate(dir + "/rank_0.bin", 500); },
                      {"tensor model/w", "rank_0.bin is truncated (500 bytes"});
  ExpectDamageRefused("missing blob",
                      [](const std::string& dir) { std::filesystem::remove(dir + "/rank_0.bin"); },
                      {"tensor model/w", "cannot open checkpoint blob", "rank_0.bin"});
  ExpectDamageRefused("missing manifest",
                      [](const std::string& dir) { std::filesystem::remove(dir + "/manifest.pb"); },
                      {"no complete checkpoint"});
}

TEST(SaveLoad, RetentionAndLatest) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "retention");
  checkpoint::RetentionPolicy policy;
  policy.keep_last = 2;
  policy.keep_every = 3;
  for (int64_t step = 1; step <= 7; ++step) {
    std::vector<StateTensor> state = {{"s", at::full({4}, static_cast<double>(step), at::kDouble), {4}, 0}};
    auto saved = SaveCheckpoint(comm, root, step, state, Header(8), "", policy);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(*checkpoint::ReadLatest(root), step);
    EXPECT_EQ(*checkpoint::FindLatestCheckpoint(root), checkpoint::StepDirPath(root, step));
  }
  EXPECT_EQ(*checkpoint::ListCompleteSteps(root), (std::vector<int64_t>{3, 6, 7}));
  std::vector<StateTensor> targets = {{"s", at::zeros({4}, at::kDouble), {4}, 0}};
  ASSERT_TRUE(LoadCheckpoint(comm, root, targets).ok());
  EXPECT_TRUE(at::equal(targets[0].tensor, at::full({4}, 7.0, at::kDouble)));
  ASSERT_TRUE(LoadCheckpoint(comm, checkpoint::StepDirPath(root, 3), targets).ok());
  EXPECT_TRUE(at::equal(targets[0].tensor, at::full({4}, 3.0, at::kDouble)));
  checkpoint_testing::RemoveSharedDir(comm, root);
}

// A full disk (injected: checkpoints/crash_point.h) on the last rank while it writes its blob: every rank
// gets the same error naming the blob and the bytes the save needs, the partial save is gone, the previous
// checkpoint loads, and once space is back the same step saves.
TEST(SaveLoad, DiskFullFailsOnEveryRankAndKeepsThePreviousCheckpoint) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "enospc");
  const int64_t per_rank = 1000;
  auto state = [&](float value) {
    return std::vector<StateTensor>{
        {"model/w", at::full({per_rank}, value), {per_rank * comm.size()}, per_rank * comm.rank()}};
  };
  ASSERT_TRUE(SaveCheckpoint(comm, root, 1, state(1), Header(8), "", {}).ok());
  const bool faulty = comm.rank() == comm.size() - 1;
  if (faulty) checkpoint::SetWriteFaultForTesting(100);  // 100 bytes into the blob (its header is 64)
  auto saved = SaveCheckpoint(comm, root, 2, state(2), Header(8), "", {});
  ASSERT_FALSE(saved.ok());
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kResourceExhausted) << saved.status();
  const uint64_t needed = static_cast<uint64_t>(comm.size()) * (checkpoint::kBlobHeaderBytes + per_rank * 4);
  for (const std::string& part :
       {std::string("checkpoint step 2 was not saved"), absl::StrCat("rank_", comm.size() - 1, ".bin"),
        std::string("No space left on device"), absl::StrCat("needs ", needed, " bytes"),
        absl::StrCat("the previous checkpoint ", checkpoint::StepDirPath(root, 1), " is intact")}) {
    EXPECT_NE(saved.status().message().find(part), absl::string_view::npos)
        << part << " in: " << saved.status();
  }
  ASSERT_TRUE(comm.Barrier().ok());
  if (comm.rank() == 0) EXPECT_FALSE(std::filesystem::exists(checkpoint::StagingDirPath(root, 2)));
  EXPECT_EQ(*checkpoint::ListCompleteSteps(root), std::vector<int64_t>{1});
  std::vector<StateTensor> targets = {
      {"model/w", at::zeros({per_rank * comm.size()}), {per_rank * comm.size()}, 0}};
  ASSERT_TRUE(LoadCheckpoint(comm, root, targets).ok());
  EXPECT_TRUE(at::equal(targets[0].tensor, at::full({per_rank * comm.size()}, 1.0f)));
  // The fault fires once (space was freed): the same step now saves.
  ASSERT_TRUE(SaveCheckpoint(comm, root, 2, state(2), Header(8), "", {}).ok());
  ASSERT_TRUE(LoadCheckpoint(comm, root, targets).ok());
  EXPECT_TRUE(at::equal(targets[0].tensor, at::full({per_rank * comm.size()}, 2.0f)));
  if (faulty) checkpoint::SetWriteFaultForTesting(-1);
  checkpoint_testing::RemoveSharedDir(comm, root);
}

TEST(SaveLoad, InconsistentDeclarationsFailOnEveryRank) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "declarations");
  // Elements [5, 10) held by nobody.
  std::vector<StateTensor> gap = {{"g", at::zeros({5}), {10}, 0}};
  auto saved = SaveCheckpoint(comm, root, 1, gap, Header(8), "", {});
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.status().message().find("state tensor g: elements [5, 10) are held by no rank"),
            absl::string_view::npos)
      << saved.status();
  if (comm.size() > 1) {  // ranks disagree on a dtype
    std::vector<StateTensor> mixed = {
        {"m", at::zeros({4}, comm.rank() == 1 ? at::kDouble : at::kFloat), {4}, 0}};
    saved = SaveCheckpoint(comm, root, 1, mixed, Header(8), "", {});
    ASSERT_FALSE(saved.ok());
    EXPECT_NE(saved.status().message().find("ranks disagree"), absl::string_view::npos) << saved.status();
  }
  // One rank's bad input (outside the global shape) is every rank's error.
  std::vector<StateTensor> bad = {{"b", at::zeros({4}), {4}, comm.rank() == comm.size() - 1 ? 2 : 0}};
  saved = SaveCheckpoint(comm, root, 1, bad, Header(8), "", {});
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.status().message().find("lie outside its global shape"), absl::string_view::npos)
      << saved.status();
  EXPECT_FALSE(checkpoint::FindLatestCheckpoint(root).ok());
  checkpoint_testing::RemoveSharedDir(comm, root);
}

TEST(SaveLoad, ZeroOptimizerStateRoundTripsThroughExportImport) {
  auto& comm = World();
  const std::string root = checkpoint_testing::SharedTempDir(comm, "zero");
  auto make_params = [] {
    std::vector<parallel::OptimizerParam> params;
    const std::vector<std::vector<int64_t>> shapes = {{7, 3}, {5}, {11}, {2, 2}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      params.push_back({absl::StrCat("p", i),
                        checkpoint_testing::SeededTensor(i, shapes[i], at::kFloat).requires_grad_(true)});
    }
    return params;
  };
  auto params = make_params();
  auto opt = parallel::ZeroOptimizer::Create(params, {}, comm);
  ASSERT_TRUE(opt.ok()) << opt.status();
  for (int step = 0; step < 2; ++step) {
    for (size_t i = 0; i < params.size(); ++i) {
      params[i].tensor.mutable_grad() =
          checkpoint_testing::SeededTensor(100 + 10 * step + i, params[i].tensor.sizes(), at::kFloat);
    }
    ASSERT_TRUE((*opt)->Step().ok());
  }
  std::vector<StateTensor> state = FromNamedShards((*opt)->ExportState(), "optim/");
  for (const auto& p : params) state.push_back(WholeTensor("model/" + p.name, p.tensor));
  ASSERT_TRUE(SaveCheckpoint(comm, root, 2, state, Header(8), "", {}).ok());

  auto fresh_params = make_params();
  auto fresh = parallel::ZeroOptimizer::Create(fresh_params, {}, comm);
  ASSERT_TRUE(fresh.ok());
  std::vector<StateTensor> targets = FromNamedShards((*fresh)->ExportState(), "optim/");
  for (const auto& p : fresh_params) targets.push_back(WholeTensor("model/" + p.name, p.tensor));
  auto loaded = LoadCheckpoint(comm, root, targets);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*fresh)->ImportState(ToNamedShards(targets, "optim/")).ok());
  EXPECT_EQ((*fresh)->step_count(), 2);
  auto a = (*opt)->ExportState(), b = (*fresh)->ExportState();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].tensor, b[i].tensor)) << a[i].name;
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(at::equal(params[i].tensor, fresh_params[i].tensor));
  checkpoint_testing::RemoveSharedDir(comm, root);
}

TEST(SaveLoad, DecisionIsAgreedAcrossRanks) {
  auto& comm = World();
  config::CheckpointConfig every5;
  every5.set_interval_steps(5);
  const absl::Time t0 = absl::Now();
  CheckpointSchedule by_steps(every5, t0);
  EXPECT_TRUE(by_steps.Due(5, t0));
  EXPECT_FALSE(by_steps.Due(4, t0));
  EXPECT_FALSE(by_steps.Due(0, t0));
  config::CheckpointConfig minutely;
  minutely.set_interval_minutes(1);
  CheckpointSchedule by_time(minutely, t0);
  EXPECT_FALSE(by_time.Due(3, t0 + absl::Seconds(59)));
  EXPECT_TRUE(by_time.Due(3, t0 + absl::Seconds(61)));
  by_time.MarkSaved(t0 + absl::Seconds(61));
  EXPECT_FALSE(by_time.Due(4, t0 + absl::Seconds(62)));

  // Only the last rank's clock says "due": every rank saves.
  const absl::Time now = comm.rank() == comm.size() - 1 ? t0 + absl::Seconds(61) : t0;
  auto decision = DecideCheckpoint(comm, CheckpointSchedule(minutely, t0), 3, now);
  ASSERT_TRUE(decision.ok());
  EXPECT_TRUE(decision->save);
  EXPECT_FALSE(decision->stop);

  // A stop signal on one rank stops (and saves) all.
  InstallStopSignalHandlers();
  if (comm.rank() == comm.size() - 1) ::raise(SIGTERM);
  EXPECT_EQ(StopRequested(), comm.rank() == comm.size() - 1);
  decision = DecideCheckpoint(comm, by_steps, 3, t0);
  ASSERT_TRUE(decision.ok());
  EXPECT_TRUE(decision->stop);
  EXPECT_TRUE(decision->save);
  ClearStopRequest();
  decision = DecideCheckpoint(comm, by_steps, 3, t0);
  EXPECT_FALSE(decision->save);
}

TEST(SaveLoad, CpuRngStateRestores) {
  const std::string state = CaptureCpuRngState();
  const at::Tensor a = at::randn({16});
  ASSERT_TRUE(RestoreCpuRngState(state).ok());
  EXPECT_TRUE(at::equal(a, at::randn({16})));
  EXPECT_EQ(RestoreCpuRngState("short").code(), absl::StatusCode::kInvalidArgument);
}

TEST(SaveLoad, ConfigChangeDescription) {
  config::Config a, b;
  EXPECT_EQ(DescribeModelConfigChange(a, b), "");
  b.mutable_model()->set_n_layer(4);
  b.mutable_nats()->add_layers(1);
  b.mutable_nats()->set_tau(0.5);  // not a parameter-shape field: not named
  EXPECT_EQ(DescribeModelConfigChange(a, b), "model.n_layer 12 -> 4, nats.layers [] -> [1]");
}

}  // namespace
}  // namespace nats

// Sequence parallelism with learned token types (issue: bytes moved per layer and step, `retained` vs `full`;
// step time with sp = 2 vs sp = 1; peak memory per rank). Run under mpirun; every rank is one sp rank of one
// sequence (world = sp; dp = 1).
//
// A trained NAtS checkpoint supplies the weights and hence the learned scorer; the model runs in training
// mode, so the token types are the ones training would use (straight-through Gumbel samples; the same noise
// on every rank). One window of `--tokens` tokens from `--data` (a validation shard) is the sequence.
//  - `--train`: forward + backward per step (the exchange moves packets forward and gradient replies back);
//    otherwise forward only (the all-gather of packets alone).
//  - world size 1: the plain model, no exchange (the sp = 1 baseline).
// Prints one JSON line (rank 0): step time, bytes sent per layer and step summed over ranks, packet and
// prefix entries, the type fractions of the chunk on rank 0, and the largest peak RSS over ranks.
//
// usage: mpirun -np P sp_bench --checkpoint DIR [--data data/books_byte/val.tok] [--tokens 8192] [--steps 2]
//                              [--mode retained|full] [--train] [--threads 1]
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/token_shard.h"
#include "nats/transformer.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/sequence_parallel.h"
#include "runtime/inference_model.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string checkpoint, data = "data/books_byte/val.tok", mode = "retained";
  int64_t tokens = 8192;
  int steps = 2, threads = 1;
  bool train = false;
};

[[noreturn]] void Usage(const char* why) {
  std::fprintf(
      stderr,
      "sp_bench: %s\nusage: mpirun -np P sp_bench --checkpoint DIR [--data FILE] [--tokens N] [--steps K] "
      "[--mode retained|full] [--train] [--threads T]\n",
      why);
  std::exit(2);
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + flag).c_str());
      return argv[++i];
    };
    if (flag == "--checkpoint")
      a.checkpoint = value();
    else if (flag == "--data")
      a.data = value();
    else if (flag == "--tokens")
      a.tokens = std::atoll(value().c_str());
    else if (flag == "--steps")
      a.steps = std::atoi(value().c_str());
    else if (flag == "--threads")
      a.threads = std::atoi(value().c_str());
    else if (flag == "--mode")
      a.mode = value();
    else if (flag == "--train")
      a.train = true;
    else
      Usage(("unknown flag " + flag).c_str());
  }
  if (a.checkpoint.empty()) Usage("--checkpoint is required");
  if (a.mode != "retained" && a.mode != "full") Usage("--mode must be retained or full");
  return a;
}

double PeakRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

std::string Array(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace nats;
  const Args args = Parse(argc, argv);
  at::set_num_threads(args.threads);
  auto world_or = parallel::MakeWorldCommunicator();
  if (!world_or.ok()) Usage(std::string(world_or.status().ToString()).c_str());
  parallel::Communicator& world = **world_or;
  const int sp = world.size(), rank = world.rank();

  // The fused kernel: the reference one would materialise T x T matrices at these lengths.
  auto loaded = LoadModelForInference(args.checkpoint, {"nats.impl=FUSED"});
  if (!loaded.ok()) Usage(std::string(loaded.status().ToString()).c_str());
  Transformer model = loaded->model;
  model->train();
  auto shard = data::TokenShard::Open(args.data);
  if (!shard.ok()) Usage(std::string(shard.status().ToString()).c_str());
  if (static_cast<int64_t>(shard->num_tokens()) < args.tokens + 1)
    Usage("--data is shorter than --tokens + 1");
  std::vector<int32_t> ids(args.tokens + 1);
  shard->Read(0, ids.size(), ids.data());
  at::Tensor tokens = torch::from_blob(ids.data(), {1, args.tokens + 1}, torch::kInt32).to(torch::kInt64);

  parallel::SequenceParallel exchange(
      world, args.mode == "full" ? parallel::SpExchange::kFull : parallel::SpExchange::kRetained);
  exchange.SetSequenceLength(args.tokens);
  model->SetRegulariserScale(sp);  // as the trainer: the regulariser once per sequence after the average
  int64_t begin = 0, end = args.tokens;
  if (sp > 1) {
    model->SetChunkAttention(&exchange);
    begin = exchange.chunk_begin();
    end = exchange.chunk_end();
  }
  at::Tensor inputs = tokens.narrow(1, begin, end - begin);
  at::Tensor targets = tokens.narrow(1, begin + 1, end - begin);

  std::vector<double> step_seconds;
  for (int step = 0; step < args.steps + 1; ++step) {  // step 0 warms up and is not timed
    if (step == 1) exchange.ResetStats();
    torch::manual_seed(1234 + step);  // the same Gumbel noise on every rank
    model->zero_grad();
    world.Barrier().IgnoreError();
    const auto start = Clock::now();
    if (args.train) {
      at::Tensor logits = model->forward(inputs);
      at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), targets.reshape({-1}));
      loss.backward();
    } else {
      torch::NoGradGuard no_grad;
      model->forward(inputs);
    }
    world.Barrier().IgnoreError();
    if (step > 0) step_seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }

  // Per layer, per step, summed over ranks.
  const auto& stats = exchange.stats();
  const int64_t layers = static_cast<int64_t>(stats.size());
  at::Tensor sums = at::zeros({std::max<int64_t>(layers, 1), 3}, at::kDouble);
  for (int64_t l = 0; l < layers; ++l) {
    sums[l][0] = static_cast<double>(stats[l].bytes_sent) / args.steps;
    sums[l][1] = static_cast<double>(stats[l].packet_entries) / args.steps;
    sums[l][2] = static_cast<double>(stats[l].prefix_entries) / args.steps;
  }
  at::Tensor peak = torch::tensor({PeakRssMb()}, at::kDouble);
  if (sp > 1) {
    world.AllReduce(sums, parallel::ReduceOp::kSum).IgnoreError();
    world.AllReduce(peak, parallel::ReduceOp::kMax).IgnoreError();
  }
  std::vector<double> bytes, packet, prefix, global_frac;
  for (int64_t l = 0; l < layers; ++l) {
    bytes.push_back(sums[l][0].item<double>());
    packet.push_back(sums[l][1].item<double>());
    prefix.push_back(sums[l][2].item<double>());
  }
  for (const LayerStats& ls : model->LastLayerStats()) global_frac.push_back(ls.frac_global);
  double mean_step = 0;
  for (double s : step_seconds) mean_step += s / step_seconds.size();
  if (rank == 0) {
    std::printf(
        "{\"tokens\":%lld,\"sp\":%d,\"mode\":\"%s\",\"train\":%s,\"threads\":%d,\"step_s\":%.4f,"
        "\"bytes_per_layer_step\":%s,\"packet_entries\":%s,\"prefix_entries\":%s,\"frac_global_rank0\":%s,"
        "\"peak_rss_mb_max\":%.1f}\n",
        static_cast<long long>(args.tokens), sp, args.mode.c_str(), args.train ? "true" : "false",
        args.threads, mean_step, Array(bytes).c_str(), Array(packet).c_str(), Array(prefix).c_str(),
        Array(global_frac).c_str(), peak.item<double>());
  }
  model->SetChunkAttention(nullptr);
  world_or->reset();  // every communicator goes before MPI does
  parallel::FinalizeMpi();
  return 0;
}

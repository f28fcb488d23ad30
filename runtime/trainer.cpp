#include "runtime/trainer.h"

#include <cblas.h>  // openblas_set_num_threads
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/checkpoint_reader.h"
#include "data/fingerprint.h"
#include "data/human_units.h"
#include "data/loader.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"
#include "nats/executed_flops.h"
#include "nats/masks.h"
#include "nats/model_shape.h"
#include "nats/transformer.h"
#include "parallel/adamw.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"
#include "parallel/process_grid.h"
#include "parallel/rank_agreement.h"
#include "parallel/sequence_parallel.h"
#include "parallel/zero_optimizer.h"
#include "runtime/checkpointing.h"
#include "runtime/config.h"
#include "runtime/device_placement.h"
#include "runtime/distill_loss.h"
#include "runtime/event_file_writer.h"
#include "runtime/inference_model.h"
#include "runtime/kv_controller.h"
#include "runtime/lr_schedule.h"
#include "runtime/mask_window.h"
#include "runtime/metrics_log.h"
#include "runtime/peak_flops.h"
#include "runtime/run_directory.h"
#include "runtime/signals.h"
#include "runtime/step_guard.h"

namespace nats {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct InitFromCounts {
  int64_t loaded = 0;       // model tensors read from the checkpoint
  int64_t initialised = 0;  // scorer parameters the checkpoint lacks (a dense model's), left as initialised
};

// train.init_from: every model/<param> of the checkpoint into `model`. Only scorer parameters may be missing;
// anything else that does not match one to one is the wrong checkpoint or the wrong model config, and the
// message says which parameter and how to fix it.
absl::StatusOr<InitFromCounts> LoadInitialWeights(Transformer& model, const std::string& path) {
  const std::string field = absl::StrCat("train.init_from = ", path);
  auto step_dir = checkpoint::ResolveCheckpointPath(path);
  if (!step_dir.ok())
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", step_dir.status().message()));
  auto reader = checkpoint::CheckpointReader::Open(*step_dir);
  if (!reader.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", reader.status().message()));
  const std::string fix = absl::StrCat("set model.* to the model config stored in ", *step_dir,
                                       " (`nats inspect ", *step_dir, "` prints it)");
  InitFromCounts counts;
  std::set<std::string> expected;
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) {
    const std::string name = "model/" + p.key();
    expected.insert(name);
    const checkpoint::TensorEntry* entry = (*reader)->Find(name);
    if (entry == nullptr) {
      if (IsScorerParameter(p.key())) {
        ++counts.initialised;
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": the checkpoint has no tensor ", name, " (parameter ", p.key(), ", shape ",
                       checkpoint::ShapeString(p.value().sizes()),
                       "); only scorer parameters may be missing (they keep their initialisation); ", fix));
    }
    const std::vector<int64_t> stored(entry->shape().begin(), entry->shape().end());
    if (stored != p.value().sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": parameter ", p.key(), " has shape ", checkpoint::ShapeString(stored),
          " in the checkpoint but ", checkpoint::ShapeString(p.value().sizes()), " in this model; ", fix));
    }
    at::Tensor target = p.value().detach();
    if (absl::Status s = (*reader)->CheckCompatible(name, target.scalar_type(), target.sizes()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", s.message()));
    }
    if (absl::Status s = (*reader)->Read(name, 0, target); !s.ok()) {
      return absl::DataLossError(absl::StrCat(field, ": ", s.message()));
    }
    ++counts.loaded;
  }
  for (const checkpoint::TensorEntry& entry : (*reader)->manifest().tensors()) {
    if (entry.name().rfind("model/", 0) != 0 || expected.count(entry.name())) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": the checkpoint's tensor ", entry.name(), " (shape ",
        checkpoint::ShapeString(std::vector<int64_t>(entry.shape().begin(), entry.shape().end())),
        ") has no parameter in this model; ", fix));
  }
  return counts;
}

}  // namespace

// OpenBLAS (Debian's LibTorch's BLAS, and the fused kernel's tiles) keeps its own thread pool, one thread per
// core, which at::set_num_threads does not reach: without this, a run with train.threads = 1 still spreads
// its matmuls over every core, and two runs side by side (a sweep's cells, ranks on one node) fight over
// them.
void LimitBlasThreads(int threads) { openblas_set_num_threads(threads); }

// The pthreads build of OpenBLAS keeps a second thread pool beside libgomp's (LibTorch's and our kernels'),
// whose idle threads spin in sched_yield while the other pool works: measured 10-30% slower CPU steps. The
// build links the OpenMP one when it is installed (CMakeLists.txt); this says so when it is not.
std::string BlasThreadingNote() {
  if (openblas_get_parallel() != 1) return "";  // 0 serial, 1 pthreads, 2 OpenMP
  return "note: OpenBLAS is its pthreads build, whose thread pool competes with OpenMP's for the cores "
         "(10-30% slower CPU steps): apt-get install libopenblas0-openmp, then reconfigure and rebuild";
}

int DefaultThreadsPerRank() {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  int local_ranks = 1;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* v = std::getenv(var)) {
      local_ranks = std::max(1, std::atoi(v));
      break;
    }
  }
  return std::max(1, cores / local_ranks);
}

// Everything a run holds; kept out of the header so that it does not pull LibTorch into includers.
class TrainerState {
 public:
  config::Config cfg;
  std::unique_ptr<parallel::ProcessGrid> grid;
  parallel::Communicator* comm = nullptr;  // the world communicator, owned by grid
  int rank = 0, world = 1, dp = 1;
  int64_t micro_batch = 0, accum_steps = 1;
  std::shared_ptr<const data::TokenCorpus> train_data, val_data;
  std::unique_ptr<data::Loader> loader;
  std::unique_ptr<data::Tokenizer> tokenizer;
  Transformer model{nullptr};
  std::unique_ptr<parallel::AdamW> optimizer;  // plain AdamW, or its ZeRO-1 sharded form
  std::unique_ptr<parallel::DataParallel> data_parallel;
  // sp > 1: this rank's chunk of every sequence and the retained-KV exchange (owned here, used by the model).
  std::unique_ptr<parallel::SequenceParallel> sequence_parallel;
  int threads = 1;      // intra-op and BLAS threads of this rank (train.threads)
  Placement placement;  // train.device / train.precision (runtime/device_placement.h)
  // This rank's loss is its chunk's mean loss times this (1 without sequence parallelism): see
  // SetUpSequenceParallel.
  double sp_loss_share = 1;
  MetricsLog log;
  RunPeak peak;                    // per rank, and where it came from (runtime/peak_flops.h)
  double peak_flops = 0;           // all ranks' fp32 matmul peak in FLOP/s; 0: none known, no MFU
  double train_seconds = 0;        // this process's time inside training steps
  double val_bytes_per_token = 0;  // measured on the evaluated validation windows, for bits per byte
  int64_t step = 0;
  int64_t consumed_samples = 0;
  int64_t resumed_from_step = -1;
  double elapsed_before_resume = 0;  // training seconds of earlier runs of this job
  std::vector<checkpoint::MetricPoint> history;
  std::unique_ptr<EventFileWriter> tensorboard;  // rank 0: <run_dir>/tb/events.out.tfevents.*
  std::unique_ptr<StepGuard> guard;              // bad steps: skip, log, roll back (runtime/step_guard.h)
  std::map<int64_t, double> fault_loss_scale;    // TrainOptions::fault_loss_scale (tests)
  std::string resume_command;                    // TrainOptions::resume_command
  // nats.target_kv_fraction (runtime/kv_controller.h); disabled when the target is 0: lambda stays
  // nats.lambda.
  std::unique_ptr<KvController> kv_controller;
  double kv_measured = 0;  // what the controller saw at the last step (all ranks' mean)
  // train.objective = DISTILL: the parts of the last step's loss on this rank (runtime/distill_loss.h).
  double distill_mse = 0, distill_kl = 0;

  bool distill() const { return cfg.train().objective() == config::TrainConfig::DISTILL; }

  // After a stop signal's checkpoint: what was saved and a command that continues from it.
  void PrintStopped() const {
    Print(absl::StrFormat(
        "stop requested (signal %d): saved step %d; resume with %s", StopSignal(), step,
        resume_command.empty() ? "the same `nats train` command line plus --resume" : resume_command));
  }

  // Everything that defines the run's state, named as in the checkpoint: model weights (replicated over
  // data-parallel ranks) and the optimizer state (this rank's shard under ZeRO-1).
  std::vector<StateTensor> CheckpointState() const {
    std::vector<StateTensor> state;
    for (const auto& p : model->named_parameters())
      state.push_back(WholeTensor("model/" + p.key(), p.value()));
    for (StateTensor& t : FromNamedShards(optimizer->ExportState(), "optim/")) state.push_back(std::move(t));
    return state;
  }

  bool is_root() const { return rank == 0; }
  // Rank 0's TensorBoard scalars at the current step; a failed write is printed once and ends the TensorBoard
  // log, never the run.
  void WriteTensorBoard(const std::vector<std::pair<std::string, double>>& scalars) {
    if (!tensorboard) return;
    if (absl::Status s = tensorboard->WriteScalars(step, scalars); !s.ok()) {
      std::fprintf(stderr, "warning: %s; TensorBoard logging stops here\n", std::string(s.message()).c_str());
      tensorboard.reset();
    }
  }
  void Print(const std::string& line) const {
    if (!is_root()) return;
    std::fprintf(stdout, "%s\n", line.c_str());
    std::fflush(stdout);
  }

  // This rank's chunk [begin, end) of a training window of `seq` tokens ([0, seq) without sequence
  // parallelism).
  std::pair<int64_t, int64_t> Chunk(int64_t seq) const {
    if (!sequence_parallel) return {0, seq};
    return {sequence_parallel->chunk_begin(), sequence_parallel->chunk_end()};
  }

  // The guard's verdict, agreed by every rank (one all-reduce): a step is bad when any rank judged it bad.
  absl::StatusOr<StepVerdict> AgreeOnVerdict(StepVerdict mine) {
    if (world == 1) return mine;
    at::Tensor flag = torch::tensor({mine.bad ? 1.0 : 0.0}, torch::kFloat64);
    if (absl::Status s = comm->AllReduce(flag, parallel::ReduceOp::kMax); !s.ok()) return s;
    if (flag.item<double>() > 0 && !mine.bad) {
      mine.bad = true;
      mine.reason = "another rank judged the step bad (its log names why)";
    }
    return mine;
  }

  // Loads a checkpoint's weights, optimizer state, step, history and bad-step window (a resume and a rollback
  // share this); the caller decides what happens to the data cursor. This rank's optimizer shard is agreed
  // across ranks, so a failure on one rank stops every rank at once.
  absl::StatusOr<LoadResult> LoadTrainingState(const std::string& dir) {
    std::vector<StateTensor> targets = CheckpointState();
    LoadOptions lo;
    lo.current_config = &cfg;
    auto loaded = LoadCheckpoint(*comm, dir, targets, lo);
    if (!loaded.ok()) return loaded.status();
    if (absl::Status s =
            parallel::AgreeOnStatus(*comm, optimizer->ImportState(ToNamedShards(targets, "optim/")));
        !s.ok()) {
      return s;
    }
    const checkpoint::Manifest& m = loaded->manifest;
    step = m.step();
    history.assign(m.history().begin(), m.history().end());
    guard->Restore({m.guard_losses().begin(), m.guard_losses().end()},
                   {m.guard_grad_norms().begin(), m.guard_grad_norms().end()});
    RestoreKvController(m);
    return loaded;
  }

  // The controller continues from the checkpoint's lambda; a checkpoint without one (the run had a fixed
  // lambda, or the controller is newly switched on) starts it from nats.lambda.
  void RestoreKvController(const checkpoint::Manifest& m) {
    kv_controller = std::make_unique<KvController>(cfg.nats().target_kv_fraction(),
                                                   cfg.nats().target_kv_gain(), cfg.nats().lambda());
    if (kv_controller->enabled() && m.has_kv_controller_lambda()) {
      kv_controller->Restore({m.kv_controller_lambda(), m.kv_controller_ema(), m.kv_controller_updates()});
    }
    model->SetLambda(kv_controller->lambda());
  }

  // A skipped step (runtime/step_guard.h): its batch is consumed, the optimizer is untouched; after
  // guard.max_bad_steps in a row, RollBack.
  absl::Status HandleBadStep(const StepVerdict& verdict, double loss, double grad_norm,
                             TrainSummary* summary) {
    if (!cfg.guard().skip_nonfinite() && (!std::isfinite(loss) || !std::isfinite(grad_norm))) {
      return absl::InternalError(
          absl::StrCat("step ", step, ": ", verdict.reason,
                       "; the run diverged (guard.skip_nonfinite = false). Lower optim.lr, "
                       "raise optim.warmup_steps, check optim.grad_clip, or set guard.skip_nonfinite = true "
                       "to skip such steps"));
    }
    const int64_t first_sample = consumed_samples;
    consumed_samples += cfg.train().batch_size();
    const int64_t in_a_row = guard->Reject();
    ++summary->skipped_steps;
    Print(absl::StrFormat("step %d skipped: %s (samples %d..%d; %d bad step(s) in a row)", step + 1,
                          verdict.reason, first_sample, consumed_samples - 1, in_a_row));
    log.Write(JsonLine()
                  .Add("kind", "bad_step")
                  .Add("rank", rank)
                  .Add("step", step + 1)
                  .Add("reason", verdict.reason)
                  .Add("loss", loss)
                  .Add("grad_norm", grad_norm)
                  .Add("first_sample", first_sample)
                  .Add("consumed_samples", consumed_samples)
                  .Add("bad_in_a_row", in_a_row));
    if (!guard->ShouldRollBack()) return absl::OkStatus();
    return RollBack(verdict, summary);
  }

  // Loads the newest checkpoint's weights, optimizer state and step, and keeps the data cursor where it is,
  // so that training continues with the data after the bad window (as PaLM restarted before a spike and
  // skipped the batches around it). The good steps between that checkpoint and the bad window are redone with
  // new data.
  absl::Status RollBack(const StepVerdict& verdict, TrainSummary* summary) {
    const std::string root = CheckpointRoot(cfg);
    const std::string why =
        absl::StrCat("step ", step + 1, ": ", guard->bad_in_a_row(),
                     " bad steps in a row (guard.max_bad_steps = ", cfg.guard().max_bad_steps(),
                     "; last: ", verdict.reason, ")");
    if (summary->rollbacks >= cfg.guard().max_rollbacks()) {
      return absl::AbortedError(
          absl::StrCat(why, " after ", summary->rollbacks,
                       " rollbacks (guard.max_rollbacks); the run keeps diverging: lower "
                       "optim.lr or check the data near sample ",
                       consumed_samples));
    }
    auto latest = checkpoint::FindLatestCheckpoint(root);
    if (!latest.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          why, " and no checkpoint under ", root, " to roll back to (", latest.status().message(),
          "); set checkpoint.interval_steps so that one exists, or guard.max_bad_steps = 0 to only skip"));
    }
    const int64_t from_step = step;
    auto loaded = LoadTrainingState(*latest);
    if (!loaded.ok()) return loaded.status();
    ++summary->rollbacks;
    Print(absl::StrFormat("%s: rolled back to %s (step %d); training continues with sample %d", why,
                          loaded->step_dir, step, consumed_samples));
    log.Write(JsonLine()
                  .Add("kind", "rollback")
                  .Add("rank", rank)
                  .Add("from_step", from_step)
                  .Add("step", step)
                  .Add("dir", loaded->step_dir)
                  .Add("consumed_samples", consumed_samples)
                  .Add("rollbacks", summary->rollbacks));
    return absl::OkStatus();
  }

  // The KV fraction of every NAtS layer in the last forward (LayerStats::kv_fraction: what a cache at the end
  // of the window keeps), for this rank's rows; not yet averaged over ranks. Under sequence parallelism a
  // chunk's own types cannot say what survives to the end of the whole window, so the sp group all-gathers
  // each layer's types (int8 [B, H_kv, chunk], small next to the KV exchange) and every rank measures whole
  // sequences. Without it this is exactly LayerStats::kv_fraction. Collective over the sp group when sp > 1.
  // `inference`: of the types inference would pick (argmax, no Gumbel noise: what a cache keeps, which the
  // controller holds at its target) instead of the sampled training types.
  // Both measures of nats.target_kv_measure come from the one mask-statistics pass: the cache at the window's
  // end (kv_fraction) and the mean cache over positions (mask density).
  struct LayerKv {
    std::vector<double> window_end, cache_mean;
  };
  absl::StatusOr<LayerKv> LayerKvFractions(bool inference = false) {
    LayerKv out;
    for (const at::Tensor& types : inference ? model->LastLayerInferenceTypes() : model->LastLayerTypes()) {
      if (!types.defined()) continue;  // a dense layer
      at::Tensor whole = types;
      if (sequence_parallel) {
        // AllGatherV concatenates along the first dimension: positions first, as floats (any backend).
        std::vector<at::Tensor> chunks;
        if (absl::Status s =
                grid->sp().AllGatherV(types.permute({2, 0, 1}).to(at::kFloat).contiguous(), &chunks);
            !s.ok()) {
          return s;
        }
        whole = at::cat(chunks, 0).permute({1, 2, 0}).to(at::kChar).contiguous();
      }
      const MaskStats stats = ComputeMaskStats(whole, cfg.nats().window());
      out.window_end.push_back(stats.kv_fraction.mean().item<double>());
      out.cache_mean.push_back(stats.density.mean().item<double>());
    }
    return out;
  }

  // In place: every value of every vector averaged over the world (one all-reduce; same sizes on all ranks).
  absl::Status AverageOverRanks(const std::vector<std::vector<double>*>& vectors) {
    if (world == 1) return absl::OkStatus();
    std::vector<double> flat;
    for (const auto* v : vectors) flat.insert(flat.end(), v->begin(), v->end());
    if (flat.empty()) return absl::OkStatus();
    at::Tensor t = torch::tensor(flat, torch::kFloat64);
    if (absl::Status s = comm->AllReduce(t, parallel::ReduceOp::kAvg); !s.ok()) return s;
    const double* averaged = t.data_ptr<double>();
    for (auto* v : vectors) {
      for (double& x : *v) x = *averaged++;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<double> SumOverRanks(double value) {
    if (world == 1) return value;
    at::Tensor t = torch::tensor({value}, torch::kFloat64);
    if (absl::Status s = comm->AllReduce(t, parallel::ReduceOp::kSum); !s.ok()) return s;
    return t.item<double>();
  }

  absl::StatusOr<double> AverageOverRanks(double value) {
    if (world == 1) return value;
    at::Tensor t = torch::tensor({value}, torch::kFloat64);
    if (absl::Status s = comm->AllReduce(t, parallel::ReduceOp::kAvg); !s.ok()) return s;
    return t.item<double>();
  }
};

Trainer::Trainer(std::unique_ptr<TrainerState> state) : state_(std::move(state)) {}
Trainer::~Trainer() = default;

bool Trainer::is_root() const { return state_->is_root(); }
int64_t Trainer::step() const { return state_->step; }

std::vector<std::pair<std::string, at::Tensor>> Trainer::NamedParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : state_->model->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

namespace {

// A failed save under checkpoint.on_save_error (runtime/config.proto). Returns the error when the run must
// stop (STOP, or a save that cannot be retried: the final one, one on a stop signal); with CONTINUE it
// prints and logs it ("checkpoint_error") and returns an empty directory: the next interval tries again.
absl::StatusOr<std::string> ContinueAfterSaveError(TrainerState& st, const absl::Status& error,
                                                   bool can_retry) {
  if (st.cfg.checkpoint().on_save_error() != config::CheckpointConfig::CONTINUE || !can_retry) return error;
  st.Print(absl::StrCat("checkpoint error (checkpoint.on_save_error = CONTINUE, training goes on): ",
                        error.message()));
  st.log.Write(JsonLine()
                   .Add("kind", "checkpoint_error")
                   .Add("rank", st.rank)
                   .Add("step", st.step)
                   .Add("code", absl::StatusCodeToString(error.code()))
                   .Add("message", std::string(error.message())));
  return std::string();
}

// Rank 0 writes the learned types of the first validation window to <run_dir>/mask_window.json for the
// mask picture of `nats plot` (runtime/mask_window.h); a dense model has none (a stale file goes). A failure
// is a warning: the run itself succeeded.
void WriteRunMaskWindow(TrainerState& st) {
  if (!st.is_root()) return;
  const std::string path = (std::filesystem::path(st.cfg.train().run_dir()) / "mask_window.json").string();
  const std::vector<bool>& layers = st.model->spec().nats_layers;
  if (std::find(layers.begin(), layers.end(), true) == layers.end()) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    return;
  }
  // The picture needs the whole window on one rank: the sequence-parallel chunk attention is set aside for
  // it.
  st.model->SetChunkAttention(nullptr);
  absl::Status s;
  try {
    s = WriteMaskWindow(st.model, *st.val_data, st.tokenizer.get(), st.step, /*max_tokens=*/256, path);
  } catch (const c10::Error& e) {
    s = absl::InternalError(e.what_without_backtrace());
  }
  st.model->SetChunkAttention(st.sequence_parallel.get());
  if (!s.ok()) {
    std::fprintf(stderr, "warning: no mask window for `nats plot`: %s\n", std::string(s.message()).c_str());
  }
}

// The loader's cursor (consumed samples) indexes windows of the training stream, so it means the same data
// only on the same shards: a resume after shards were added, removed or rewritten would silently read other
// windows. Refused unless allowed (then printed). Checkpoints from before the fingerprint carry none and
// pass.
absl::Status CheckSameTrainingData(const checkpoint::Manifest& m, const data::TokenCorpus& train,
                                   const std::string& step_dir, bool allow_change, const TrainerState* st) {
  if (!m.has_train_data_fingerprint() || m.train_data_fingerprint() == train.Fingerprint()) {
    return absl::OkStatus();
  }
  const std::string what = absl::StrFormat(
      "data.train_path = %s: the training corpus differs from the one %s was trained on (%d tokens in %d "
      "shard(s) now, %d tokens then): shards were added, removed or rewritten, so the loader's cursor would "
      "point at other windows",
      train.path(), step_dir, train.num_tokens(), train.num_shards(), m.train_data_tokens());
  if (!allow_change) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "; restore the corpus, or pass --allow_config_change to go on with the new data"));
  }
  st->Print(absl::StrCat("note: ", what, " (allowed by --allow_config_change)"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Trainer::SaveCheckpointNow() {
  TrainerState& st = *state_;
  checkpoint::Manifest header;
  *header.mutable_config() = st.cfg;
  header.set_consumed_samples(st.consumed_samples);
  header.set_train_data_fingerprint(st.train_data->Fingerprint());
  header.set_train_data_tokens(st.train_data->num_tokens());
  header.set_dp(st.dp);
  header.set_sp(st.cfg.parallel().sp());
  header.set_zero_stage(st.cfg.parallel().zero_stage());
  for (const auto& point : st.history) *header.add_history() = point;
  for (double v : st.guard->LossWindow()) header.add_guard_losses(v);
  for (double v : st.guard->GradNormWindow()) header.add_guard_grad_norms(v);
  header.set_elapsed_seconds(st.elapsed_before_resume + st.train_seconds);
  if (st.kv_controller->enabled()) {
    const KvControllerState& kv = st.kv_controller->state();
    header.set_kv_controller_lambda(kv.lambda);
    header.set_kv_controller_ema(kv.ema);
    header.set_kv_controller_updates(kv.updates);
  }
  auto saved = SaveCheckpoint(*st.comm, CheckpointRoot(st.cfg), st.step, st.CheckpointState(), header,
                              CaptureCpuRngState(), RetentionFromConfig(st.cfg.checkpoint()));
  if (!saved.ok()) return saved.status();
  st.Print(absl::StrFormat("checkpoint step %d -> %s (%.1f MB in %.2f s)", st.step, saved->step_dir,
                           saved->bytes_total / 1e6, saved->seconds));
  // The step is committed; what failed after it (`latest`, deleting old steps) only needs a person's eye.
  for (const std::string& warning : {saved->latest_error, saved->retention_error}) {
    if (warning.empty()) continue;
    st.Print(absl::StrCat("checkpoint warning: ", warning));
    st.log.Write(JsonLine()
                     .Add("kind", "checkpoint_warning")
                     .Add("rank", st.rank)
                     .Add("step", st.step)
                     .Add("message", warning));
  }
  st.log.Write(JsonLine()
                   .Add("kind", "checkpoint")
                   .Add("rank", st.rank)
                   .Add("step", st.step)
                   .Add("dir", saved->step_dir)
                   .Add("bytes_this_rank", static_cast<int64_t>(saved->bytes_this_rank))
                   .Add("bytes_total", static_cast<int64_t>(saved->bytes_total))
                   .Add("seconds", saved->seconds));
  return saved->step_dir;
}

namespace {

// Trainer::Create's steps, in the order Create runs them. From the process grid on, a step that can fail on
// one rank alone (its config, its files) is followed by AgreeOnStatus before the next collective: a setup
// error on one node stops every rank at once with that node's message, instead of its peers waiting in a
// collective until parallel.timeout_s.

// The world communicator (parallel.backend), the validated config, and the dp x sp process grid; every rank
// must run the same config.
// The device comes first: parallel.backend AUTO picks NCCL for a CUDA run, and NCCL binds to the device.
absl::Status ConnectProcessGrid(TrainerState& st) {
  const config::Config& cfg = st.cfg;
  const int sp = cfg.parallel().sp();
  absl::StatusOr<Placement> placement =
      ResolvePlacement(cfg.train(), LocalRankFromEnvironment(), CudaDeviceCount());
  if (!placement.ok()) return placement.status();
  st.placement = *placement;
  if (st.placement.is_cuda() && cfg.parallel().backend() == config::ParallelConfig::MPI) {
    return absl::InvalidArgumentError(
        "parallel.backend = MPI moves CPU tensors only, but train.device resolved to CUDA; use "
        "parallel.backend "
        "= NCCL or AUTO (or train.device = CPU)");
  }
  auto backend = parallel::MakeCommunicator(
      cfg.parallel().backend() == config::ParallelConfig::AUTO   ? parallel::Backend::kAuto
      : cfg.parallel().backend() == config::ParallelConfig::MPI  ? parallel::Backend::kMpi
      : cfg.parallel().backend() == config::ParallelConfig::NCCL ? parallel::Backend::kNccl
                                                                 : parallel::Backend::kLocal,
      st.placement.is_cuda() ? std::optional<int>(st.placement.device.index()) : std::nullopt);
  if (!backend.ok()) return backend.status();
  if (st.placement.is_cuda() && (*backend)->backend() == "mpi") {
    return absl::FailedPreconditionError(
        "train.device resolved to CUDA under an MPI launch, but this build has no NCCL communicator (CUDA "
        "and "
        "NCCL were not found at configure time); rebuild where CMake finds both, or set train.device = CPU");
  }
  (*backend)->set_timeout(absl::Seconds(cfg.parallel().timeout_s()));
  absl::Status config_ok = ValidateConfig(cfg);
  if (config_ok.ok() && sp > cfg.model().context_length()) {
    config_ok = absl::InvalidArgumentError(
        absl::StrCat("parallel.sp = ", sp, " exceeds model.context_length = ", cfg.model().context_length(),
                     "; every sequence-parallel rank needs at least one token"));
  }
  if (absl::Status s = parallel::AgreeOnStatus(**backend, config_ok); !s.ok()) return s;
  auto grid = parallel::ProcessGrid::Create(std::move(*backend), cfg.parallel().dp(), sp);
  if (!grid.ok()) return grid.status();
  st.grid = std::move(*grid);
  st.comm = &st.grid->world();
  st.rank = st.comm->rank();
  st.world = st.comm->size();
  st.dp = st.grid->dp_size();
  // Every rank must run the same config; a mismatch stops all ranks with one message instead of a hang.
  return parallel::CheckRanksAgree(*st.comm, "config hash", ConfigHash(cfg));
}

// train.batch_size over dp ranks and micro-batches of train.micro_batch_size.
absl::Status SplitBatch(TrainerState& st) {
  const auto& t = st.cfg.train();
  if (t.batch_size() % st.dp != 0) {
    return absl::InvalidArgumentError(absl::StrCat("train.batch_size = ", t.batch_size(),
                                                   " must be divisible by the data-parallel size ", st.dp));
  }
  const int64_t local_batch = t.batch_size() / st.dp;
  st.micro_batch = t.micro_batch_size() > 0 ? t.micro_batch_size() : local_batch;
  if (local_batch % st.micro_batch != 0) {
    return absl::InvalidArgumentError(absl::StrCat("train.micro_batch_size = ", st.micro_batch,
                                                   " must divide the per-rank batch ", local_batch,
                                                   " (train.batch_size / dp)"));
  }
  st.accum_steps = local_batch / st.micro_batch;
  return absl::OkStatus();
}

// train.threads for LibTorch's intra-op pool and for the BLAS, and the generator's seed.
void SetThreadsAndSeed(TrainerState& st) {
  const auto& t = st.cfg.train();
  st.threads = t.threads() > 0 ? t.threads() : DefaultThreadsPerRank();
  at::set_num_threads(st.threads);
  LimitBlasThreads(st.threads);
  torch::manual_seed(t.seed());
}

RunDirectoryOptions RunDirectoryOptionsFrom(const TrainOptions& options) {
  RunDirectoryOptions run_options;
  run_options.resume = options.resume || !options.resume_from.empty();
  run_options.resume_from = options.resume_from;
  run_options.allow_config_change = options.allow_config_change;
  run_options.overwrite = options.overwrite;
  return run_options;
}

// Data: this rank's files (each node may have its own copy), agreed across ranks, and the loader of this
// data-parallel rank's part of every global batch.
absl::Status OpenData(TrainerState& st) {
  const config::Config& cfg = st.cfg;
  auto open_data = [&]() -> absl::Status {
    auto tokenizer = data::MakeTokenizer(cfg.data().tokenizer(), cfg.data().data_dir());
    if (!tokenizer.ok()) return tokenizer.status();
    auto train_data = data::TokenCorpus::Open(cfg.data().train_path());
    if (!train_data.ok()) return train_data.status();
    st.train_data = std::make_shared<const data::TokenCorpus>(std::move(*train_data));
    auto val_data = data::TokenCorpus::Open(cfg.data().val_path());
    if (!val_data.ok()) return val_data.status();
    st.val_data = std::make_shared<const data::TokenCorpus>(std::move(*val_data));
    for (const auto& [corpus, field] :
         {std::pair{st.train_data, "data.train_path"}, std::pair{st.val_data, "data.val_path"}}) {
      if (absl::Status s =
              data::CheckCorpusFitsModel(*corpus, field, (*tokenizer)->identity(), cfg.model().vocab_size());
          !s.ok()) {
        return s;
      }
    }
    st.tokenizer = std::move(*tokenizer);
    return absl::OkStatus();
  };
  if (absl::Status s = parallel::AgreeOnStatus(*st.comm, open_data()); !s.ok()) return s;
  data::LoaderOptions lo;
  lo.seq_len = cfg.model().context_length();
  lo.global_batch = cfg.train().batch_size();
  lo.dp_rank = st.grid->dp_rank();
  lo.dp_size = st.dp;
  lo.seed = cfg.train().seed();
  auto loader = data::Loader::Create(st.train_data, lo);
  if (absl::Status s = parallel::AgreeOnStatus(*st.comm, loader.status()); !s.ok()) return s;
  st.loader = std::make_unique<data::Loader>(std::move(*loader));
  return absl::OkStatus();
}

// The model, its regulariser scale and lambda, train.init_from's weights on a fresh run, and which parameters
// train. Every rank builds the same initial weights from the same seed.
absl::Status BuildModel(TrainerState& st, const RunStart& start) {
  const config::Config& cfg = st.cfg;
  const auto& t = cfg.train();
  st.model = Transformer(ModelSpecFromConfig(cfg));
  // docs/method.md 5.4, once per sequence of the global batch (docs/training.md): each rank's backward
  // charges the regulariser once per row it ran, and the gradient average over the world divides by the world
  // size, so every rank charges world x lambda. Then dp, sp and micro-batching all train the same model.
  st.model->SetRegulariserScale(st.world);
  st.kv_controller = std::make_unique<KvController>(cfg.nats().target_kv_fraction(),
                                                    cfg.nats().target_kv_gain(), cfg.nats().lambda());
  st.model->SetLambda(st.kv_controller->lambda());
  // train.init_from starts a fresh run from another checkpoint's weights (a resume has its own). Every rank
  // reads the same file; the broadcast in SetUpDataParallel makes the replicas identical whatever each node's
  // copy holds.
  if (start.resume_dir.empty() && !t.init_from().empty()) {
    auto counts = LoadInitialWeights(st.model, t.init_from());
    if (absl::Status s = parallel::AgreeOnStatus(*st.comm, counts.status()); !s.ok()) return s;
    st.Print(absl::StrFormat("init_from %s: %d tensors loaded, %d scorer parameters initialised",
                             t.init_from(), counts->loaded, counts->initialised));
  }
  // Weights load on the host (init_from above, a resume later copies into these tensors wherever they are).
  st.model->to(st.placement.device);
  // DISTILL (NATS_SPEC 8): the base model is frozen and only the scorers train, so the optimizer, its state
  // in the checkpoint and the gradient all-reduce cover the scorer parameters only. Checkpoints still hold
  // every weight, so eval / generate / inspect read them as any run's.
  if (st.distill()) {
    for (auto& p : st.model->named_parameters()) p.value().set_requires_grad(IsScorerParameter(p.key()));
  }
  return absl::OkStatus();
}

// The bad-step guard and the fault injection of tests (TrainOptions::fault_loss_scale,
// NATS_FAULT_LOSS_SCALE).
absl::Status SetUpStepGuard(TrainerState& st, const TrainOptions& options) {
  st.guard = std::make_unique<StepGuard>(st.cfg.guard());
  st.fault_loss_scale = options.fault_loss_scale;
  st.resume_command = options.resume_command;
  if (const char* faults = std::getenv("NATS_FAULT_LOSS_SCALE")) {
    auto parsed = ParseFaultLossScale(faults);
    if (!parsed.ok()) return parsed.status();
    st.fault_loss_scale.insert(parsed->begin(), parsed->end());
  }
  return absl::OkStatus();
}

struct TrainableCount {
  int64_t tensors = 0;
  int64_t numel = 0;
};

// AdamW over the trainable parameters (ZeRO-1 sharded with parallel.zero_stage = 1), after every rank agreed
// on the parameter layout.
absl::StatusOr<TrainableCount> BuildOptimizer(TrainerState& st) {
  std::vector<parallel::OptimizerParam> params;
  TrainableCount count;
  std::string shapes;
  for (auto& p : st.model->named_parameters()) {
    if (p.value().requires_grad()) {
      // Weight decay on matrices only (docs/method.md 8); norms' gains get none.
      params.push_back({p.key(), p.value(), p.value().dim() >= 2});
      count.numel += p.value().numel();
    }
    absl::StrAppend(&shapes, p.key(), p.value().sizes().vec().size(), ";");
    for (int64_t d : p.value().sizes()) absl::StrAppend(&shapes, d, ",");
  }
  if (absl::Status s = parallel::CheckRanksAgree(*st.comm, "parameter layout", data::Fingerprint64(shapes));
      !s.ok()) {
    return s;
  }
  count.tensors = static_cast<int64_t>(params.size());
  const auto& o = st.cfg.optim();
  parallel::AdamWOptions ao;
  ao.lr = o.lr();
  ao.beta1 = o.beta1();
  ao.beta2 = o.beta2();
  ao.eps = o.eps();
  ao.weight_decay = o.weight_decay();
  if (st.cfg.parallel().zero_stage() == 1) {
    // Gradients are averaged over the whole world (dp x sp), so every rank holds the same gradient and the
    // optimizer state can be sharded over all of them.
    auto zero = parallel::ZeroOptimizer::Create(std::move(params), ao, *st.comm);
    if (!zero.ok()) return zero.status();
    st.optimizer = std::move(*zero);
  } else {
    auto adamw = parallel::AdamW::Create(std::move(params), ao);
    if (!adamw.ok()) return adamw.status();
    st.optimizer = std::move(*adamw);
  }
  return count;
}

// More than one rank: the overlapped gradient all-reduce over the trainable parameters, and rank 0's weights
// broadcast to every rank.
absl::Status SetUpDataParallel(TrainerState& st) {
  if (st.world == 1) return absl::OkStatus();
  std::vector<at::Tensor> trainable;
  for (auto& p : st.model->parameters()) {
    if (p.requires_grad()) trainable.push_back(p);
  }
  parallel::DataParallelOptions dpo;
  dpo.bucket_mb = st.cfg.parallel().bucket_mb();
  st.data_parallel = std::make_unique<parallel::DataParallel>(trainable, *st.comm, dpo);
  // Same seed (and the same init_from file) gives the same weights already; the broadcast makes that a
  // guarantee, not an assumption. Every parameter, frozen ones included (the data-parallel object only
  // knows the trainable ones).
  torch::NoGradGuard no_grad;
  for (auto& p : st.model->parameters()) {
    at::Tensor data = p.detach();
    if (absl::Status s = st.comm->Broadcast(data, 0); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// parallel.sp > 1: this rank's chunk of every sequence, the KV exchange the model's attention uses, and the
// chunk's share of the loss.
void SetUpSequenceParallel(TrainerState& st) {
  const int64_t seq = st.cfg.model().context_length();
  if (st.grid->sp_size() > 1) {
    st.sequence_parallel = std::make_unique<parallel::SequenceParallel>(
        st.grid->sp(), st.cfg.parallel().sp_exchange() == config::ParallelConfig::FULL
                           ? parallel::SpExchange::kFull
                           : parallel::SpExchange::kRetained);
    st.sequence_parallel->SetSequenceLength(seq);
    st.model->SetChunkAttention(st.sequence_parallel.get());
  }
  // Each rank's loss is its chunk's mean loss weighted by its share of the sequence times sp, so that the
  // gradient average over dp x sp sums over sp and the average over ranks is the whole sequence's mean.
  const auto [begin, end] = st.Chunk(seq);
  st.sp_loss_share = static_cast<double>(end - begin) * st.grid->sp_size() / static_cast<double>(seq);
}

// The peak MFU divides by: train.peak_gflops, else `nats bench peak`'s file for this CPU and thread count,
// else none (runtime/peak_flops.h). Never measured here: every rank would measure at once while the others
// load the cores.
void ChoosePeak(TrainerState& st) {
  st.peak = ResolveRunPeak(st.cfg.train().peak_gflops(), st.threads, DefaultPeakPath());
  st.peak_flops = st.peak.gflops * 1e9 * st.world;
}

// Resuming: the checkpoint's weights, optimizer state, step and history, the data cursor (on the same
// training data only), and the generator state.
absl::Status ResumeFromCheckpoint(TrainerState& st, const std::string& dir, const TrainOptions& options) {
  auto loaded = st.LoadTrainingState(dir);
  if (!loaded.ok()) return loaded.status();
  const checkpoint::Manifest& m = loaded->manifest;
  absl::Status same_data =
      CheckSameTrainingData(m, *st.train_data, loaded->step_dir, options.allow_config_change, &st);
  if (absl::Status s = parallel::AgreeOnStatus(*st.comm, same_data); !s.ok()) return s;
  st.consumed_samples = m.consumed_samples();
  st.resumed_from_step = m.step();
  st.elapsed_before_resume = m.elapsed_seconds();
  // This rank's generator bytes are agreed, like its optimizer shard, so a failure on one rank stops every
  // rank at once.
  // The same world size gets each rank's own generator back (bit-exact resume); another world size
  // reseeds deterministically from (seed, step, rank).
  absl::Status rng_ok;
  if (auto rng = SavedRngState(m, st.rank, st.world)) {
    rng_ok = RestoreCpuRngState(*rng);
  } else {
    // By data-parallel rank: the ranks of one sequence keep one generator state (the scorer's training
    // noise is counter-based and needs none, but anything drawn from the generator stays in step).
    torch::manual_seed(st.cfg.train().seed() + 1000003ull * st.step + st.grid->dp_rank());
  }
  if (absl::Status s = parallel::AgreeOnStatus(*st.comm, rng_ok); !s.ok()) return s;
  st.Print(absl::StrFormat("resumed from %s: step %d, %d samples consumed", loaded->step_dir, st.step,
                           st.consumed_samples));
  return absl::OkStatus();
}

// The run directory's writes (runtime/run_directory.h: config.textproto, the metrics log) and rank 0's
// TensorBoard events (runtime/event_file_writer.h: `tensorboard --logdir runs/`).
absl::Status OpenLogs(TrainerState& st, const RunDirectoryOptions& run_options, const RunStart& start) {
  if (absl::Status s = OpenRunDirectory(*st.comm, st.cfg, run_options, start, st.step, &st.log); !s.ok()) {
    return s;
  }
  absl::Status tensorboard_ok;
  if (st.is_root()) {
    auto writer = EventFileWriter::Open((std::filesystem::path(st.cfg.train().run_dir()) / "tb").string());
    if (writer.ok()) st.tensorboard = std::move(*writer);
    tensorboard_ok = writer.status();
  }
  return parallel::AgreeOnStatus(*st.comm, tensorboard_ok);
}

// Rank 0's description of the run: config file, model, layout, objective and controller.
void PrintRunHeader(const TrainerState& st, const TrainOptions& options, const TrainableCount& trainable) {
  const config::Config& cfg = st.cfg;
  const auto& t = cfg.train();
  // The effective config is in the run directory (runtime/run_directory.h); the terminal gets it on request.
  if (options.print_config) st.Print("effective config:\n" + ConfigToText(cfg));
  st.Print(absl::StrCat("config: ", (std::filesystem::path(t.run_dir()) / "config.textproto").string()));
  st.Print(absl::StrFormat(
      "model: %d layers, d %d, %d heads (%d kv), T %d, vocab %d, %.2fM parameters, attention %s",
      cfg.model().n_layer(), cfg.model().d_model(), cfg.model().n_head(), ResolvedKvHeads(cfg.model()),
      cfg.model().context_length(), cfg.model().vocab_size(), st.model->NumParameters() / 1e6,
      config::ModelConfig::Attention_Name(cfg.model().attention())));
  st.Print(absl::StrFormat(
      "run: %d rank(s) (%s, %s), dp %d x sp %d%s, batch %d = %d micro x %d accum x %d dp, %d threads/rank, "
      "train %d tokens, val %d tokens",
      st.world, std::string(st.comm->backend()), st.placement.Describe(), st.dp, st.grid->sp_size(),
      !st.sequence_parallel                                         ? ""
      : st.sequence_parallel->mode() == parallel::SpExchange::kFull ? " (full KV exchange)"
                                                                    : " (retained KV exchange)",
      t.batch_size(), st.micro_batch, st.accum_steps, st.dp, st.threads, st.train_data->num_tokens(),
      st.val_data->num_tokens()));
  for (const std::string& note : st.peak.notes) st.Print(note);
  if (const std::string blas_note = BlasThreadingNote(); !st.placement.is_cuda() && !blas_note.empty()) {
    st.Print(blas_note);
  }
  if (st.peak_flops > 0) {
    st.Print(absl::StrFormat("MFU peak: %.1f GFLOP/s per rank x %d rank(s) = %.1f GFLOP/s (%s)",
                             st.peak.gflops, st.world, st.peak_flops / 1e9, st.peak.source));
  } else {
    st.Print("MFU: no peak known for this machine; run `nats bench peak` once (or set train.peak_gflops)");
  }
  if (st.distill()) {
    st.Print(absl::StrFormat(
        "objective DISTILL: %d scorer tensors (%d parameters) train, the other %d parameters are frozen; "
        "loss = MSE of the final hidden states vs dense attention + %g x KL",
        trainable.tensors, trainable.numel, st.model->NumParameters() - trainable.numel,
        t.distill_kl_weight()));
  }
  if (st.kv_controller->enabled()) {
    st.Print(absl::StrFormat("KV-fraction controller: target %.3f, gain %g, lambda now %.3e",
                             st.kv_controller->target(), cfg.nats().target_kv_gain(),
                             st.kv_controller->lambda()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const config::Config& cfg,
                                                         const TrainOptions& options) {
  auto st = std::make_unique<TrainerState>();
  st->cfg = cfg;
  if (absl::Status s = ConnectProcessGrid(*st); !s.ok()) return s;
  if (absl::Status s = SplitBatch(*st); !s.ok()) return s;
  SetThreadsAndSeed(*st);
  // Run directory and resume (runtime/run_directory.h): the fresh-run guard, the choice of checkpoint and
  // the config check come first (before the data, so a resume with a changed data.tokenizer is told the
  // change, not only that the shards do not match), and nothing in the run directory is written until the
  // checkpoint loaded.
  const RunDirectoryOptions run_options = RunDirectoryOptionsFrom(options);
  auto start = PlanRunStart(*st->comm, cfg, run_options);
  if (!start.ok()) return start.status();
  if (absl::Status s = OpenData(*st); !s.ok()) return s;
  if (absl::Status s = BuildModel(*st, *start); !s.ok()) return s;
  if (absl::Status s = SetUpStepGuard(*st, options); !s.ok()) return s;
  auto trainable = BuildOptimizer(*st);
  if (!trainable.ok()) return trainable.status();
  if (absl::Status s = SetUpDataParallel(*st); !s.ok()) return s;
  SetUpSequenceParallel(*st);
  ChoosePeak(*st);
  InstallStopSignalHandlers();
  if (!start->resume_dir.empty()) {
    if (absl::Status s = ResumeFromCheckpoint(*st, start->resume_dir, options); !s.ok()) return s;
  }
  if (absl::Status s = OpenLogs(*st, run_options, *start); !s.ok()) return s;
  PrintRunHeader(*st, options, *trainable);
  return std::unique_ptr<Trainer>(new Trainer(std::move(st)));
}

absl::StatusOr<EvalResult> Trainer::Evaluate() {
  TrainerState& st = *state_;
  const int64_t seq = st.cfg.model().context_length();
  const int64_t available = static_cast<int64_t>(data::NumWindows(st.val_data->num_tokens(), seq));
  const int64_t total = std::min<int64_t>(st.cfg.train().eval_windows(), available);
  if (total <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        st.val_data->path(),
        ": validation shard is shorter than one window of model.context_length + 1 = ", seq + 1, " tokens"));
  }
  // Windows are split over data-parallel ranks; every rank of an sp group evaluates the same ones.
  const int dp_rank = st.grid->dp_rank();
  const int64_t begin = total * dp_rank / st.dp, end = total * (dp_rank + 1) / st.dp;
  torch::NoGradGuard no_grad;
  st.model->eval();
  // Exchange statistics describe training steps; evaluation's exchanges are not counted.
  if (st.sequence_parallel) st.sequence_parallel->set_count_stats(false);
  double loss_sum = 0, bytes = 0, distill_sum = 0;
  int64_t tokens = 0;
  for (int64_t first = begin; first < end; first += st.micro_batch) {
    const int64_t count = std::min<int64_t>(st.micro_batch, end - first);
    auto rows = data::EvalWindows(*st.val_data, seq, first, count);
    if (!rows.ok()) return rows.status();
    at::Tensor batch = torch::from_blob(rows->data(), {count, seq + 1}, torch::kInt32)
                           .to(st.placement.device, torch::kInt64);
    const auto [begin, end] = st.Chunk(seq);  // the whole window without sequence parallelism
    at::Tensor logits;
    try {
      AutocastScope autocast(st.placement.bf16);
      if (st.distill()) {
        // The student's logits come from the hidden state the distill loss compares, so the extra cost of the
        // validation distill loss is one dense forward.
        DistillLoss d = ComputeDistillLoss(st.model, batch.narrow(1, begin, end - begin), /*share=*/1.0,
                                           st.cfg.train().distill_kl_weight());
        distill_sum += d.loss.item<double>() * static_cast<double>(count * (end - begin));
        logits = st.model->Head(d.student_hidden);
      } else {
        logits = st.model->forward(batch.narrow(1, begin, end - begin));
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("evaluation: ", e.what_without_backtrace()));
    }
    at::Tensor targets = batch.narrow(1, begin + 1, end - begin);
    // In fp32 whatever the forward's precision (bf16 logits under autocast).
    at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, logits.size(-1)}),
                                             targets.reshape({-1}), {}, at::Reduction::Sum);
    loss_sum += loss.item<double>();
    tokens += targets.numel();
    if (st.val_bytes_per_token == 0 && st.grid->sp_rank() == 0) {  // bytes of whole windows, counted once
      std::vector<int32_t> ids(rows->begin(), rows->end());
      for (int64_t r = 0; r < count; ++r) {
        auto text = st.tokenizer->Decode(absl::MakeConstSpan(ids.data() + r * (seq + 1) + 1, seq));
        if (text.ok()) bytes += text->size();
      }
    }
  }
  st.model->train();
  if (st.sequence_parallel) st.sequence_parallel->set_count_stats(true);
  at::Tensor sums =
      torch::tensor({loss_sum, static_cast<double>(tokens), bytes, distill_sum}, torch::kFloat64);
  if (st.world > 1) {
    // Each sp rank scored its own chunk of the group's windows: the sums add up to the whole windows.
    if (absl::Status s = st.comm->AllReduce(sums, parallel::ReduceOp::kSum); !s.ok()) return s;
  }
  EvalResult r;
  r.tokens = static_cast<int64_t>(sums[1].item<double>());
  r.loss = sums[0].item<double>() / sums[1].item<double>();
  r.perplexity = std::exp(r.loss);
  if (st.val_bytes_per_token == 0) st.val_bytes_per_token = sums[2].item<double>() / sums[1].item<double>();
  r.bits_per_byte = r.loss / std::log(2.0) / st.val_bytes_per_token;
  if (st.distill()) r.distill_loss = sums[3].item<double>() / sums[1].item<double>();
  return r;
}

absl::StatusOr<double> Trainer::ForwardBackward() {
  TrainerState& st = *state_;
  const auto& t = st.cfg.train();
  const int64_t seq = st.cfg.model().context_length();
  std::vector<int32_t> rows = st.loader->Batch(st.consumed_samples);
  at::Tensor local = torch::from_blob(rows.data(), {st.loader->local_batch(), seq + 1}, torch::kInt32)
                         .to(st.placement.device, torch::kInt64);
  st.optimizer->ZeroGrad();
  double loss_value = 0;
  st.distill_mse = st.distill_kl = 0;
  // A collective that fails inside autograd (the sequence-parallel exchange) throws; it ends the run with
  // its message like any other failed collective.
  try {
    for (int64_t micro = 0; micro < st.accum_steps; ++micro) {
      // Gradients are all-reduced in buckets while the last micro-step's backward still runs.
      if (st.data_parallel) st.data_parallel->set_sync(micro + 1 == st.accum_steps);
      at::Tensor batch = local.narrow(0, micro * st.micro_batch, st.micro_batch);
      const auto [begin, end] = st.Chunk(seq);
      // Gumbel noise keyed by global sample index: the same for any dp x sp layout, micro-batching or resume.
      st.model->SetNoiseKey(
          {static_cast<uint64_t>(t.seed()),
           st.consumed_samples + st.grid->dp_rank() * st.loader->local_batch() + micro * st.micro_batch});
      at::Tensor inputs = batch.narrow(1, begin, end - begin);
      at::Tensor loss;
      {
        AutocastScope autocast(st.placement.bf16);  // the forward only; backward follows the forward's dtypes
        if (st.distill()) {
          DistillLoss d = ComputeDistillLoss(st.model, inputs, st.sp_loss_share, t.distill_kl_weight());
          loss = d.loss;
          st.distill_mse += d.mse / st.accum_steps;
          st.distill_kl += d.kl / st.accum_steps;
        } else {
          loss = st.model->Loss(inputs, batch.narrow(1, begin + 1, end - begin)) * st.sp_loss_share;
        }
      }
      if (!st.fault_loss_scale.empty() && st.grid->dp_rank() == 0 && micro == 0) {
        // Fault injection: a bad batch on one data-parallel rank only, as a corrupt shard would give.
        auto fault = st.fault_loss_scale.find(st.consumed_samples / t.batch_size());
        if (fault != st.fault_loss_scale.end()) loss = loss * fault->second;
      }
      (loss / static_cast<double>(st.accum_steps)).backward();
      loss_value += loss.item<double>() / st.accum_steps;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("step ", st.step, ": ", e.what_without_backtrace()));
  }
  if (st.data_parallel) {
    if (absl::Status s = st.data_parallel->FinishGradientSync(); !s.ok()) return s;
  }
  return st.AverageOverRanks(loss_value);
}

namespace {

// What one logged training step reports; Train() fills it, WriteStepReport writes it.
struct StepReport {
  int64_t total_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double lambda = 0;        // the lambda this step's backward used
  double tokens_per_s = 0;  // all ranks, over the steps since the last report
  // Of the peak (NaN: none known). Dense-equivalent: Transformer::FlopsPerToken per token; executed: its 6N
  // part plus the attention FLOPs the kernels ran (nats/executed_flops.h).
  double mfu = 0, mfu_executed = 0;
  double flops_executed = 0;  // per training step, all ranks
  double eta_seconds = 0;
  double steps_in_window = 1;  // training steps since the last report (at least 1)
  int64_t skipped_steps = 0;
  Clock::time_point run_start;
};

// The report of a logged step: rank 0's progress line and TensorBoard scalars, every rank's JSON "train"
// record. `layer_kv` / `layer_kv_inference`: this rank's window-end KV fraction per NAtS layer of the sampled
// and the inference types (TrainerState::LayerKvFractions). Collective: the per-layer statistics are averaged
// over the ranks.
absl::Status WriteStepReport(TrainerState& st, const StepReport& r, const std::vector<double>& layer_kv,
                             const std::vector<double>& layer_kv_inference) {
  const auto& t = st.cfg.train();
  // NAtS layers: type fractions, mask density and KV fraction of this step's last micro-batch, averaged
  // over the ranks (equal row counts), so that the curve describes the same rows for any number of ranks.
  // The KV fraction is the one the controller measured (whole sequences also under sequence parallelism).
  std::vector<double> frac_g, frac_l, frac_s, density, kv, kv_inference;
  std::vector<int> nats_layers;
  std::string nats_line;
  const std::vector<LayerStats> layer_stats = st.model->LastLayerStats();
  for (size_t l = 0; l < layer_stats.size(); ++l) {
    const LayerStats& ls = layer_stats[l];
    if (!ls.nats) continue;
    nats_layers.push_back(static_cast<int>(l));
    frac_g.push_back(ls.frac_global);
    frac_l.push_back(ls.frac_local);
    frac_s.push_back(ls.frac_sliding);
    density.push_back(ls.mask_density);
    kv_inference.push_back(layer_kv_inference[kv.size()]);
    kv.push_back(layer_kv[kv.size()]);
  }
  if (absl::Status s = st.AverageOverRanks({&frac_g, &frac_l, &frac_s, &density, &kv, &kv_inference});
      !s.ok()) {
    return s;
  }
  if (!kv.empty()) {
    auto mean = [](const std::vector<double>& v) {
      double sum = 0;
      for (double x : v) sum += x;
      return sum / v.size();
    };
    nats_line = absl::StrFormat(" | G/L/S %.3f/%.3f/%.3f | density %.3f | kv %.3f | lambda %.2e",
                                mean(frac_g), mean(frac_l), mean(frac_s), mean(density), mean(kv), r.lambda);
    if (st.kv_controller->enabled()) {
      absl::StrAppend(
          &nats_line,
          absl::StrFormat(" (%s target %.3f, now %.3f, ema %.3f)",
                          st.cfg.nats().target_kv_measure() == config::NatsConfig::CACHE_MEAN
                              ? "cache-mean kv"
                              : "window-end kv",
                          st.kv_controller->target(), st.kv_measured, st.kv_controller->state().ema));
    }
  }
  // DISTILL: the two parts of the loss, averaged over the ranks like the loss.
  std::vector<double> distill_parts = {st.distill_mse, st.distill_kl};
  if (st.distill()) {
    if (absl::Status s = st.AverageOverRanks({&distill_parts}); !s.ok()) return s;
    nats_line = absl::StrFormat(" | mse %.4g", distill_parts[0]) +
                (t.distill_kl_weight() > 0 ? absl::StrFormat(" | kl %.4g", distill_parts[1]) : "") +
                nats_line;
  }
  // Sequence parallelism, per layer and training step of this window (forward packets + backward replies).
  std::vector<double> sp_sent, sp_received, sp_prefix, sp_packet;
  double sp_seconds = 0;
  if (st.sequence_parallel) {
    for (const auto& ls : st.sequence_parallel->stats()) {
      sp_sent.push_back(ls.bytes_sent / r.steps_in_window);
      sp_received.push_back(ls.bytes_received / r.steps_in_window);
      sp_prefix.push_back(ls.calls ? static_cast<double>(ls.prefix_entries) / ls.calls : 0.0);
      sp_packet.push_back(ls.calls ? static_cast<double>(ls.packet_entries) / ls.calls : 0.0);
      sp_seconds += ls.comm_seconds / r.steps_in_window;
    }
    st.sequence_parallel->ResetStats();
    double sent = 0;
    for (double b : sp_sent) sent += b;
    absl::StrAppend(&nats_line, absl::StrFormat(" | sp KV packets %.2f MB/step", sent / 1e6));
  }
  std::string mfu_part;
  if (std::isfinite(r.mfu)) {
    mfu_part = absl::StrFormat(" | MFU %.1f%%", 100 * r.mfu);
    const std::string executed = absl::StrFormat("%.1f%%", 100 * r.mfu_executed);
    if (executed != absl::StrFormat("%.1f%%", 100 * r.mfu))
      absl::StrAppend(&mfu_part, " (executed ", executed, ")");
  }
  st.Print(absl::StrFormat("step %d/%d | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s%s%s | ETA %s",
                           st.step, r.total_steps, r.loss, r.lr, r.grad_norm, r.tokens_per_s, mfu_part,
                           nats_line, data::FormatDuration(r.eta_seconds)));
  JsonLine line;
  line.Add("kind", "train")
      .Add("rank", st.rank)
      .Add("step", st.step)
      .Add("loss", r.loss)
      .Add("lr", r.lr)
      .Add("grad_norm", r.grad_norm);
  if (!kv.empty()) {
    line.AddArray("frac_global", frac_g)
        .AddArray("frac_local", frac_l)
        .AddArray("frac_sliding", frac_s)
        .AddArray("mask_density", density)
        .AddArray("kv_fraction", kv)
        .AddArray("kv_fraction_inference", kv_inference)
        .Add("lambda", r.lambda);
    if (st.kv_controller->enabled()) {
      line.Add("kv_controlled", st.kv_measured).Add("kv_ema", st.kv_controller->state().ema);
    }
  }
  if (st.distill()) {
    line.Add("distill_mse", distill_parts[0]);
    if (t.distill_kl_weight() > 0) line.Add("distill_kl", distill_parts[1]);
  }
  if (st.sequence_parallel) {
    line.AddArray("sp_bytes_sent", sp_sent)
        .AddArray("sp_bytes_received", sp_received)
        .AddArray("sp_packet_entries", sp_packet)
        .AddArray("sp_prefix_entries", sp_prefix)
        .Add("sp_comm_s", sp_seconds);
  }
  if (st.data_parallel) {
    const auto& ds = st.data_parallel->stats();
    line.Add("dp_bytes_reduced", ds.bytes_reduced)
        .Add("dp_comm_s", ds.comm_seconds)
        .Add("dp_wait_s", ds.wait_seconds)
        .Add("dp_overlap", ds.overlap());
  }
  std::vector<std::pair<std::string, double>> scalars = {
      {"train/loss", r.loss},
      {"train/lr", r.lr},
      {"train/grad_norm", r.grad_norm},
      {"train/tokens_per_s", r.tokens_per_s},
      {"train/skipped_steps", static_cast<double>(r.skipped_steps)}};
  if (std::isfinite(r.mfu))
    scalars.insert(scalars.end(), {{"train/mfu", r.mfu}, {"train/mfu_executed", r.mfu_executed}});
  for (size_t i = 0; i < kv.size(); ++i) {
    const std::string layer = absl::StrCat("nats_layer", nats_layers[i], "/");
    scalars.insert(scalars.end(), {{layer + "frac_global", frac_g[i]},
                                   {layer + "frac_local", frac_l[i]},
                                   {layer + "frac_sliding", frac_s[i]},
                                   {layer + "mask_density", density[i]},
                                   {layer + "kv_fraction", kv[i]}});
  }
  if (!kv.empty()) {
    double mean_kv = 0, mean_density = 0;
    for (size_t i = 0; i < kv.size(); ++i)
      mean_kv += kv[i] / kv.size(), mean_density += density[i] / kv.size();
    scalars.insert(
        scalars.end(),
        {{"nats/kv_fraction", mean_kv}, {"nats/mask_density", mean_density}, {"nats/lambda", r.lambda}});
  }
  st.WriteTensorBoard(scalars);
  st.log.Write(line.Add("tokens_per_s", r.tokens_per_s)
                   .Add("mfu", r.mfu)  // null without a peak
                   .Add("mfu_executed", r.mfu_executed)
                   .Add("flops_executed", r.flops_executed)
                   .Add("consumed_samples", st.consumed_samples)
                   .Add("elapsed_s", SecondsSince(r.run_start)));
  return absl::OkStatus();
}

}  // namespace

namespace {

// An evaluation's progress line, JSON "eval" record and TensorBoard scalars.
void LogEval(TrainerState& st, const EvalResult& e) {
  st.Print(absl::StrFormat("eval step %d | val loss %.4f | val ppl %.2f | val bpb %.4f%s", st.step, e.loss,
                           e.perplexity, e.bits_per_byte,
                           st.distill() ? absl::StrFormat(" | val distill loss %.4g", e.distill_loss) : ""));
  JsonLine line;
  line.Add("kind", "eval")
      .Add("rank", st.rank)
      .Add("step", st.step)
      .Add("val_loss", e.loss)
      .Add("val_ppl", e.perplexity)
      .Add("val_bpb", e.bits_per_byte)
      .Add("val_tokens", e.tokens);
  if (st.distill()) line.Add("val_distill_loss", e.distill_loss);
  st.log.Write(line);
  st.WriteTensorBoard(
      {{"eval/loss", e.loss}, {"eval/perplexity", e.perplexity}, {"eval/bits_per_byte", e.bits_per_byte}});
}

// This rank's window-end KV fraction per NAtS layer after a step: of the sampled types (log steps only) and
// of the inference types (log steps, and every step the controller runs).
struct StepKv {
  std::vector<double> sampled, inference;
};

// Measures the step's KV fractions and gives the controller (when on) its next lambda from the measure it
// holds, averaged over every rank so that all ranks set the same lambda.
absl::StatusOr<StepKv> MeasureKvAndSteerLambda(TrainerState& st, bool log_step) {
  StepKv out;
  TrainerState::LayerKv inference;
  if (log_step) {  // only logged
    auto measured = st.LayerKvFractions();
    if (!measured.ok()) return measured.status();
    out.sampled = std::move(measured->window_end);
  }
  if (st.kv_controller->enabled() || log_step) {
    auto measured = st.LayerKvFractions(/*inference=*/true);
    if (!measured.ok()) return measured.status();
    inference = std::move(*measured);
  }
  const std::vector<double>& controlled = st.cfg.nats().target_kv_measure() == config::NatsConfig::CACHE_MEAN
                                              ? inference.cache_mean
                                              : inference.window_end;
  if (st.kv_controller->enabled() && !controlled.empty()) {
    // The controller holds what a cache keeps: the inference types' KV fraction, not the sampled one
    // (Gumbel noise makes the sampled types sparser than the argmax a cache uses).
    double mean = 0;
    for (double v : controlled) mean += v / controlled.size();
    auto measured = st.AverageOverRanks(mean);
    if (!measured.ok()) return measured.status();
    st.kv_measured = *measured;
    st.model->SetLambda(st.kv_controller->Update(*measured));
  }
  out.inference = std::move(inference.window_end);
  return out;
}

// A scheduled evaluation (train.eval_interval, the last step): logged, and kept in the checkpointed history.
absl::Status EvaluateOnSchedule(Trainer& trainer, TrainerState& st, double train_loss,
                                TrainSummary* summary) {
  auto e = trainer.Evaluate();
  if (!e.ok()) return e.status();
  summary->last_val_loss = e->loss;
  summary->last_val_bpb = e->bits_per_byte;
  LogEval(st, *e);
  checkpoint::MetricPoint point;
  point.set_step(st.step);
  point.set_loss(train_loss);
  point.set_val_loss(e->loss);
  st.history.push_back(point);
  return absl::OkStatus();
}

// The training steps since the last report.
struct ReportWindow {
  Clock::time_point start = Clock::now();
  int64_t tokens = 0;
  int64_t last_logged_step = 0;
  double attention_flops = 0;  // this process's executed attention FLOPs (nats/executed_flops.h)
};

// What one accepted step measured, for its report.
struct StepValues {
  double loss = 0, lr = 0, grad_norm = 0;
  double lambda = 0;  // what this step's backward used
};

// Where the run stands, for rates and the ETA.
struct RunClock {
  Clock::time_point start;
  int64_t first_step = 0;  // the step this attempt started at (after a resume)
};

// Tokens one optimizer step trains on, over all ranks.
int64_t TokensPerStep(const config::Config& cfg) {
  return static_cast<int64_t>(cfg.train().batch_size()) * cfg.model().context_length();
}

bool IsLogStep(const config::TrainConfig& t, int64_t step, int64_t total_steps) {
  return (step + 1) % std::max(1, t.log_interval()) == 0 || step + 1 == total_steps || step + 1 == 1;
}

// The norm before clipping; a non-finite one leaves the gradients unscaled (the step guard skips the step).
absl::StatusOr<double> ClipGradients(TrainerState& st) {
  const double clip = st.cfg.optim().grad_clip();
  return clip > 0 ? st.optimizer->ClipGradNorm(clip) : st.optimizer->GradNorm();
}

// Fills and writes the report of a logged step (rates over the window since the last one), then opens a new
// window. Collective (the executed FLOPs are summed over ranks).
absl::Status ReportStep(TrainerState& st, const StepValues& v, const StepKv& kv, const RunClock& clock,
                        int64_t skipped_steps, ReportWindow* window) {
  const int64_t total_steps = st.cfg.train().steps();
  StepReport report;
  report.total_steps = total_steps;
  report.loss = v.loss;
  report.lr = v.lr;
  report.grad_norm = v.grad_norm;
  report.lambda = v.lambda;
  report.tokens_per_s = window->tokens / std::max(SecondsSince(window->start), 1e-9);
  // Executed attention FLOPs are counted per process (each rank's rows and chunks): summed over ranks.
  auto attention_flops = st.SumOverRanks(window->attention_flops);
  if (!attention_flops.ok()) return attention_flops.status();
  const double flops_per_token = st.model->FlopsPerToken();
  // Kernels that count nothing (the counter is new to some of them): executed = dense-equivalent.
  const double executed_per_token =
      *attention_flops > 0
          ? 6.0 * static_cast<double>(st.model->NumParameters()) + *attention_flops / window->tokens
          : flops_per_token;
  const double no_peak = std::numeric_limits<double>::quiet_NaN();
  report.mfu = st.peak_flops > 0 ? report.tokens_per_s * flops_per_token / st.peak_flops : no_peak;
  report.mfu_executed =
      st.peak_flops > 0 ? report.tokens_per_s * executed_per_token / st.peak_flops : no_peak;
  report.flops_executed = executed_per_token * TokensPerStep(st.cfg);
  report.eta_seconds =
      (total_steps - st.step) * st.train_seconds / std::max<int64_t>(1, st.step - clock.first_step);
  report.steps_in_window = std::max<int64_t>(1, st.step - window->last_logged_step);
  report.skipped_steps = skipped_steps;
  report.run_start = clock.start;
  if (absl::Status s = WriteStepReport(st, report, kv.sampled, kv.inference); !s.ok()) return s;
  *window = ReportWindow{Clock::now(), 0, st.step, 0};
  return absl::OkStatus();
}

// The run's totals once the loop ends. The best loss is over the scheduled evaluations only
// (train.eval_interval and the last step), which the checkpointed history carries across attempts: a resumed
// run reports the same best loss as one that ran straight through (the evaluation at a resume's start is
// extra, and is left out).
TrainSummary FinishSummary(const TrainerState& st, const RunClock& clock, TrainSummary summary) {
  summary.best_val_loss = summary.last_val_loss;
  bool any = false;
  for (const checkpoint::MetricPoint& point : st.history) {
    if (!point.has_val_loss()) continue;
    summary.best_val_loss = any ? std::min(summary.best_val_loss, point.val_loss()) : point.val_loss();
    any = true;
  }
  summary.steps = st.step;
  summary.seconds = SecondsSince(clock.start);
  summary.tokens_per_second = std::max<int64_t>(0, st.step - clock.first_step) * TokensPerStep(st.cfg) /
                              std::max(st.train_seconds, 1e-9);
  return summary;
}

// Checkpoints on the schedule, at the last step (checkpoint.save_final) and on a stop request; returns
// whether the run stops. Every rank takes the same branch: the schedule and any stop signal are agreed by one
// all-reduce. After a skipped (bad) step only a stop request is honoured (`accepted_step` false): the step
// counter did not move, so the schedule has nothing new.
absl::StatusOr<bool> CheckpointOrStop(Trainer& trainer, TrainerState& st, CheckpointSchedule& schedule,
                                      bool accepted_step, TrainSummary* summary) {
  auto decision = DecideCheckpoint(*st.comm, schedule, st.step, absl::Now());
  if (!decision.ok()) return decision.status();
  const bool last = st.step == st.cfg.train().steps();
  const bool final_save = accepted_step && last && st.cfg.checkpoint().save_final();
  const bool save = decision->stop || (accepted_step && (decision->save || final_save));
  if (save) {
    auto dir = trainer.SaveCheckpointNow();
    if (!dir.ok() && accepted_step) {
      dir = ContinueAfterSaveError(st, dir.status(), /*can_retry=*/!decision->stop && !last);
    }
    if (!dir.ok()) return dir.status();
    if (!dir->empty()) summary->last_checkpoint = *dir;
    if (accepted_step) schedule.MarkSaved(absl::Now());
  }
  if (decision->stop) {
    st.PrintStopped();
    summary->stopped_by_signal = true;
  }
  return decision->stop;
}

}  // namespace

// One optimizer step per iteration: forward + backward over the micro-batches, clip, the step guard's
// verdict, AdamW, the KV controller; then the report, evaluation and checkpoint each on its schedule.
absl::StatusOr<TrainSummary> Trainer::Train() {
  TrainerState& st = *state_;
  const auto& t = st.cfg.train();
  const int64_t total_steps = t.steps();
  TrainSummary summary;
  summary.parameters = st.model->NumParameters();
  summary.resumed_from_step = st.resumed_from_step;
  auto first = Evaluate();
  if (!first.ok()) return first.status();
  summary.first_val_loss = summary.last_val_loss = first->loss;
  summary.last_val_bpb = first->bits_per_byte;
  LogEval(st, *first);
  CheckpointSchedule schedule(st.cfg.checkpoint(), absl::Now());
  const RunClock clock{Clock::now(), st.step};
  ReportWindow window{Clock::now(), 0, st.step, 0};
  st.model->train();
  while (st.step < total_steps) {
    const auto step_start = Clock::now();
    StepValues v;
    v.lr = LearningRateAt(st.cfg.optim(), st.step, total_steps);
    st.optimizer->set_lr(v.lr);
    TakeExecutedAttentionFlops();  // what evaluation and the last step's measurements ran is not the step's
    auto loss = ForwardBackward();
    if (!loss.ok()) return loss.status();
    v.loss = *loss;
    const int64_t step_attention_flops = TakeExecutedAttentionFlops();
    auto grad_norm = ClipGradients(st);
    if (!grad_norm.ok()) return grad_norm.status();
    v.grad_norm = *grad_norm;
    auto verdict = st.AgreeOnVerdict(st.guard->Check(v.loss, v.grad_norm));
    if (!verdict.ok()) return verdict.status();
    if (verdict->bad) {
      if (absl::Status s = st.HandleBadStep(*verdict, v.loss, v.grad_norm, &summary); !s.ok()) return s;
      auto stop = CheckpointOrStop(*this, st, schedule, /*accepted_step=*/false, &summary);
      if (!stop.ok()) return stop.status();
      if (*stop) break;
      continue;
    }
    st.guard->Accept(v.loss, v.grad_norm);
    if (absl::Status s = st.optimizer->Step(); !s.ok()) return s;
    v.lambda = st.model->lambda();  // what this step's backward used (the controller may change it below)
    const bool log_step = IsLogStep(t, st.step, total_steps);
    auto kv = MeasureKvAndSteerLambda(st, log_step);
    if (!kv.ok()) return kv.status();
    ++st.step;
    st.consumed_samples += t.batch_size();
    st.train_seconds += SecondsSince(step_start);
    window.tokens += TokensPerStep(st.cfg);
    window.attention_flops += static_cast<double>(step_attention_flops);
    summary.last_train_loss = v.loss;
    if (log_step) {
      if (absl::Status s = ReportStep(st, v, *kv, clock, summary.skipped_steps, &window); !s.ok()) return s;
    }
    if ((t.eval_interval() > 0 && st.step % t.eval_interval() == 0) || st.step == total_steps) {
      if (absl::Status s = EvaluateOnSchedule(*this, st, v.loss, &summary); !s.ok()) return s;
    }
    auto stop = CheckpointOrStop(*this, st, schedule, /*accepted_step=*/true, &summary);
    if (!stop.ok()) return stop.status();
    if (*stop) break;
  }
  WriteRunMaskWindow(st);
  return FinishSummary(st, clock, std::move(summary));
}

}  // namespace nats

#include "runtime/checkpointing.h"

#include <ATen/ATen.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "checkpoints/blob_file.h"
#include "checkpoints/checkpoint_reader.h"
#include "checkpoints/dtype.h"
#include "checkpoints/durable_file.h"
#include "runtime/config.h"
#include "runtime/signals.h"

namespace nats {
namespace {

using checkpoint::Manifest;
using checkpoint::SaveReport;
using checkpoint::ShardSlice;
using checkpoint::TensorEntry;
using parallel::Communicator;

// Ranges held by several ranks are split into pieces of at least this size, one per holder: enough
// parallelism for a file system that rewards it, without thousands of tiny slices in the manifest.
constexpr uint64_t kSplitBytes = 8ull << 20;

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

int64_t ShapeNumel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

at::Tensor BytesTensor(const std::string& bytes) {
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::TensorOptions().dtype(at::kByte));
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

SaveReport StatusReport(int rank, const absl::Status& status) {
  SaveReport report;
  report.set_rank(rank);
  report.set_status_code(static_cast<int>(status.code()));
  report.set_status_message(std::string(status.message()));
  return report;
}

// Every rank's report, in rank order (one AllGatherV of the serialized messages).
absl::StatusOr<std::vector<SaveReport>> GatherReports(Communicator& comm, const SaveReport& mine) {
  std::string bytes;
  if (!mine.SerializeToString(&bytes))
    return absl::InternalError("checkpoint: cannot serialize a save report");
  std::vector<at::Tensor> gathered;
  if (absl::Status s = comm.AllGatherV(BytesTensor(bytes), &gathered); !s.ok()) return s;
  std::vector<SaveReport> reports(gathered.size());
  for (size_t r = 0; r < gathered.size(); ++r) {
    const at::Tensor t = gathered[r].contiguous();
    const void* data = t.numel() > 0 ? t.data_ptr() : nullptr;
    if (!reports[r].ParseFromArray(data, static_cast<int>(t.numel()))) {
      return absl::InternalError(absl::StrCat("checkpoint: cannot parse the save report of rank ", r));
    }
  }
  return reports;
}

// The first failure in rank order, the same on every rank.
absl::Status FirstError(const std::vector<SaveReport>& reports, int world_size) {
  for (const SaveReport& r : reports) {
    if (r.status_code() != 0) {
      return absl::Status(
          static_cast<absl::StatusCode>(r.status_code()),
          world_size > 1 ? absl::StrCat("rank ", r.rank(), ": ", r.status_message()) : r.status_message());
    }
  }
  return absl::OkStatus();
}

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& local) {
  absl::StatusOr<std::vector<SaveReport>> reports = GatherReports(comm, StatusReport(comm.rank(), local));
  if (!reports.ok()) return reports.status();
  return FirstError(*reports, comm.size());
}

// This rank's declaration: one TensorEntry per state tensor, with one slice (rank, global_offset, numel).
absl::Status DeclareState(const std::vector<StateTensor>& state, int rank, Manifest* out) {
  for (const StateTensor& st : state) {
    if (!st.tensor.defined())
      return absl::InvalidArgumentError(absl::StrCat("state tensor ", st.name, " is undefined"));
    absl::StatusOr<checkpoint::DType> dtype = checkpoint::ToDType(st.tensor.scalar_type());
    if (!dtype.ok())
      return absl::InvalidArgumentError(
          absl::StrCat("state tensor ", st.name, ": ", dtype.status().message()));
    for (int64_t d : st.global_shape) {
      if (d < 0)
        return absl::InvalidArgumentError(absl::StrCat("state tensor ", st.name, ": negative global shape"));
    }
    const int64_t total = ShapeNumel(st.global_shape);
    if (st.global_offset < 0 || st.global_offset + st.tensor.numel() > total) {
      return absl::InvalidArgumentError(
          absl::StrCat("state tensor ", st.name, ": elements [", st.global_offset, ", ",
                       st.global_offset + st.tensor.numel(), ") lie outside its global shape ",
                       checkpoint::ShapeString(st.global_shape)));
    }
    TensorEntry* entry = out->add_tensors();
    entry->set_name(st.name);
    entry->set_dtype(*dtype);
    for (int64_t d : st.global_shape) entry->add_shape(d);
    ShardSlice* slice = entry->add_slices();
    slice->set_rank(rank);
    slice->set_global_offset(static_cast<uint64_t>(st.global_offset));
    slice->set_numel(static_cast<uint64_t>(st.tensor.numel()));
  }
  return absl::OkStatus();
}

// One write of the plan: rank `rank` writes elements [lo, hi) of the tensor from its state entry `index`.
struct PlannedWrite {
  int rank = 0;
  int index = 0;
  uint64_t lo = 0;
  uint64_t hi = 0;
};

struct PlannedTensor {
  TensorEntry meta;  // name, dtype, shape (no slices)
  std::vector<PlannedWrite> writes;
};

// The write plan, computed identically on every rank from all declarations. Deterministic: tensors in
// order of first declaration (rank 0's order first), elementary intervals in ascending order, ties of
// the least-loaded choice broken by the lower rank.
absl::StatusOr<std::vector<PlannedTensor>> PlanWrites(const std::vector<SaveReport>& declarations) {
  struct Holding {
    int rank;
    int index;
    uint64_t lo, hi;
  };
  std::vector<PlannedTensor> plan;
  std::vector<std::vector<Holding>> holdings;
  std::map<std::string, size_t> position;
  for (const SaveReport& report : declarations) {
    const int rank = report.rank();
    for (int i = 0; i < report.pieces().tensors_size(); ++i) {
      const TensorEntry& decl = report.pieces().tensors(i);
      auto [it, inserted] = position.emplace(decl.name(), plan.size());
      if (inserted) {
        plan.emplace_back();
        plan.back().meta = decl;
        plan.back().meta.clear_slices();
        holdings.emplace_back();
      } else {
        const TensorEntry& first = plan[it->second].meta;
        if (first.dtype() != decl.dtype() || !std::equal(first.shape().begin(), first.shape().end(),
                                                         decl.shape().begin(), decl.shape().end())) {
          return absl::InvalidArgumentError(absl::StrCat(
              "state tensor ", decl.name(), ": ranks disagree on its dtype or global shape (",
              checkpoint::DTypeName(first.dtype()), " ",
              checkpoint::ShapeString(at::IntArrayRef(first.shape().data(), first.shape_size())), " vs rank ",
              rank, ": ", checkpoint::DTypeName(decl.dtype()), " ",
              checkpoint::ShapeString(at::IntArrayRef(decl.shape().data(), decl.shape_size())), ")"));
        }
      }
      const ShardSlice& s = decl.slices(0);
      if (s.numel() > 0)
        holdings[it->second].push_back({rank, i, s.global_offset(), s.global_offset() + s.numel()});
    }
  }

  std::map<int, uint64_t> load;  // bytes assigned per rank so far
  for (size_t t = 0; t < plan.size(); ++t) {
    PlannedTensor& pt = plan[t];
    const uint64_t element = static_cast<uint64_t>(checkpoint::ElementSize(pt.meta.dtype()));
    uint64_t total = 1;
    for (int64_t d : pt.meta.shape()) total *= static_cast<uint64_t>(d);
    std::set<uint64_t> cuts = {0, total};
    for (const Holding& h : holdings[t]) {
      cuts.insert(h.lo);
      cuts.insert(h.hi);
    }
    std::vector<uint64_t> bounds(cuts.begin(), cuts.end());
    for (size_t b = 0; b + 1 < bounds.size(); ++b) {
      const uint64_t lo = bounds[b], hi = bounds[b + 1];
      std::vector<const Holding*> holders;  // at most one per rank, ascending rank
      for (const Holding& h : holdings[t]) {
        if (h.lo <= lo && h.hi >= hi && (holders.empty() || holders.back()->rank != h.rank))
          holders.push_back(&h);
      }
      if (holders.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("state tensor ", pt.meta.name(), ": elements [", lo, ", ", hi,
                         ") are held by no rank; every element must be passed to "
                         "SaveCheckpoint by at least one rank"));
      }
      const uint64_t n = hi - lo;
      const uint64_t wanted = std::max<uint64_t>(1, (n * element + kSplitBytes - 1) / kSplitBytes);
      const uint64_t parts = std::min<uint64_t>({holders.size(), wanted, n});
      std::vector<bool> used(holders.size(), false);
      for (uint64_t p = 0; p < parts; ++p) {
        const uint64_t plo = lo + n * p / parts, phi = lo + n * (p + 1) / parts;
        size_t best = holders.size();
        for (size_t k = 0; k < holders.size(); ++k) {
          if (!used[k] && (best == holders.size() || load[holders[k]->rank] < load[holders[best]->rank]))
            best = k;
        }
        used[best] = true;
        load[holders[best]->rank] += (phi - plo) * element;
        PlannedWrite w{holders[best]->rank, holders[best]->index, plo, phi};
        if (!pt.writes.empty() && pt.writes.back().rank == w.rank && pt.writes.back().index == w.index &&
            pt.writes.back().hi == w.lo) {
          pt.writes.back().hi = w.hi;  // merge adjacent pieces of one holding
        } else {
          pt.writes.push_back(w);
        }
      }
    }
  }
  return plan;
}

// Writes this rank's part of the plan into its blob; returns the report (slices, blob, RNG bytes).
absl::StatusOr<SaveReport> WriteBlob(const std::string& staging, int rank, int64_t step,
                                     const std::vector<StateTensor>& state,
                                     const std::vector<PlannedTensor>& plan, const std::string& rng_state,
                                     uint64_t* bytes_written) {
  SaveReport report;
  report.set_rank(rank);
  report.set_status_code(0);
  checkpoint::RankState* rs = report.mutable_pieces()->add_rank_states();
  rs->set_rank(rank);
  rs->set_rng_state(rng_state);
  std::unique_ptr<checkpoint::BlobWriter> writer;
  int host_index = -1;
  at::Tensor host;  // the flat host copy of state[host_index] (a view when already on the CPU)
  for (const PlannedTensor& pt : plan) {
    for (const PlannedWrite& w : pt.writes) {
      if (w.rank != rank) continue;
      if (!writer) {
        absl::StatusOr<std::unique_ptr<checkpoint::BlobWriter>> created =
            checkpoint::BlobWriter::Create(staging, rank, step);
        if (!created.ok()) return created.status();
        writer = *std::move(created);
      }
      const StateTensor& st = state[w.index];
      if (host_index != w.index) {
        host = st.tensor.detach().to(at::kCPU).contiguous().reshape({-1});
        host_index = w.index;
      }
      const uint64_t element = static_cast<uint64_t>(host.element_size());
      const char* data = static_cast<const char*>(host.data_ptr()) + (w.lo - st.global_offset) * element;
      absl::StatusOr<ShardSlice> slice = writer->Append(data, (w.hi - w.lo) * element);
      if (!slice.ok()) return slice.status();
      slice->set_global_offset(w.lo);
      slice->set_numel(w.hi - w.lo);
      *bytes_written += slice->bytes();
      TensorEntry* entry = report.mutable_pieces()->add_tensors();
      entry->set_name(pt.meta.name());
      *entry->add_slices() = *slice;
    }
  }
  if (writer) {
    absl::StatusOr<uint64_t> size = writer->Finish();
    if (!size.ok()) return size.status();
    checkpoint::BlobFile* blob = report.mutable_pieces()->add_blobs();
    blob->set_rank(rank);
    blob->set_file(writer->file_name());
    blob->set_bytes(*size);
  }
  return report;
}

// The size of every blob the plan produces, summed: the header, the 64-byte alignment padding and the
// slices, exactly as BlobWriter lays them out (the disk space a save needs, besides the small manifest).
uint64_t PlannedBlobBytes(const std::vector<PlannedTensor>& plan) {
  std::map<int, uint64_t> size;
  for (const PlannedTensor& pt : plan) {
    const uint64_t element = static_cast<uint64_t>(checkpoint::ElementSize(pt.meta.dtype()));
    for (const PlannedWrite& w : pt.writes) {
      uint64_t& s = size.emplace(w.rank, checkpoint::kBlobHeaderBytes).first->second;
      s += (checkpoint::kBlobAlignment - s % checkpoint::kBlobAlignment) % checkpoint::kBlobAlignment;
      s += (w.hi - w.lo) * element;
    }
  }
  uint64_t total = 0;
  for (const auto& [rank, bytes] : size) total += bytes;
  return total;
}

// Free bytes for an unprivileged writer under `dir`; nullopt when the file system does not say.
std::optional<uint64_t> FreeBytes(const std::string& dir) {
  struct statvfs st;
  if (::statvfs(dir.c_str(), &st) != 0 || st.f_blocks == 0) return std::nullopt;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string Megabytes(uint64_t bytes) { return absl::StrFormat("%.1f MB", bytes / 1e6); }

// A failed save, said so that the user can act: which step, how much space it needs, what is still
// there. Out-of-space errors (real or found by the free-space check) get the bytes needed.
absl::Status SaveError(const absl::Status& error, const std::string& root, int64_t step, uint64_t needed) {
  std::string message = absl::StrCat("checkpoint step ", step, " was not saved: ", error.message());
  if (absl::IsResourceExhausted(error)) {
    const std::optional<uint64_t> free = FreeBytes(root);
    absl::StrAppend(&message, "; the checkpoint needs ", needed, " bytes (", Megabytes(needed),
                    ") of blobs in ", root, free ? absl::StrCat(", ", Megabytes(*free), " free") : "");
  }
  absl::StatusOr<std::string> previous = checkpoint::FindLatestCheckpoint(root);
  absl::StrAppend(&message, previous.ok()
                                ? absl::StrCat("; the previous checkpoint ", *previous, " is intact")
                                : "; no earlier checkpoint exists");
  return absl::Status(error.code(), message);
}

// Rank 0: the manifest from the header, the plan and every rank's report.
Manifest AssembleManifest(const Manifest& header, int64_t step, int world_size,
                          const std::vector<PlannedTensor>& plan, const std::vector<SaveReport>& reports) {
  Manifest m = header;
  m.clear_tensors();
  m.clear_rank_states();
  m.clear_blobs();
  m.set_format_version(checkpoint::kFormatVersion);
  m.set_step(step);
  m.set_world_size(world_size);
  m.set_created_unix_seconds(absl::ToUnixSeconds(absl::Now()));
  std::map<std::string, TensorEntry*> by_name;
  for (const PlannedTensor& pt : plan) {
    TensorEntry* e = m.add_tensors();
    *e = pt.meta;
    by_name[e->name()] = e;
  }
  for (const SaveReport& r : reports) {
    for (const TensorEntry& piece : r.pieces().tensors()) {
      TensorEntry* e = by_name.at(piece.name());
      for (const ShardSlice& s : piece.slices()) *e->add_slices() = s;
    }
    for (const auto& rs : r.pieces().rank_states()) *m.add_rank_states() = rs;
    for (const auto& b : r.pieces().blobs()) *m.add_blobs() = b;
  }
  for (TensorEntry& e : *m.mutable_tensors()) {
    std::sort(e.mutable_slices()->begin(), e.mutable_slices()->end(),
              [](const ShardSlice& a, const ShardSlice& b) { return a.global_offset() < b.global_offset(); });
    uint64_t next = 0;
    for (const ShardSlice& s : e.slices()) {
      TORCH_INTERNAL_ASSERT(s.global_offset() == next, "checkpoint plan: tensor ", e.name(),
                            " has a gap or overlap at ", next);
      next += s.numel();
    }
  }
  return m;
}

}  // namespace

StateTensor WholeTensor(std::string name, const at::Tensor& tensor) {
  return StateTensor{std::move(name), tensor, tensor.sizes().vec(), 0};
}

std::vector<StateTensor> FromNamedShards(const std::vector<parallel::NamedShard>& shards,
                                         const std::string& prefix) {
  std::vector<StateTensor> out;
  out.reserve(shards.size());
  for (const parallel::NamedShard& s : shards) {
    out.push_back(StateTensor{prefix + s.name, s.tensor, {s.global_numel}, s.offset});
  }
  return out;
}

std::vector<parallel::NamedShard> ToNamedShards(const std::vector<StateTensor>& state,
                                                const std::string& prefix) {
  std::vector<parallel::NamedShard> out;
  for (const StateTensor& st : state) {
    if (!absl::StartsWith(st.name, prefix)) continue;
    out.push_back(parallel::NamedShard{st.name.substr(prefix.size()), ShapeNumel(st.global_shape),
                                       st.global_offset, st.tensor});
  }
  return out;
}

absl::StatusOr<SaveResult> SaveCheckpoint(Communicator& comm, const std::string& root, int64_t step,
                                          const std::vector<StateTensor>& state, const Manifest& header,
                                          const std::string& rng_state,
                                          const checkpoint::RetentionPolicy& retention) {
  const absl::Time start = absl::Now();
  const int rank = comm.rank();
  SaveResult result;
  result.step_dir = checkpoint::StepDirPath(root, step);

  // 1. Declarations -> the same plan on every rank.
  SaveReport declaration;
  declaration.set_rank(rank);
  absl::Status declared = step < 0
                              ? absl::InvalidArgumentError(absl::StrCat("checkpoint step ", step, " < 0"))
                              : DeclareState(state, rank, declaration.mutable_pieces());
  declaration.set_status_code(static_cast<int>(declared.code()));
  declaration.set_status_message(std::string(declared.message()));
  absl::StatusOr<std::vector<SaveReport>> declarations = GatherReports(comm, declaration);
  if (!declarations.ok()) return declarations.status();
  if (absl::Status s = FirstError(*declarations, comm.size()); !s.ok()) return s;
  absl::StatusOr<std::vector<PlannedTensor>> plan = PlanWrites(*declarations);
  if (!plan.ok()) return plan.status();

  const uint64_t needed = PlannedBlobBytes(*plan);
  const std::string staging = checkpoint::StagingDirPath(root, step);
  // After a failed write every rank has stopped writing (the failure was agreed); rank 0 then removes
  // the partial save, which gives the space back and leaves the previous checkpoints as they were.
  auto abandon = [&](const absl::Status& error) {
    if (rank == 0) (void)checkpoint::RemoveTree(staging);
    return SaveError(error, root, step, needed);
  };

  // 2. The staging directory, and a save that cannot fit refused before writing a byte of it.
  absl::Status prepared;
  if (rank == 0) {
    prepared = checkpoint::PrepareStagingDir(root, step).status();
    const std::optional<uint64_t> free = prepared.ok() ? FreeBytes(staging) : std::nullopt;
    if (free && *free < needed) {
      prepared =
          absl::ResourceExhaustedError(absl::StrCat("not enough free space in ", root,
                                                    "; free disk space, lower checkpoint.keep_last or move "
                                                    "checkpoint.dir to a larger file system"));
    }
  }
  if (absl::Status s = AgreeOnStatus(comm, prepared); !s.ok()) return abandon(s);

  // 3. Blobs; the gather doubles as the barrier "every blob is fsynced".
  absl::StatusOr<SaveReport> written =
      WriteBlob(staging, rank, step, state, *plan, rng_state, &result.bytes_this_rank);
  SaveReport report = written.ok() ? *std::move(written) : StatusReport(rank, written.status());
  absl::StatusOr<std::vector<SaveReport>> reports = GatherReports(comm, report);
  if (!reports.ok()) return reports.status();
  if (absl::Status s = FirstError(*reports, comm.size()); !s.ok()) return abandon(s);
  for (const SaveReport& r : *reports) {
    for (const auto& b : r.pieces().blobs()) result.bytes_total += b.bytes();
  }

  // 4. Commit (rank 0). Only the manifest and the rename decide whether the step exists; `latest` and
  // retention come after it, so their failures are warnings (a resume never needs `latest`).
  absl::Status committed;
  if (rank == 0) {
    const Manifest manifest = AssembleManifest(header, step, comm.size(), *plan, *reports);
    committed = checkpoint::WriteManifest(staging, manifest);
    if (committed.ok()) committed = checkpoint::CommitStagingDir(root, step);
    if (committed.ok()) {
      if (absl::Status s = checkpoint::WriteLatest(root, step); !s.ok()) {
        result.latest_error =
            absl::StrCat("checkpoint step ", step, " is saved but `latest` was not updated: ", s.message(),
                         " (resume takes the newest complete step; nothing is lost)");
      }
      absl::StatusOr<std::vector<int64_t>> deleted = checkpoint::ApplyRetention(root, retention, step);
      if (deleted.ok()) {
        result.deleted_steps = *std::move(deleted);
      } else {
        result.retention_error = std::string(deleted.status().message());
      }
    }
  }
  if (absl::Status s = AgreeOnStatus(comm, committed); !s.ok()) return abandon(s);
  result.seconds = SecondsSince(start);
  return result;
}

absl::StatusOr<LoadResult> LoadCheckpoint(Communicator& comm, const std::string& path,
                                          std::vector<StateTensor>& targets, const LoadOptions& options) {
  LoadResult result;
  absl::Status status = [&]() -> absl::Status {
    absl::StatusOr<std::string> dir = checkpoint::ResolveCheckpointPath(path);
    if (!dir.ok()) return dir.status();
    absl::StatusOr<std::unique_ptr<checkpoint::CheckpointReader>> reader =
        checkpoint::CheckpointReader::Open(*dir);
    if (!reader.ok()) return reader.status();
    const Manifest& manifest = (*reader)->manifest();
    std::string hint;
    if (options.current_config != nullptr && manifest.has_config()) {
      const std::string change = DescribeModelConfigChange(manifest.config(), *options.current_config);
      hint = change.empty()
                 ? "the model config is unchanged, so the code's parameter layout differs from the one "
                   "that saved (a different nats version?)"
                 : absl::StrCat("the model config changed: ", change);
    }
    at::NoGradGuard no_grad;  // targets are often parameters (leaves that require grad)
    for (StateTensor& target : targets) {
      if (!target.tensor.defined()) {
        return absl::InvalidArgumentError(absl::StrCat("load target ", target.name, " is undefined"));
      }
      if (target.global_offset < 0 ||
          target.global_offset + target.tensor.numel() > ShapeNumel(target.global_shape)) {
        return absl::InvalidArgumentError(
            absl::StrCat("load target ", target.name, ": elements [", target.global_offset, ", ",
                         target.global_offset + target.tensor.numel(), ") lie outside its global shape ",
                         checkpoint::ShapeString(target.global_shape)));
      }
      if (options.allow_missing && (*reader)->Find(target.name) == nullptr) {
        result.missing.push_back(target.name);
        continue;
      }
      if (absl::Status s =
              (*reader)->CheckCompatible(target.name, target.tensor.scalar_type(), target.global_shape, hint);
          !s.ok()) {
        return s;
      }
      if (absl::Status s =
              (*reader)->Read(target.name, target.global_offset, target.tensor, options.verify_crc);
          !s.ok()) {
        return s;
      }
    }
    result.step_dir = *dir;
    result.manifest = manifest;
    return absl::OkStatus();
  }();
  if (absl::Status s = AgreeOnStatus(comm, status); !s.ok()) return s;
  return result;
}

std::string CheckpointRoot(const config::Config& config) {
  if (!config.checkpoint().dir().empty()) return config.checkpoint().dir();
  return absl::StrCat(config.train().run_dir(), "/ckpt");
}

checkpoint::RetentionPolicy RetentionFromConfig(const config::CheckpointConfig& config) {
  checkpoint::RetentionPolicy policy;
  policy.keep_last = config.keep_last();
  policy.keep_every = config.keep_every();
  return policy;
}

std::string CaptureCpuRngState() {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  const at::Tensor state = gen.get_state().contiguous();
  return std::string(static_cast<const char*>(state.data_ptr()), static_cast<size_t>(state.nbytes()));
}

absl::Status RestoreCpuRngState(const std::string& bytes) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  try {
    gen.set_state(BytesTensor(bytes));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot restore the CPU generator from ", bytes.size(),
                     " saved bytes (saved by another LibTorch?): ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

std::optional<std::string> SavedRngState(const Manifest& manifest, int rank, int world_size) {
  if (manifest.world_size() != world_size) return std::nullopt;
  for (const checkpoint::RankState& rs : manifest.rank_states()) {
    if (rs.rank() == rank) return rs.rng_state();
  }
  return std::nullopt;
}

std::string DescribeModelConfigChange(const config::Config& saved, const config::Config& current) {
  // The fields that shape the parameters: the model section, and which layers carry a scorer.
  std::vector<std::string> changes;
  for (const ConfigChange& c : DiffConfigs(saved, current)) {
    if (absl::StartsWith(c.field, "model.") || c.field == "nats.layers") {
      changes.push_back(absl::StrCat(c.field, " ", c.saved, " -> ", c.current));
    }
  }
  return absl::StrJoin(changes, ", ");
}

CheckpointSchedule::CheckpointSchedule(const config::CheckpointConfig& config, absl::Time last_save)
    : interval_steps_(config.interval_steps()),
      interval_(config.interval_minutes() > 0 ? absl::Seconds(config.interval_minutes() * 60)
                                              : absl::ZeroDuration()),
      last_save_(last_save) {}

bool CheckpointSchedule::Due(int64_t step, absl::Time now) const {
  if (interval_steps_ > 0 && step > 0 && step % interval_steps_ == 0) return true;
  return interval_ > absl::ZeroDuration() && now - last_save_ >= interval_;
}

absl::StatusOr<CheckpointDecision> DecideCheckpoint(Communicator& comm, const CheckpointSchedule& schedule,
                                                    int64_t step, absl::Time now) {
  at::Tensor flags = at::zeros({2}, at::TensorOptions().dtype(at::kInt));
  flags.data_ptr<int>()[0] = schedule.Due(step, now) ? 1 : 0;
  flags.data_ptr<int>()[1] = StopRequested() ? 1 : 0;
  if (absl::Status s = comm.AllReduce(flags, parallel::ReduceOp::kMax); !s.ok()) return s;
  CheckpointDecision decision;
  decision.stop = flags.data_ptr<int>()[1] != 0;
  decision.save = decision.stop || flags.data_ptr<int>()[0] != 0;
  return decision;
}

}  // namespace nats

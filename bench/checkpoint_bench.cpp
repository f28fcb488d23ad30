// Checkpoint save/load throughput (runtime/checkpointing.h) for a gpt2_124m-sized training state:
// parameters + AdamW exp_avg + exp_avg_sq in fp32 (3 x 124.5M x 4 B = 1.49 GB), against the disk's own
// speed measured by this program on the same directory: one file of the same size written with
// write(2) + fsync, and read back. Reads are cold: after the writes every file's pages are dropped
// with posix_fadvise(DONTNEED), so reads come from the device, not the page cache.
//
//   checkpoint_bench [--dir DIR] [--reps N] [--scale S]      (S < 1 shrinks the state for a quick run)
//   mpirun -np 2 checkpoint_bench ...                        (ZeRO-style: m and v sharded, params replicated)
//
// Prints a Markdown table; BENCHMARKS.md holds the latest one. Everything written is deleted at the end.
#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoints/checkpoint_dir.h"
#include "checkpoints/crc32c.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "runtime/checkpointing.h"

namespace {

namespace fs = std::filesystem;
using nats::StateTensor;

// GPT-2 124M (vocab padded to 50304, context 1024, 12 layers, d 768): 124,475,904 parameters.
std::vector<std::pair<std::string, std::vector<int64_t>>> Gpt2Shapes(double scale) {
  const int64_t d = 768, vocab = static_cast<int64_t>(50304 * scale),
                layers = std::max<int64_t>(1, 12 * scale);
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {{"wte", {vocab, d}},
                                                                      {"wpe", {1024, d}}};
  for (int64_t l = 0; l < layers; ++l) {
    const std::string h = absl::StrCat("h", l, ".");
    for (auto& [n, s] :
         std::vector<std::pair<std::string, std::vector<int64_t>>>{{"ln_1.weight", {d}},
                                                                   {"ln_1.bias", {d}},
                                                                   {"attn.c_attn.weight", {3 * d, d}},
                                                                   {"attn.c_attn.bias", {3 * d}},
                                                                   {"attn.c_proj.weight", {d, d}},
                                                                   {"attn.c_proj.bias", {d}},
                                                                   {"ln_2.weight", {d}},
                                                                   {"ln_2.bias", {d}},
                                                                   {"mlp.c_fc.weight", {4 * d, d}},
                                                                   {"mlp.c_fc.bias", {4 * d}},
                                                                   {"mlp.c_proj.weight", {d, 4 * d}},
                                                                   {"mlp.c_proj.bias", {d}}}) {
      shapes.push_back({h + n, s});
    }
  }
  shapes.push_back({"ln_f.weight", {d}});
  shapes.push_back({"ln_f.bias", {d}});
  return shapes;
}

void DropCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void DropCacheTree(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) DropCache(e.path().string());
  }
}

// The disk's own sequential write speed: one file of `bytes` from memory in 64 MB writes, then fsync.
double DiskWriteSeconds(const std::string& path, const char* data, uint64_t bytes) {
  const absl::Time start = absl::Now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (uint64_t done = 0; done < bytes;) {
    const ssize_t n = ::write(fd, data + done, std::min<uint64_t>(bytes - done, 64 << 20));
    if (n <= 0) {
      std::perror("write");
      std::exit(1);
    }
    done += static_cast<uint64_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  return absl::ToDoubleSeconds(absl::Now() - start);
}

double DiskReadSeconds(const std::string& path, char* data, uint64_t bytes) {
  const absl::Time start = absl::Now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  for (uint64_t done = 0; done < bytes;) {
    const ssize_t n = ::read(fd, data + done, std::min<uint64_t>(bytes - done, 64 << 20));
    if (n <= 0) break;
    done += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return absl::ToDoubleSeconds(absl::Now() - start);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/nats_checkpoint_bench";
  int reps = 3;
  double scale = 1.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dir") dir = argv[i + 1];
    if (flag == "--reps") reps = std::atoi(argv[i + 1]);
    if (flag == "--scale") scale = std::atof(argv[i + 1]);
  }
  auto world = nats::parallel::MakeWorldCommunicator();
  if (!world.ok()) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", std::string(world.status().message()).c_str());
    return 1;
  }
  nats::parallel::Communicator& comm = **world;
  const int rank = comm.rank(), size = comm.size();
  const std::string root = absl::StrCat(dir, "/ckpt");
  if (rank == 0) fs::remove_all(dir), fs::create_directories(dir);
  (void)comm.Barrier();

  // Targets are zero-filled (touched) like a trainer's live tensors, so loads do not pay first-touch
  // page faults. The state as a ZeRO-1 trainer holds it: parameters whole on every rank, m and v sharded by
  // flat ranges of each tensor (per-tensor sharding keeps this program simple; the bytes are the same).
  std::vector<StateTensor> state, targets;
  uint64_t params = 0;
  int64_t seed = 0;
  for (const auto& [name, shape] : Gpt2Shapes(scale)) {
    at::Tensor p = at::randn(shape, at::detail::createCPUGenerator(++seed));  // identical on every rank
    params += p.numel();
    state.push_back(nats::WholeTensor("model/" + name, p));
    targets.push_back(nats::WholeTensor("model/" + name, at::zeros_like(p)));
    const int64_t n = p.numel(), lo = n * rank / size, hi = n * (rank + 1) / size;
    for (const char* moment : {".exp_avg", ".exp_avg_sq"}) {
      at::Tensor m = at::randn({hi - lo});
      state.push_back(StateTensor{"optim/" + name + moment, m, {n}, lo});
      targets.push_back(StateTensor{"optim/" + name + moment, at::zeros_like(m), {n}, lo});
    }
  }
  const uint64_t total_bytes = params * 3 * 4;
  const uint64_t rank_bytes = total_bytes / size;  // what each rank writes, roughly (the plan balances)

  // Baselines, per rank on its own file at the same time (so that np > 1 measures the shared disk).
  std::vector<char> buffer(rank_bytes);
  std::memset(buffer.data(), 0x5a, buffer.size());
  std::vector<double> disk_write, disk_read, save, load_verify, load_plain;
  const std::string raw = absl::StrCat(dir, "/raw_", rank, ".bin");
  for (int r = 0; r < reps; ++r) {
    (void)comm.Barrier();
    disk_write.push_back(DiskWriteSeconds(raw, buffer.data(), buffer.size()));
    DropCache(raw);
    (void)comm.Barrier();
    disk_read.push_back(DiskReadSeconds(raw, buffer.data(), buffer.size()));
    ::unlink(raw.c_str());

    (void)comm.Barrier();
    nats::checkpoint::RetentionPolicy keep_one;
    keep_one.keep_last = 1;
    auto saved = nats::SaveCheckpoint(comm, root, r + 1, state, nats::checkpoint::Manifest(), "", keep_one);
    if (!saved.ok()) {
      std::fprintf(stderr, "save: %s\n", std::string(saved.status().message()).c_str());
      return 1;
    }
    save.push_back(saved->seconds);
    if (rank == 0) DropCacheTree(saved->step_dir);
    (void)comm.Barrier();
    for (bool verify : {true, false}) {
      nats::LoadOptions options;
      options.verify_crc = verify;
      const absl::Time start = absl::Now();
      auto loaded = nats::LoadCheckpoint(comm, root, targets, options);
      const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
      if (!loaded.ok()) {
        std::fprintf(stderr, "load: %s\n", std::string(loaded.status().message()).c_str());
        return 1;
      }
      (verify ? load_verify : load_plain).push_back(seconds);
      if (rank == 0) DropCacheTree(loaded->step_dir);
      (void)comm.Barrier();
    }
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!at::equal(targets[i].tensor, state[i].tensor)) {
      std::fprintf(stderr, "checkpoint_bench: %s differs after the load\n", targets[i].name.c_str());
      return 1;
    }
  }
  // CRC-32C alone over the same bytes in memory: the CPU cost a save and a verified load carry.
  const absl::Time crc_start = absl::Now();
  volatile uint32_t crc = nats::checkpoint::Crc32c(0, buffer.data(), buffer.size());
  (void)crc;
  const double crc_seconds = absl::ToDoubleSeconds(absl::Now() - crc_start);

  if (rank == 0) {
    // A load reads everything on every rank for the replicated parameters, and each rank's own m/v.
    const uint64_t load_bytes_per_rank = params * 4 + 2 * params * 4 / size;
    const double mb = 1e6;
    const double dw = Median(disk_write), dr = Median(disk_read);
    const double disk_write_mbs = rank_bytes * size / dw / mb, disk_read_mbs = rank_bytes * size / dr / mb;
    auto row = [&](const char* what, double bytes, double seconds, double baseline) {
      std::printf("| %-44s | %8.2f | %7.3f | %8.0f | %5.2f |\n", what, bytes / 1e9, seconds,
                  bytes / seconds / mb, bytes / seconds / mb / baseline);
    };
    std::printf(
        "checkpoint_bench: %llu parameters (+ AdamW m, v) = %.2f GB fp32, %d rank(s), median of %d\n\n",
        static_cast<unsigned long long>(params), total_bytes / 1e9, size, reps);
    std::printf("| %-44s | %8s | %7s | %8s | %5s |\n", "operation (all ranks)", "GB", "s", "MB/s", "ratio");
    std::printf("|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(10, '-').c_str(),
                std::string(9, '-').c_str(), std::string(10, '-').c_str(), std::string(7, '-').c_str());
    row("disk: write + fsync one file per rank", rank_bytes * size, dw, disk_write_mbs);
    row("SaveCheckpoint (CRC, fsync, commit)", total_bytes, Median(save), disk_write_mbs);
    row("disk: cold read one file per rank", rank_bytes * size, dr, disk_read_mbs);
    row("LoadCheckpoint, cold, CRC verified", load_bytes_per_rank * size, Median(load_verify), disk_read_mbs);
    row("LoadCheckpoint, cold, --no verify", load_bytes_per_rank * size, Median(load_plain), disk_read_mbs);
    row(nats::checkpoint::Crc32cIsHardware() ? "CRC-32C (SSE4.2) in memory, one rank"
                                             : "CRC-32C (software) in memory, one rank",
        rank_bytes, crc_seconds, disk_write_mbs);
    std::printf("\nratio: MB/s over the disk baseline of the same direction (CRC row: over disk write)\n");
  }
  (void)comm.Barrier();
  if (rank == 0) fs::remove_all(dir);
  world->reset();
  nats::parallel::FinalizeMpi();
  return 0;
}

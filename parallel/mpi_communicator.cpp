#include "parallel/mpi_communicator.h"

#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "data/fingerprint.h"

namespace nats::parallel {
namespace {

std::mutex g_mpi_mutex;
bool g_we_initialised = false;
int g_thread_level = -1;
// The process that started this rank (mpirun, orted, slurmstepd), recorded by InitMpi under a launcher; 0
// otherwise.
pid_t g_launcher_pid = 0;

// When the job is aborted (MPI_Abort on another rank, mpirun killed), the launcher sends SIGTERM, which the
// trainer takes as "save and stop after this step", and exits without waiting: the rank would linger in its
// collective until its own timeout. A rank that waits sees its launcher gone (its parent changed) and exits.
void ExitIfLauncherGone(absl::string_view what, int rank, int size) {
  if (g_launcher_pid == 0 || ::getppid() == g_launcher_pid) return;
  std::fprintf(stderr,
               "nats: rank %d of %d: the MPI launcher (pid %d) exited while MPI %s was waiting (the job "
               "was aborted); exiting\n",
               rank, size, static_cast<int>(g_launcher_pid), std::string(what).c_str());
  std::fflush(stderr);
  std::_Exit(kTimeoutExitCode);
}

// Requests whose Wait timed out keep their buffers here forever: MPI may still write into them.
std::mutex g_leak_mutex;
std::vector<at::Tensor>* LeakedBuffers() {
  static auto* leaked = new std::vector<at::Tensor>();
  return leaked;
}

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

absl::Status MpiError(int code, absl::string_view what) {
  return absl::InternalError(absl::StrCat("MPI ", what, " failed: ", MpiErrorString(code)));
}

// Largest element count per MPI call (counts are int); 2^30 keeps byte counts of small types in range.
constexpr int64_t kMaxChunk = int64_t{1} << 30;

struct MpiType {
  MPI_Datatype type;
  int64_t scale;  // MPI elements per tensor element (element size when sent as bytes)
};

MpiType TypeOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return {MPI_FLOAT, 1};
    case at::kDouble:
      return {MPI_DOUBLE, 1};
    case at::kInt:
      return {MPI_INT32_T, 1};
    case at::kLong:
      return {MPI_INT64_T, 1};
    case at::kByte:
      return {MPI_UINT8_T, 1};
    default:
      return {MPI_BYTE, static_cast<int64_t>(t.element_size())};
  }
}

MPI_Op OpOf(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

absl::StatusOr<int> ToCount(int64_t n, absl::string_view what) {
  if (n > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", n, " elements exceed the MPI count limit (",
                                                   INT_MAX, "); split the tensor"));
  }
  return static_cast<int>(n);
}

// A non-blocking MPI operation: requests, the tensors they use, and a finishing step (e.g. divide by size
// for kAvg) that runs once after completion.
class MpiWork : public Work {
 public:
  // Takes the timeout policy of `comm` as it is now (a later set_timeout does not change a started call).
  MpiWork(std::string what, const Communicator& comm)
      : what_(std::move(what)),
        timeout_(comm.timeout()),
        abort_on_timeout_(comm.abort_on_timeout()),
        rank_(comm.rank()),
        size_(comm.size()) {}

  ~MpiWork() override {
    if (!done_ && !MpiFinalized()) (void)Wait();
    if (!done_) {
      std::lock_guard<std::mutex> lock(g_leak_mutex);
      for (auto& t : keep_) LeakedBuffers()->push_back(t);
    }
  }

  // Each Add* call registers one started request or the status of a call that failed to start.
  void AddRequest(MPI_Request r) { requests_.push_back(r); }
  void Keep(const at::Tensor& t) { keep_.push_back(t); }
  void SetFinish(std::function<absl::Status()> finish) { finish_ = std::move(finish); }
  void Fail(absl::Status s) {
    if (status_.ok()) status_ = std::move(s);
  }

  bool Poll() override {
    if (done_) return true;
    if (!status_.ok()) {
      // Some sub-requests may have started before the failure; they still have to complete before the
      // buffers can be released, but the caller gets the error.
    }
    int flag = 0;
    if (requests_.empty()) {
      flag = 1;
    } else {
      int rc = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) {
        Fail(MpiError(rc, what_));
        flag = 1;
      }
    }
    if (flag) {
      done_ = true;
      if (status_.ok() && finish_) status_ = finish_();
      keep_.clear();
    }
    return done_;
  }

  absl::Status Wait() override {
    const absl::Time start = absl::Now();
    const absl::Time deadline = start + timeout_;
    absl::Time next_launcher_check = start + absl::Milliseconds(100);
    int polls = 0;
    while (!Poll()) {
      const absl::Time now = absl::Now();
      if (now > next_launcher_check) {
        ExitIfLauncherGone(what_, rank_, size_);
        next_launcher_check = now + absl::Milliseconds(100);
      }
      if (now > deadline) {
        // The requests stay pending (MPI has no cancel for collectives): the destructor keeps their buffers.
        return internal::HandleTimeout(
            abort_on_timeout_, internal::TimeoutMessage(absl::StrCat("MPI ", what_), timeout_, now - start,
                                                        rank_, size_, "the communicator is unusable"));
      }
      // Spin briefly (latency), then back off so oversubscribed ranks leave the core to their peers.
      if (++polls < 200) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 2000 ? 20 : 200));
      }
    }
    return status_;
  }

 private:
  std::string what_;
  absl::Duration timeout_;
  bool abort_on_timeout_;
  int rank_, size_;
  std::vector<MPI_Request> requests_;
  std::vector<at::Tensor> keep_;
  std::function<absl::Status()> finish_;
  absl::Status status_;
  bool done_ = false;
};

std::unique_ptr<Work> Failed(absl::Status s) { return std::make_unique<CompletedWork>(std::move(s)); }

std::string Describe(absl::string_view call, const at::Tensor& t) {
  return absl::StrCat(call, " (", t.numel(), " x ", c10::toString(t.scalar_type()), ")");
}

// Fingerprint of the row shape (all dims but the first, as int64 bytes: their count is in the length) so
// ranks can compare shapes with one integer. Only ranks of one run compare it; nothing records it.
int64_t RowShapeHash(const at::Tensor& t) {
  const at::IntArrayRef row_shape = t.dim() > 1 ? t.sizes().slice(1) : at::IntArrayRef();
  const std::string_view bytes(reinterpret_cast<const char*>(row_shape.data()),
                               row_shape.size() * sizeof(int64_t));
  return static_cast<int64_t>(data::Fingerprint64(bytes) & 0x7fffffffffffffffull);
}

}  // namespace

absl::Status InitMpi() {
  std::lock_guard<std::mutex> lock(g_mpi_mutex);
  if (MpiFinalized()) {
    return absl::FailedPreconditionError(
        "InitMpi: MPI was already finalized in this process; it cannot restart");
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    if (g_thread_level < 0) MPI_Query_thread(&g_thread_level);
    return absl::OkStatus();
  }
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Init_thread");
  g_we_initialised = true;
  g_thread_level = provided;
  if (LaunchedByMpi()) g_launcher_pid = ::getppid();
  return absl::OkStatus();
}

void FinalizeMpi() {
  std::lock_guard<std::mutex> lock(g_mpi_mutex);
  if (g_we_initialised && !MpiFinalized()) MPI_Finalize();
  g_we_initialised = false;
}

int MpiThreadLevel() { return g_thread_level; }

bool BuiltWithMpi() { return true; }

void AbortMpiJob(int code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized && !MpiFinalized()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; without MPI this process is the whole job
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::World() {
  if (auto s = InitMpi(); !s.ok()) return s;
  MPI_Comm dup;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_dup(MPI_COMM_WORLD)");
  return std::make_unique<MpiCommunicator>(dup);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD && !MpiFinalized()) MPI_Comm_free(&comm_);
}

std::unique_ptr<Work> MpiCommunicator::AllReduceAsync(at::Tensor& t, ReduceOp op) {
  if (auto s = internal::CheckTensor(t, "AllReduce", /*reduce=*/true, /*cuda=*/false); !s.ok())
    return Failed(s);
  if (auto s = internal::CheckReduceOp(t, op, "AllReduce"); !s.ok()) return Failed(s);
  auto work = std::make_unique<MpiWork>(
      Describe(absl::StrCat("AllReduce ", std::string(ReduceOpName(op))), t), *this);
  work->Keep(t);
  const MpiType type = TypeOf(t);
  char* base = static_cast<char*>(t.data_ptr());
  for (int64_t begin = 0; begin < t.numel(); begin += kMaxChunk) {
    const int64_t n = std::min(kMaxChunk, t.numel() - begin);
    MPI_Request r;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, base + begin * t.element_size(), static_cast<int>(n), type.type,
                            OpOf(op), comm_, &r);
    if (rc != MPI_SUCCESS) {
      work->Fail(MpiError(rc, "MPI_Iallreduce"));
      break;
    }
    work->AddRequest(r);
  }
  if (op == ReduceOp::kAvg && size_ > 1) {
    at::Tensor target = t;
    const int size = size_;
    work->SetFinish([target, size]() mutable {
      target.div_(size);
      return absl::OkStatus();
    });
  }
  return work;
}

absl::Status MpiCommunicator::AllReduce(at::Tensor& t, ReduceOp op) { return AllReduceAsync(t, op)->Wait(); }

std::unique_ptr<Work> MpiCommunicator::AllGatherAsync(const at::Tensor& in, at::Tensor& out) {
  if (auto s = internal::CheckTensor(in, "AllGather input", false, false); !s.ok()) return Failed(s);
  if (auto s = internal::CheckTensor(out, "AllGather output", false, false); !s.ok()) return Failed(s);
  if (out.numel() != size_ * in.numel() || out.scalar_type() != in.scalar_type()) {
    return Failed(absl::InvalidArgumentError(absl::StrCat(
        "AllGather: output must have size() * input numel = ", size_ * in.numel(),
        " elements of the input dtype, got ", out.numel(), " x ", c10::toString(out.scalar_type()))));
  }
  const MpiType type = TypeOf(in);
  auto count = ToCount(in.numel() * type.scale, "AllGather");
  if (!count.ok()) return Failed(count.status());
  auto work = std::make_unique<MpiWork>(Describe("AllGather", in), *this);
  work->Keep(in);
  work->Keep(out);
  MPI_Request r;
  int rc = MPI_Iallgather(in.data_ptr(), *count, type.type, out.data_ptr(), *count, type.type, comm_, &r);
  if (rc != MPI_SUCCESS) {
    work->Fail(MpiError(rc, "MPI_Iallgather"));
  } else {
    work->AddRequest(r);
  }
  return work;
}

absl::Status MpiCommunicator::AllGather(const at::Tensor& in, at::Tensor& out) {
  return AllGatherAsync(in, out)->Wait();
}

absl::StatusOr<std::vector<int64_t>> MpiCommunicator::ExchangeRows(const at::Tensor& like, int64_t rows,
                                                                   absl::string_view what) {
  // Per rank: rows, elements per row, dtype, row shape hash.
  int64_t row_elems = 1;
  for (int64_t d = 1; d < like.dim(); ++d) row_elems *= like.size(d);
  at::Tensor mine = at::empty({4}, at::kLong);
  auto* m = mine.data_ptr<int64_t>();
  m[0] = rows;
  m[1] = row_elems;
  m[2] = static_cast<int64_t>(like.scalar_type());
  m[3] = RowShapeHash(like);
  at::Tensor all = at::empty({4 * size_}, at::kLong);
  if (auto s = AllGatherAsync(mine, all)->Wait(); !s.ok()) return s;
  const auto* a = all.data_ptr<int64_t>();
  for (int r = 1; r < size_; ++r) {
    if (a[4 * r + 2] != a[2] || a[4 * r + 3] != a[3] || a[4 * r + 1] != a[1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": rank ", r, " passes rows of ", a[4 * r + 1], " x ",
          c10::toString(static_cast<at::ScalarType>(a[4 * r + 2])), " but rank 0 passes rows of ", a[1],
          " x ", c10::toString(static_cast<at::ScalarType>(a[2])),
          " (or the dims after the first differ); every rank must pass [n_i, same rest...] of one dtype"));
    }
  }
  std::vector<int64_t> out(size_);
  for (int r = 0; r < size_; ++r) out[r] = a[4 * r];
  return out;
}

absl::Status MpiCommunicator::AllGatherV(const at::Tensor& in, std::vector<at::Tensor>* out) {
  if (auto s = internal::CheckTensor(in, "AllGatherV", false, false); !s.ok()) return s;
  if (in.dim() == 0) return absl::InvalidArgumentError("AllGatherV: input must have at least 1 dimension");
  auto rows = ExchangeRows(in, in.size(0), "AllGatherV");
  if (!rows.ok()) return rows.status();
  int64_t row_elems = 1;
  for (int64_t d = 1; d < in.dim(); ++d) row_elems *= in.size(d);
  const MpiType type = TypeOf(in);
  std::vector<int> counts(size_), displs(size_);
  int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    auto c = ToCount((*rows)[r] * row_elems * type.scale, "AllGatherV");
    if (!c.ok()) return c.status();
    auto d = ToCount(total * type.scale, "AllGatherV");
    if (!d.ok()) return d.status();
    counts[r] = *c;
    displs[r] = *d;
    total += (*rows)[r] * row_elems;
  }
  at::Tensor flat = at::empty({total}, in.options());
  auto work = std::make_unique<MpiWork>(Describe("AllGatherV", in), *this);
  work->Keep(in);
  work->Keep(flat);
  MPI_Request r;
  int rc = MPI_Iallgatherv(in.data_ptr(), counts[rank_], type.type, flat.data_ptr(), counts.data(),
                           displs.data(), type.type, comm_, &r);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallgatherv");
  work->AddRequest(r);
  if (auto s = work->Wait(); !s.ok()) return s;
  std::vector<int64_t> shape = in.sizes().vec();
  out->clear();
  int64_t offset = 0;
  for (int q = 0; q < size_; ++q) {
    shape[0] = (*rows)[q];
    out->push_back(flat.narrow(0, offset, shape[0] * row_elems).view(shape));
    offset += shape[0] * row_elems;
  }
  return absl::OkStatus();
}

std::unique_ptr<Work> MpiCommunicator::ReduceScatterAsync(const at::Tensor& in, at::Tensor& out,
                                                          ReduceOp op) {
  if (auto s = internal::CheckTensor(in, "ReduceScatter input", true, false); !s.ok()) return Failed(s);
  if (auto s = internal::CheckTensor(out, "ReduceScatter output", true, false); !s.ok()) return Failed(s);
  if (auto s = internal::CheckReduceOp(in, op, "ReduceScatter"); !s.ok()) return Failed(s);
  if (in.numel() != size_ * out.numel() || out.scalar_type() != in.scalar_type()) {
    return Failed(absl::InvalidArgumentError(absl::StrCat(
        "ReduceScatter: input numel ", in.numel(), " must equal size() (", size_, ") * output numel ",
        out.numel(), " with one dtype; pad the input to a multiple of the communicator size")));
  }
  auto count = ToCount(out.numel(), "ReduceScatter");
  if (!count.ok()) return Failed(count.status());
  auto work = std::make_unique<MpiWork>(
      Describe(absl::StrCat("ReduceScatter ", std::string(ReduceOpName(op))), in), *this);
  work->Keep(in);
  work->Keep(out);
  MPI_Request r;
  int rc =
      MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), *count, TypeOf(in).type, OpOf(op), comm_, &r);
  if (rc != MPI_SUCCESS) {
    work->Fail(MpiError(rc, "MPI_Ireduce_scatter_block"));
    return work;
  }
  work->AddRequest(r);
  if (op == ReduceOp::kAvg && size_ > 1) {
    at::Tensor target = out;
    const int size = size_;
    work->SetFinish([target, size]() mutable {
      target.div_(size);
      return absl::OkStatus();
    });
  }
  return work;
}

absl::Status MpiCommunicator::ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) {
  return ReduceScatterAsync(in, out, op)->Wait();
}

absl::Status MpiCommunicator::Broadcast(at::Tensor& t, int root) {
  if (auto s = internal::CheckTensor(t, "Broadcast", false, false); !s.ok()) return s;
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " out of [0, ", size_, ")"));
  }
  const MpiType type = TypeOf(t);
  auto work = std::make_unique<MpiWork>(Describe(absl::StrCat("Broadcast from ", root), t), *this);
  work->Keep(t);
  char* base = static_cast<char*>(t.data_ptr());
  const int64_t total = t.numel() * type.scale;
  const int64_t mpi_elem_bytes = t.element_size() / type.scale;
  for (int64_t begin = 0; begin < total; begin += kMaxChunk) {
    const int64_t n = std::min(kMaxChunk, total - begin);
    MPI_Request r;
    int rc = MPI_Ibcast(base + begin * mpi_elem_bytes, static_cast<int>(n), type.type, root, comm_, &r);
    if (rc != MPI_SUCCESS) {
      work->Fail(MpiError(rc, "MPI_Ibcast"));
      break;
    }
    work->AddRequest(r);
  }
  return work->Wait();
}

absl::Status MpiCommunicator::Send(const at::Tensor& t, int peer, int tag) {
  // MPI_Isend only reads the buffer; PointToPoint takes a non-const handle because Recv writes it.
  at::Tensor handle = t;
  return PointToPoint(handle, peer, tag, /*send=*/true);
}

absl::Status MpiCommunicator::Recv(at::Tensor& t, int peer, int tag) {
  return PointToPoint(t, peer, tag, false);
}

absl::Status MpiCommunicator::PointToPoint(at::Tensor& t, int peer, int tag, bool send) {
  const char* what = send ? "Send" : "Recv";
  if (auto s = internal::CheckTensor(t, what, false, false); !s.ok()) return s;
  if (peer < 0 || peer >= size_ || tag < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": peer ", peer, " must be in [0, ", size_, ") and tag ", tag, " non-negative"));
  }
  const MpiType type = TypeOf(t);
  auto work = std::make_unique<MpiWork>(
      absl::StrCat(Describe(what, t), send ? " to rank " : " from rank ", peer, " tag ", tag), *this);
  work->Keep(t);
  char* base = static_cast<char*>(t.data_ptr());
  const int64_t total = t.numel() * type.scale;
  const int64_t mpi_elem_bytes = t.element_size() / type.scale;
  // Zero-length tensors still send one (empty) message so that Recv always has something to match.
  for (int64_t begin = 0; begin < total || begin == 0; begin += kMaxChunk) {
    const int64_t n = std::min(kMaxChunk, total - begin);
    MPI_Request r;
    int rc =
        send ? MPI_Isend(base + begin * mpi_elem_bytes, static_cast<int>(n), type.type, peer, tag, comm_, &r)
             : MPI_Irecv(base + begin * mpi_elem_bytes, static_cast<int>(n), type.type, peer, tag, comm_, &r);
    if (rc != MPI_SUCCESS) {
      work->Fail(MpiError(rc, send ? "MPI_Isend" : "MPI_Irecv"));
      break;
    }
    work->AddRequest(r);
    if (total == 0) break;
  }
  return work->Wait();
}

absl::Status MpiCommunicator::AllToAllV(const std::vector<at::Tensor>& send, std::vector<at::Tensor>* recv) {
  if (static_cast<int>(send.size()) != size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("AllToAllV: need one tensor per rank (", size_, "), got ", send.size()));
  }
  for (const auto& t : send) {
    if (auto s = internal::CheckTensor(t, "AllToAllV", false, false); !s.ok()) return s;
    if (t.dim() == 0) return absl::InvalidArgumentError("AllToAllV: tensors must have at least 1 dimension");
    if (t.scalar_type() != send[0].scalar_type() || t.sizes().slice(1) != send[0].sizes().slice(1)) {
      return absl::InvalidArgumentError(
          "AllToAllV: the tensors sent to different ranks differ in dtype or in "
          "the dims after the first");
    }
  }
  // Agree on row shape and dtype (uniform error), then learn how many rows each peer sends here.
  if (auto rows = ExchangeRows(send[0], 0, "AllToAllV"); !rows.ok()) return rows.status();
  at::Tensor send_rows = at::empty({size_}, at::kLong);
  at::Tensor recv_rows = at::empty({size_}, at::kLong);
  for (int r = 0; r < size_; ++r) send_rows.data_ptr<int64_t>()[r] = send[r].size(0);
  {
    auto work = std::make_unique<MpiWork>("AllToAllV row counts", *this);
    MPI_Request r;
    int rc =
        MPI_Ialltoall(send_rows.data_ptr(), 1, MPI_INT64_T, recv_rows.data_ptr(), 1, MPI_INT64_T, comm_, &r);
    if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ialltoall");
    work->AddRequest(r);
    if (auto s = work->Wait(); !s.ok()) return s;
  }
  int64_t row_elems = 1;
  for (int64_t d = 1; d < send[0].dim(); ++d) row_elems *= send[0].size(d);
  const MpiType type = TypeOf(send[0]);
  std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
  int64_t stotal = 0, rtotal = 0;
  for (int r = 0; r < size_; ++r) {
    auto sc = ToCount(send[r].numel() * type.scale, "AllToAllV");
    auto sd = ToCount(stotal * type.scale, "AllToAllV");
    const int64_t rn = recv_rows.data_ptr<int64_t>()[r] * row_elems;
    auto rc = ToCount(rn * type.scale, "AllToAllV");
    auto rd = ToCount(rtotal * type.scale, "AllToAllV");
    for (auto* c : {&sc, &sd, &rc, &rd}) {
      if (!c->ok()) return c->status();
    }
    scounts[r] = *sc;
    sdispls[r] = *sd;
    rcounts[r] = *rc;
    rdispls[r] = *rd;
    stotal += send[r].numel();
    rtotal += rn;
  }
  std::vector<at::Tensor> flat_parts;
  for (const auto& t : send) flat_parts.push_back(t.reshape({-1}));
  at::Tensor send_flat = at::cat(flat_parts);
  at::Tensor recv_flat = at::empty({rtotal}, send[0].options());
  auto work = std::make_unique<MpiWork>(Describe("AllToAllV", send_flat), *this);
  work->Keep(send_flat);
  work->Keep(recv_flat);
  MPI_Request r;
  int rc = MPI_Ialltoallv(send_flat.data_ptr(), scounts.data(), sdispls.data(), type.type,
                          recv_flat.data_ptr(), rcounts.data(), rdispls.data(), type.type, comm_, &r);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ialltoallv");
  work->AddRequest(r);
  if (auto s = work->Wait(); !s.ok()) return s;
  std::vector<int64_t> shape = send[0].sizes().vec();
  recv->clear();
  int64_t offset = 0;
  for (int q = 0; q < size_; ++q) {
    shape[0] = recv_rows.data_ptr<int64_t>()[q];
    recv->push_back(recv_flat.narrow(0, offset, shape[0] * row_elems).view(shape));
    offset += shape[0] * row_elems;
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::Barrier() {
  auto work = std::make_unique<MpiWork>("Barrier", *this);
  MPI_Request r;
  int rc = MPI_Ibarrier(comm_, &r);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibarrier");
  work->AddRequest(r);
  return work->Wait();
}

absl::StatusOr<std::unique_ptr<Communicator>> MpiCommunicator::Split(int color, int key) {
  // MPI_Comm_split has no non-blocking form: exchange (color, key) with a timed all-gather first, so a
  // missing rank and an invalid color surface as a Status on every rank instead of a hang.
  at::Tensor mine = at::empty({2}, at::kLong);
  mine.data_ptr<int64_t>()[0] = color;
  mine.data_ptr<int64_t>()[1] = key;
  at::Tensor all = at::empty({2 * size_}, at::kLong);
  if (auto s = AllGatherAsync(mine, all)->Wait(); !s.ok()) return s;
  for (int r = 0; r < size_; ++r) {
    if (all.data_ptr<int64_t>()[2 * r] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Split: rank ", r, " passed color ", all.data_ptr<int64_t>()[2 * r], "; colors must be >= 0"));
    }
  }
  MPI_Comm child;
  int rc = MPI_Comm_split(comm_, color, key, &child);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_split");
  auto out = std::make_unique<MpiCommunicator>(child);
  out->set_timeout(timeout_);
  out->set_abort_on_timeout(abort_on_timeout_);
  return std::unique_ptr<Communicator>(std::move(out));
}

absl::StatusOr<int> MpiCommunicator::LocalRank() {
  if (auto s = Barrier(); !s.ok()) return s;  // timed rendezvous before the blocking split
  MPI_Comm node;
  int rc = MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_split_type");
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  return local;
}

}  // namespace nats::parallel

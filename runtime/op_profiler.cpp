// The RecordFunction recorder of runtime/op_profiler.h.
#include "runtime/op_profiler.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

namespace nats {
namespace {

using Clock = std::chrono::steady_clock;

struct Frame : at::ObserverContext {
  Clock::time_point start;
  double child_seconds = 0;
  std::string phase;
  Frame* parent = nullptr;
};

struct Totals {
  int64_t calls = 0;
  double total = 0, self = 0;
};

// The callbacks are plain function pointers, so their state is global.
std::mutex g_mutex;
std::map<std::pair<std::string, std::string>, Totals> g_totals;
std::map<std::string, double> g_top_level;
const std::string kBackward = "backward";
constexpr char kEngineRecord[] = "autograd::engine::evaluate_function";
std::string g_phase = "forward";  // set between steps, read by the callbacks
thread_local Frame* t_current = nullptr;
bool g_recording = false;
std::thread::id g_recording_thread;
at::CallbackHandle g_handle = 0;

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  auto frame = std::make_unique<Frame>();
  frame->parent = t_current;
  // The engine names each node it runs "autograd::engine::evaluate_function: <node>" (scope FUNCTION in
  // LibTorch 1.13); the node's own record has scope BACKWARD_FUNCTION.
  if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION ||
      std::strncmp(fn.name(), kEngineRecord, sizeof(kEngineRecord) - 1) == 0) {
    frame->phase = kBackward;
  } else if (t_current != nullptr) {
    frame->phase = t_current->phase;
  } else {
    std::lock_guard<std::mutex> lock(g_mutex);
    frame->phase = g_phase;
  }
  t_current = frame.get();
  frame->start = Clock::now();
  return frame;
}

void OnEnd(const at::RecordFunction& fn, at::ObserverContext* context) {
  const auto end = Clock::now();
  auto* frame = static_cast<Frame*>(context);
  if (frame == nullptr) return;
  const double total = std::chrono::duration<double>(end - frame->start).count();
  const double self = std::max(0.0, total - frame->child_seconds);
  // Records end in LIFO order per thread; restore the enclosing one (robust to a record started elsewhere).
  t_current = frame->parent;
  if (frame->parent != nullptr) frame->parent->child_seconds += total;
  std::lock_guard<std::mutex> lock(g_mutex);
  Totals& t = g_totals[{fn.name(), frame->phase}];
  ++t.calls;
  t.total += total;
  t.self += self;
  // Phase totals from the recording thread only: records on LibTorch's worker threads overlap its wall time.
  if (frame->parent == nullptr && std::this_thread::get_id() == g_recording_thread) {
    g_top_level[frame->phase] += total;
  }
}

}  // namespace

OpProfiler::OpProfiler() = default;

OpProfiler::~OpProfiler() { Stop(); }

void OpProfiler::Start() {
  Stop();
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_totals.clear();
    g_top_level.clear();
  }
  g_recording_thread = std::this_thread::get_id();
  g_handle = at::addGlobalCallback(at::RecordFunctionCallback(&OnStart, &OnEnd).needsInputs(false));
  g_recording = true;
}

void OpProfiler::Stop() {
  if (!g_recording) return;
  at::removeCallback(g_handle);
  g_recording = false;
}

void OpProfiler::SetPhase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_phase = phase;
}

std::vector<OpTiming> OpProfiler::Timings() const {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<OpTiming> out;
  for (const auto& [key, t] : g_totals) out.push_back({key.first, key.second, t.calls, t.total, t.self});
  std::sort(out.begin(), out.end(),
            [](const OpTiming& a, const OpTiming& b) { return a.self_seconds > b.self_seconds; });
  return out;
}

double OpProfiler::TopLevelSeconds(const std::string& phase) const {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_top_level.find(phase);
  return it == g_top_level.end() ? 0.0 : it->second;
}

}  // namespace nats

// parallel/sequence_parallel.h
//
// Sequence parallelism that exchanges only the retained KV (docs/method.md section 7; docs/architecture.md
// section 5). The sp ranks of one group hold contiguous chunks [begin, end) of the same sequences
// (ChunkBounds). Per attention layer each rank packs its boundary state: its global tokens, its local tokens
// after its last global (the receiver learns whether a later global cut them off from the globals it also
// receives), and its last W positions; one variable-size all-gather delivers every packet (the last rank's is
// empty: no rank reads it). Rank r keeps what a query at its chunk start could still see (every earlier
// global, the locals after the last earlier global, the last W positions) and attends to that prefix plus its
// own chunk. In backward, the dK, dV and type gradients of the received entries go back to their owners with
// one all-to-all-v and are added there.
//
// Two choices beyond the letter of the spec, both on purpose:
//  - a packet carries ALL of the last W positions, not only the sliding ones among them (at most W extra
//    entries): the window then stays contiguous (next paragraph), and a window global's "collected" term
//    (docs/method.md 5.3, C_j) sees the real keys of the cut-off locals inside the window (older ones of the
//    same segment are among the dropped terms);
//  - there is no explicit has-global flag: every global is sent, so the receiver knows the last global before
//    its chunk and drops the locals it cut off.
//
// Exactness (tests/parallel/sequence_parallel_test.cpp):
//  - forward outputs, the loss and the gradients of q, k, v, hence of every model weight except the
//    scorers, equal the single-rank run to float rounding in both modes;
//  - mode kFull moves every earlier position and gives exact scorer (type) gradients;
//  - mode kRetained drops the type-gradient terms that need entries a rank never received (chiefly "what if
//    this expired token were global" from later ranks' rows). It refuses MaskGradMode::kUnmasked, whose
//    normaliser sums over every earlier key.
// Dense layers (no types) exchange the whole prefix: every token is global.
//
// How the prefix is laid out (why the single-sequence kernels can run it unchanged): rank r builds
//   [pads | earlier globals and live locals before s-W, ascending | positions s-W .. s-1 | own chunk]
// per (batch row, KV head). Globals and locals are visible by order alone, so they may sit compacted; the
// window stays contiguous with the chunk so index distances equal position distances; pads are sliding
// tokens more than W slots before the chunk, hence invisible. The prefix rows get zero queries and no
// output gradient, so they add nothing to the chunk's results; the sparsity regulariser (docs/method.md 5.4)
// needs absolute positions and the next global beyond the chunk, so it is added here, not in the kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "nats/attention.h"
#include "parallel/communicator.h"

namespace nats::parallel {

enum class SpExchange { kRetained = 0, kFull = 1 };

// Communication and prefix sizes of one layer, summed over the forward/backward calls since ResetStats().
struct SpLayerStats {
  int64_t calls = 0;
  int64_t packet_entries = 0;  // (position, KV head, batch row) entries this rank contributed to all-gathers
  // Forward packets this rank contributed to the all-gather (each reaches the sp-1 other ranks) plus the
  // backward gradient replies it sent.
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;  // every other rank's packets (also later ranks', unused) plus replies received
  int64_t prefix_entries = 0;  // earlier entries placed in this rank's prefix (sum over batch rows and KV
                               // heads; window entries that are already invisible included)
  int64_t prefix_slots = 0;    // padded prefix length per head (the kernel's extra rows)
  double comm_seconds = 0;     // time inside the exchange (packing, collectives, unpacking)
};

// Rank `rank`'s chunk [begin, end) of a sequence of `length` tokens split over `size` ranks; the chunk sizes
// differ by at most one.
std::pair<int64_t, int64_t> ChunkBounds(int64_t length, int size, int rank);

class SequenceParallel : public ChunkAttention {
 public:
  // `sp` is the communicator of the ranks sharing a sequence (ProcessGrid::sp()); it must outlive this.
  SequenceParallel(Communicator& sp, SpExchange mode);

  // The next forward passes run chunks of sequences of `length` tokens (the model's context length).
  void SetSequenceLength(int64_t length);

  int64_t chunk_begin() const override { return begin_; }
  int64_t chunk_end() const { return end_; }
  int64_t sequence_length() const override { return length_; }
  SpExchange mode() const { return mode_; }

  // Throws c10::Error when a collective fails (it runs inside autograd); the message names the collective.
  at::Tensor Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& types, const AttentionOptions& options) override;

  // One entry per layer index seen so far.
  const std::vector<SpLayerStats>& stats() const { return stats_; }
  void ResetStats() { stats_.clear(); }
  // Whether exchanges add to stats() (on by default). The trainer turns it off while it evaluates, so the
  // statistics describe training steps.
  void set_count_stats(bool on) { count_stats_ = on; }
  // The entry the exchanges of `layer` add to; a scratch entry nobody reads while counting is off.
  SpLayerStats& StatsFor(int layer);
  Communicator& comm() { return comm_; }

 private:
  Communicator& comm_;
  SpExchange mode_;
  int64_t length_ = 0, begin_ = 0, end_ = 0;
  bool count_stats_ = true;
  std::vector<SpLayerStats> stats_;
  SpLayerStats uncounted_;
};

}  // namespace nats::parallel

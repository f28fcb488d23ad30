// parallel/rank_agreement.h
//
// Start-up consistency checks: every rank must run the same config, the same model (parameter count,
// shapes) and the same data. A mismatch would otherwise show up as a hang or silent divergence hours
// later. The check is collective; every rank gets the same verdict and the same message.
#pragma once

#include <cstdint>
#include <string_view>

#include "parallel/communicator.h"

namespace nats::parallel {

// Collective over `comm`: every rank passes the outcome of its own local setup (config validation,
// opening its shards, loading the tokenizer). Every rank returns OK when all ranks passed OK; otherwise
// every rank returns the same error: the status code and message of the lowest failing rank, prefixed
// with the failing ranks, e.g.
//   "rank 1 of 4 failed: data/books/train.tok: no such file ..."
//   "ranks 1, 3 of 4 failed; rank 1: data/books/train.tok: no such file ..."
// So a setup error on one node stops every rank at once with that node's message, instead of its peers
// waiting in the next collective until parallel.timeout_s. A failing communicator (a missing rank) is
// returned as is. On a communicator of size 1 it returns `mine` unchanged. Messages longer than 4 KiB
// are cut.
absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine);

// FailedPrecondition on every rank when some rank's `value` differs, e.g.
// "ranks disagree on parameter count: rank 1 has 1234, rank 0 has 1200 (1 of 4 ranks differ from rank 0)".
// For a text (a config, a list of shapes) pass its data::Fingerprint64 (data/fingerprint.h).
absl::Status CheckRanksAgree(Communicator& comm, std::string_view what, uint64_t value);

}  // namespace nats::parallel

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

// FailedPrecondition on every rank when some rank's `value` differs, e.g.
// "ranks disagree on parameter count: rank 1 has 1234, rank 0 has 1200 (1 of 4 ranks differ from rank 0)".
absl::Status CheckRanksAgree(Communicator& comm, std::string_view what, uint64_t value);

// 64-bit FNV-1a of `bytes`: a cheap fingerprint of a config text or a list of shapes for CheckRanksAgree.
uint64_t Fingerprint(std::string_view bytes);

}  // namespace nats::parallel

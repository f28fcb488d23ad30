// scaling/flop_count.h
//
// Parameter counts and training FLOPs per token of a model config, without building the model
// (LibTorch-free), for sweep planning (`nats sweep --list`), the FLOP-budget horizon and results.csv. The
// counts equal Transformer::NumParameters() (tests/scaling/flop_count_test.cpp checks that for several
// shapes).
//
// Conventions (docs/scaling.md):
//   embedding      = token embedding V d, plus the output head V d when it is not tied (the vocabulary
//   matrices;
//                    there are no learned positions: RoPE)
//   non_embedding  = everything else: per layer the norms, QKV, output projection, MLP and (NAtS layers) the
//                    scorer, plus the final norm
//   FLOPs/token    = 6 N_non_embedding + sum over layers 12 d_model k_l, where k_l is the mean number of keys
//   a
//                    query attends to: (T + 1) / 2 for causal dense attention, density_l (T + 1) / 2 for a
//                    NAtS layer whose kept mask covers density_l of the causal area. 12 = 2 (multiply-add) x
//                    2 (QK^T and AV) x 3 (forward + backward). The output head is left out, as in Kaplan et
//                    al. (2020).
#pragma once

#include <cstdint>

#include "runtime/config.pb.h"

namespace nats::scaling {

struct ParameterCounts {
  int64_t total = 0;
  int64_t embedding = 0;
  int64_t non_embedding = 0;
};

ParameterCounts CountParameters(const config::Config& config);

// Training FLOPs (forward + backward) per token. `nats_density` is the kept-mask density assumed for NAtS
// layers (1.0: dense-equivalent FLOPs; the measured mean mask density: executed FLOPs).
double TrainingFlopsPerToken(const config::Config& config, double nats_density = 1.0);

}  // namespace nats::scaling

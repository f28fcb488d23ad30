// runtime/lr_schedule.h
//
// Learning rate at an optimizer step (0-based) for the schedules of OptimConfig:
// linear warmup over warmup_steps, then cosine decay to lr * min_lr_ratio at total_steps,
// constant, or WSD (stable, then linear decay to lr * min_lr_ratio over the last decay_fraction).
#pragma once

#include "runtime/config.pb.h"

namespace nats {

double LearningRateAt(const config::OptimConfig& optim, int64_t step, int64_t total_steps);

}  // namespace nats

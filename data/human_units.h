// data/human_units.h
//
// Sizes and durations as people read them in progress lines and summaries (`nats prepare`, `nats train`,
// `nats inspect`). One implementation, so every command prints "1.5 MB" and "3m05s" the same way.
#pragma once

#include <string>

namespace nats::data {

// Decimal units (B, KB, MB, GB, TB): "512 B", "1.5 MB" with `decimals` digits once past 1000 bytes.
std::string FormatBytes(double bytes, int decimals = 1);

// "12s", "3m05s", "2h07m" (rounded to the second); "?" when not finite or negative.
std::string FormatDuration(double seconds);

}  // namespace nats::data

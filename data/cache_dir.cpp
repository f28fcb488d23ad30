// data/cache_dir.cpp
#include "data/cache_dir.h"

#include <cstdlib>

namespace nats::data {

std::string DefaultCacheDir() {
  const char* env = std::getenv("NATS_CACHE");
  return env != nullptr && env[0] != '\0' ? std::string(env) : std::string(NATS_DEFAULT_CACHE_DIR);
}

}  // namespace nats::data

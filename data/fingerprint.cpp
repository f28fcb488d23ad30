#include "data/fingerprint.h"

namespace nats::data {

uint64_t Fingerprint64(std::string_view bytes) {
  uint64_t h = 1469598103934665603ull;  // not FNV's basis: see the header
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace nats::data

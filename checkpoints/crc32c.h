// checkpoints/crc32c.h
//
// CRC-32C (Castagnoli, the iSCSI/ext4 polynomial 0x1EDC6F41, reflected; as DCP and the anchors use) of
// checkpoint slices. The fast path uses the SSE4.2 `crc32` instruction when the CPU has it (several
// times zlib's table-driven CRC-32, which made a 1.5 GB verified load CRC-bound); elsewhere a
// table-driven software CRC computes the same values. Crc32cReference is the bitwise textbook
// definition, for tests only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nats::checkpoint {

// Extends `crc` (0 for a fresh start) over `size` bytes: Crc32c(Crc32c(0, a), b) == Crc32c(0, a + b).
uint32_t Crc32c(uint32_t crc, const void* data, size_t size);

// The same function, one bit at a time (slow; tests compare it with Crc32c).
uint32_t Crc32cReference(uint32_t crc, const void* data, size_t size);

// True when Crc32c uses the hardware instruction on this machine.
bool Crc32cIsHardware();

}  // namespace nats::checkpoint

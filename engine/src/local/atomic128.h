// 128-bit atomics on x86-64 with inline `lock cmpxchg16b`.
//
// GCC compiles std::atomic<unsigned __int128> to calls into libatomic, which may
// fall back to a lock table: not lock-free, and not shared between processes.
// These helpers are the only way the engine reads or changes an OwnerRecord.
#pragma once

#include <cstdint>
#include <cstring>

#include "table_format.h"

#if !defined(__x86_64__)
#error "locktable needs x86-64 (lock cmpxchg16b)"
#endif

// ThreadSanitizer does not see inside inline assembly: tell it that each
// cmpxchg16b is a full barrier on its address (a release of what this thread
// wrote before, an acquire of what the last writer wrote), so the plain
// accesses it orders (robust list links, time stamps) are not reported.
#if defined(__SANITIZE_THREAD__)
#define LOCKTABLE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LOCKTABLE_TSAN 1
#endif
#endif
#if defined(LOCKTABLE_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace locktable::detail {

struct alignas(16) Word128 {
  uint64_t lo;  // tid_word | pid_word << 32
  uint64_t hi;  // aux | generation << 32

  bool operator==(const Word128&) const = default;
};
static_assert(sizeof(Word128) == sizeof(format::OwnerRecord));

// Compare-and-swap of the 16 bytes at `addr` (16-byte aligned). On failure,
// `expected` receives the current value. Full barrier either way.
inline bool cas128(void* addr, Word128& expected, Word128 desired) {
#if defined(LOCKTABLE_TSAN)
  __tsan_release(addr);
#endif
  bool ok;
  asm volatile("lock cmpxchg16b %1"
               : "=@ccz"(ok), "+m"(*static_cast<Word128*>(addr)), "+a"(expected.lo), "+d"(expected.hi)
               : "b"(desired.lo), "c"(desired.hi)
               : "memory");
#if defined(LOCKTABLE_TSAN)
  __tsan_acquire(addr);
#endif
  return ok;
}

// Atomic 16-byte load: cmpxchg16b with expected == desired (writes back the
// same value when it matches, so the line must be writable).
inline Word128 load128(void* addr) {
  Word128 v{0, 0};
  cas128(addr, v, v);
  return v;
}

// A cheap, possibly torn guess of the 16 bytes (two 64-bit loads). Only ever
// used as the `expected` value of a following cas128, which validates it.
inline Word128 guess128(const void* addr) {
  const uint64_t* p = static_cast<const uint64_t*>(addr);
  return Word128{__atomic_load_n(p, __ATOMIC_ACQUIRE), __atomic_load_n(p + 1, __ATOMIC_ACQUIRE)};
}

// --- OwnerRecord field access on a Word128 ---
inline uint32_t tid_word(const Word128& w) { return uint32_t(w.lo); }
inline uint32_t pid_word(const Word128& w) { return uint32_t(w.lo >> 32); }
inline uint32_t aux_word(const Word128& w) { return uint32_t(w.hi); }
inline uint32_t generation(const Word128& w) { return uint32_t(w.hi >> 32); }
inline Word128 make_word(uint32_t tid, uint32_t pid, uint32_t aux, uint32_t gen) {
  return Word128{uint64_t{tid} | (uint64_t{pid} << 32), uint64_t{aux} | (uint64_t{gen} << 32)};
}
inline format::OwnerRecord to_record(const Word128& w) {
  return format::OwnerRecord{tid_word(w), pid_word(w), aux_word(w), generation(w)};
}

}  // namespace locktable::detail

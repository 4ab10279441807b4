#include "history_ring.h"

namespace locktable::detail {

namespace {

uint64_t load_relaxed(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
uint32_t load_relaxed(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

}  // namespace

RingRead ring_read(const format::RingEntry* ring, uint32_t mask, uint64_t t, format::RingEntry* out,
                   uint32_t* writer_pid, uint32_t* writer_tid) {
  const format::RingEntry* e = &ring[t & mask];
  uint64_t s1 = std::atomic_ref<const uint64_t>(e->stamp).load(std::memory_order_acquire);
  if (s1 > 2 * t + 2) return RingRead::overwritten;
  if (s1 < 2 * t + 1) return RingRead::not_started;
  if (s1 == 2 * t + 1) {
    *writer_pid = load_relaxed(&e->pid);
    *writer_tid = load_relaxed(&e->tid);
    std::atomic_thread_fence(std::memory_order_acquire);
    uint64_t s2 = std::atomic_ref<const uint64_t>(e->stamp).load(std::memory_order_relaxed);
    if (s2 == s1) return RingRead::writing;
    return s2 > 2 * t + 2 ? RingRead::overwritten : ring_read(ring, mask, t, out, writer_pid, writer_tid);
  }
  out->stamp = s1;
  out->time_ns = load_relaxed(&e->time_ns);
  out->pid = load_relaxed(&e->pid);
  out->tid = load_relaxed(&e->tid);
  out->slot = load_relaxed(&e->slot);
  out->incarnation = load_relaxed(&e->incarnation);
  uint32_t kmf = load_relaxed(reinterpret_cast<const uint32_t*>(&e->kind));
  out->kind = uint8_t(kmf);
  out->mode = uint8_t(kmf >> 8);
  out->flags = uint16_t(kmf >> 16);
  out->aux32 = load_relaxed(&e->aux32);
  out->aux64 = load_relaxed(&e->aux64);
  uint64_t comm[2] = {load_relaxed(reinterpret_cast<const uint64_t*>(e->comm)),
                      load_relaxed(reinterpret_cast<const uint64_t*>(e->comm) + 1)};
  std::memcpy(out->comm, comm, 16);
  std::atomic_thread_fence(std::memory_order_acquire);
  uint64_t s2 = std::atomic_ref<const uint64_t>(e->stamp).load(std::memory_order_relaxed);
  return s2 == s1 ? RingRead::complete : RingRead::overwritten;
}

}  // namespace locktable::detail

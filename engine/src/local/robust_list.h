// Kernel death notification through the thread's robust futex list.
//
// Linux keeps, per thread, a pointer to a user-space list of held robust
// futexes (set_robust_list(2)). When the thread dies (exit, kill, exec), the
// kernel walks the list and, for every entry whose futex word holds the dying
// thread's tid, sets FUTEX_OWNER_DIED in that word and wakes one waiter if
// FUTEX_WAITERS is set. pthread robust mutexes are built on it.
//
// glibc registers one list per thread and threads its robust mutexes on it.
// locktable threads its held slots (and shared-reader records) on the SAME
// list, with the same node layout glibc uses for pthread_mutex_t: a {prev,
// next} pair whose `next` field is the list link, with the futex word 32 bytes
// before it (futex_offset == -32). The slot's OwnerRecord.tid_word is that futex
// word, so the kernel marks a dead owner's record and wakes a waiter at once.
//
// Rules (the same glibc follows, see nptl/descr.h):
//  * only the owning thread touches its list, with compiler barriers only;
//  * list_op_pending names the node being locked or unlocked, so a death in
//    the middle of an acquire or release is still seen by the kernel;
//  * back links are never read by the kernel; the head's own back link (which
//    glibc keeps just before the head) is never written here.
// If the thread's list head is missing, locktable registers its own; if it has
// another futex_offset (not glibc's), kernel notification is off for that
// thread and waiters find dead holders by polling alone.
#pragma once

#include <cstdint>

namespace locktable::detail {

struct RobustHead {  // struct robust_list_head, linux/futex.h
  void* list;
  long futex_offset;
  void* list_op_pending;
};

inline constexpr long kRobustFutexOffset = -32;

// `link` is the address of a node's `robust_next` field; its back link is the
// 64-bit word just before it.
inline void robust_pending(RobustHead* head, uint64_t* link) {
  head->list_op_pending = link;
  asm volatile("" ::: "memory");
}

inline void robust_clear_pending(RobustHead* head) {
  asm volatile("" ::: "memory");
  head->list_op_pending = nullptr;
}

inline void robust_enqueue(RobustHead* head, uint64_t* link) {
  auto first = reinterpret_cast<uintptr_t>(head->list);
  uintptr_t first_link = first & ~uintptr_t{1};
  if (first_link != reinterpret_cast<uintptr_t>(head)) {
    reinterpret_cast<uint64_t*>(first_link)[-1] = reinterpret_cast<uintptr_t>(link);
  }
  link[0] = first;
  link[-1] = reinterpret_cast<uintptr_t>(head);
  asm volatile("" ::: "memory");
  head->list = link;
}

inline void robust_dequeue(RobustHead* head, uint64_t* link) {
  uint64_t next = link[0];
  uint64_t prev = link[-1];
  uintptr_t next_link = next & ~uint64_t{1};
  uintptr_t prev_link = prev & ~uint64_t{1};
  if (next_link != reinterpret_cast<uintptr_t>(head) && next_link != 0) {
    reinterpret_cast<uint64_t*>(next_link)[-1] = prev;
  }
  if (prev_link != 0) *reinterpret_cast<uint64_t*>(prev_link) = next;
  asm volatile("" ::: "memory");
  // The node's own links are left as they are: no list reaches it now, the
  // kernel never follows list_op_pending's link, and the next enqueue of the
  // node writes both.
}

}  // namespace locktable::detail

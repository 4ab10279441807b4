#include "thread_holds.h"

#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace locktable::detail {

namespace {

// Shared holds beyond ThreadSelf's inline ones, and the exclusive holds taken
// abandoned and not yet marked consistent.
thread_local std::vector<SharedHold> tls_more_shared;
thread_local std::vector<format::Slot*> tls_abandoned;

void forget_holds_after_fork() {
  tls_more_shared.clear();
  tls_abandoned.clear();
}

void register_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, forget_holds_after_fork); });
}

}  // namespace

SharedHold* find_shared_hold(ThreadSelf& me, const format::Slot* s) {
  if (SharedHold* h = find_inline_shared_hold(me, s)) return h;
  for (SharedHold& h : tls_more_shared) {
    if (h.slot == s) return &h;
  }
  return nullptr;
}

void add_shared_hold(ThreadSelf& me, const SharedHold& hold) {
  if (me.shared_count < kInlineSharedHolds) {
    me.shared[me.shared_count++] = hold;
    return;
  }
  register_fork_handler();
  tls_more_shared.push_back(hold);
}

void remove_shared_hold(ThreadSelf& me, SharedHold* hold) {
  if (hold >= me.shared && hold < me.shared + me.shared_count) {
    *hold = me.shared[--me.shared_count];
    return;
  }
  tls_more_shared.erase(tls_more_shared.begin() + (hold - tls_more_shared.data()));
}

void note_abandoned(ThreadSelf& me, format::Slot* s) {
  register_fork_handler();
  tls_abandoned.push_back(s);
  me.abandoned_count = uint32_t(tls_abandoned.size());
}

bool forget_abandoned(ThreadSelf& me, format::Slot* s) {
  auto it = std::find(tls_abandoned.begin(), tls_abandoned.end(), s);
  if (it == tls_abandoned.end()) return false;
  tls_abandoned.erase(it);
  me.abandoned_count = uint32_t(tls_abandoned.size());
  return true;
}

bool owes_repair(format::Slot* s) {
  return std::find(tls_abandoned.begin(), tls_abandoned.end(), s) != tls_abandoned.end();
}

}  // namespace locktable::detail

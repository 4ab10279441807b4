#include "slot_views.h"

#include "reader_records.h"
#include "slot_state.h"

namespace locktable::detail {

using format::ReaderState;

SlotView inspect_slot(format::Slot* s) {
  SlotView v;
  Word128 cur = load128(&s->owner);
  v.raw = cur;
  uint32_t pw = pid_word(cur);
  v.retired = (pw & format::kRetired) != 0;
  v.abandoned = (pw & format::kAbandoned) != 0;
  v.waiters = __atomic_load_n(&s->waiters, __ATOMIC_RELAXED);
  v.readers = format::reader_count(load_readers(s));
  v.draining = is_draining(pw);
  if (is_exclusive(pw)) {
    v.owner = exclusive_owner(s, cur);
    v.owner_alive = !holder_dead(s, cur);
    v.acquired_at = __atomic_load_n(&s->acquired_at, __ATOMIC_RELAXED);
  }
  if (is_exclusive(pw) && !v.draining) {
    v.state = v.owner_alive ? LockState::held : LockState::dead_owner;
  } else if (v.readers != 0) {
    // Counted readers (a draining owner waits for them; joins in flight
    // count too, for an instant).
    v.state = LockState::shared;
    v.mode = Mode::shared;
  } else if (is_exclusive(pw)) {
    v.state = v.owner_alive ? LockState::held : LockState::dead_owner;  // drained, about to be in
  }
  return v;
}

std::vector<ReaderView> readers_of(TableFile& file, uint32_t slot_index) {
  std::vector<ReaderView> out;
  for_each_reader(file, [&](uint64_t i, format::ReaderRecord* r) {
    uint64_t op = load_op(r);
    ReaderState st = format::reader_op_state(op);
    if (format::reader_op_slot(op) != slot_index || st == ReaderState::idle || guess128(&r->ident).lo == 0) {
      return true;
    }
    Word128 id = load128(&r->ident);
    out.push_back(ReaderView{uint32_t(i), reader_owner(r, id), !reader_dead(id), st,
                             __atomic_load_n(&r->acquired_at, __ATOMIC_RELAXED)});
    return true;
  });
  return out;
}

}  // namespace locktable::detail

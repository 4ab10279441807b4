#include "history_ring.h"

#include <algorithm>

#include "liveness.h"

namespace locktable::detail {

namespace {

bool segment_free(const Word128& id) { return id.lo == 0 && aux_word(id) == 0; }

// A segment whose owner is gone: the reboot reset marked it, or the thread no
// longer exists with the recorded start time.
bool owner_dead(const Word128& id) {
  if (tid_word(id) & format::kOwnerDied) return true;
  return thread_liveness(pid_word(id) & format::kPidMask, tid_word(id) & format::kTidMask, aux_word(id)) ==
         Liveness::dead;
}

// The TableFile ids of this process's open HistoryRings. A thread's
// SegmentRef of an id no longer here is stale: the open that it was claimed
// through freed it, and the mapping may be gone.
std::mutex open_rings_mu;
std::vector<uint64_t> open_rings;

bool ring_open(uint64_t id) {
  std::lock_guard<std::mutex> g(open_rings_mu);
  return std::find(open_rings.begin(), open_rings.end(), id) != open_rings.end();
}

format::SegmentHeader* segment_of(format::RingEntry* base, uint32_t units, uint32_t k) {
  return reinterpret_cast<format::SegmentHeader*>(base + uint64_t{k} * units);
}

}  // namespace

HistoryRing::HistoryRing(TableFile& file)
    : header_(file.header()),
      base_(file.ring()),
      table_id_(file.id()),
      segments_(format::ring_segments(file.header()->ring_entries)),
      units_(format::segment_units(file.header()->ring_entries)) {
  std::lock_guard<std::mutex> g(open_rings_mu);
  open_rings.push_back(table_id_);
}

HistoryRing::~HistoryRing() {
  std::lock_guard<std::mutex> g(open_rings_mu);
  open_rings.erase(std::find(open_rings.begin(), open_rings.end(), table_id_));
}

RingRead ring_read(const format::RingEntry* entries, uint32_t capacity, uint64_t i, format::RingEntry* out) {
  const format::RingEntry* e = &entries[i % capacity];
  const auto* words = reinterpret_cast<const uint64_t*>(e);
  auto* copy = reinterpret_cast<uint64_t*>(out);
  const uint64_t s1 = __atomic_load_n(&words[0], __ATOMIC_ACQUIRE);
  if (s1 != 2 * i + 2) return RingRead::overwritten;
  copy[0] = s1;
  for (int w = 1; w < 8; ++w) copy[w] = __atomic_load_n(&words[w], __ATOMIC_RELAXED);
  std::atomic_thread_fence(std::memory_order_acquire);
  return __atomic_load_n(&words[0], __ATOMIC_RELAXED) == s1 ? RingRead::complete : RingRead::overwritten;
}

SegmentRef* HistoryRing::add_ref(ThreadSelf& me, uint32_t k, uint64_t head) {
  SegmentRef& ref = me.segments[me.segment_count++];
  ref = SegmentRef{table_id_, segment(k), const_cast<format::RingEntry*>(entries(k)), head, capacity(),
                   uint32_t(head % capacity())};
  return &ref;
}

SegmentRef* HistoryRing::claim_segment(ThreadSelf& me) {
  // Forget the refs of tables closed since (their opens freed the segments).
  for (uint32_t i = 0; i < me.segment_count;) {
    if (ring_open(me.segments[i].table)) {
      ++i;
    } else {
      me.segments[i] = me.segments[--me.segment_count];
    }
  }
  // Refs full (a thread appending in more open tables than kSegmentRefs): the
  // last ref is forgotten, not its segment, which stays claimed by this
  // thread in its table, and is found again by the scan below on the
  // thread's next event there. Ref 0, the one the inline paths look at,
  // stays.
  if (me.segment_count == kSegmentRefs) --me.segment_count;
  // A segment this thread claimed before through this open, whose ref it
  // forgot: its appends go on at its head (no other thread appends there).
  {
    std::lock_guard<std::mutex> g(claims_mu_);
    for (const auto& [h, claimed] : claims_) {
      const bool mine = tid_word(claimed) == me.tid && pid_word(claimed) == me.pid && aux_word(claimed) == me.start;
      if (!mine || load128(&h->ident) != claimed) continue;  // another thread's, or freed since
      const auto k = uint32_t((reinterpret_cast<format::RingEntry*>(h) - base_) / units_);
      return add_ref(me, k, std::atomic_ref<uint64_t>(h->head).load(std::memory_order_acquire));
    }
  }
  // A free segment first, the one with the fewest events left to drain (the
  // drainers' hint: a process that ends before any drain leaves its events in
  // a free segment, which a claimer would lap); else one whose owner is dead
  // (its events stay for the drainers: every entry names its writer).
  for (int pass = 0; pass < 2; ++pass) {
    const uint32_t best = pass == 0 ? least_undrained_free_segment() : 0;
    for (uint32_t n = 0; n < segments_; ++n) {
      const uint32_t k = (best + n) % segments_;
      format::SegmentHeader* h = segment(k);
      Word128 id = guess128(&h->ident);
      if (pass == 0 ? !segment_free(id) : (segment_free(id) || !owner_dead(load128(&h->ident)))) continue;
      if (pass == 1) id = load128(&h->ident);
      Word128 mine = make_word(me.tid, me.pid, me.start, generation(id) + 1);
      if (!cas128(&h->ident, id, mine)) continue;
      {
        std::lock_guard<std::mutex> g(claims_mu_);
        claims_.emplace_back(h, mine);
      }
      // The claim before may have events still to drain: keep its start and name.
      const uint64_t head = std::atomic_ref<uint64_t>(h->head).load(std::memory_order_acquire);
      std::atomic_ref<uint64_t>(h->prev_base).store(h->base, std::memory_order_relaxed);
      std::memcpy(h->prev_comm, h->comm, sizeof h->prev_comm);
      std::atomic_ref<uint64_t>(h->base).store(head, std::memory_order_release);
      std::memcpy(h->comm, me.comm, sizeof h->comm);
      return add_ref(me, k, head);
    }
  }
  return nullptr;
}

uint32_t HistoryRing::least_undrained_free_segment() const {
  uint32_t best = 0;
  uint64_t least = UINT64_MAX;
  for (uint32_t k = 0; k < segments_ && least != 0; ++k) {
    const format::SegmentHeader* h = segment(k);
    if (!segment_free(guess128(&h->ident))) continue;
    const uint64_t head = std::atomic_ref<const uint64_t>(h->head).load(std::memory_order_acquire);
    const uint64_t drained = std::atomic_ref<const uint64_t>(h->drained_hint).load(std::memory_order_relaxed);
    const uint64_t left = head > drained ? head - drained : 0;
    if (left < least) {
      least = left;
      best = k;
    }
  }
  return best;
}

std::string HistoryRing::writer_name(uint32_t k, uint64_t i) const {
  const format::SegmentHeader* h = segment(k);
  const char* comm = i >= std::atomic_ref<const uint64_t>(h->base).load(std::memory_order_acquire) ? h->comm
                                                                                                   : h->prev_comm;
  return std::string(comm, strnlen(comm, sizeof h->comm));
}

void HistoryRing::free_if_drained(uint32_t k, uint64_t drained) {
  if (head(k) != drained) return;
  format::SegmentHeader* h = segment(k);
  Word128 id = load128(&h->ident);
  if (segment_free(id) || !owner_dead(id)) return;
  // A dead owner appends nothing more: the head stays where the drain ended.
  (void)cas128(&h->ident, id, make_word(0, 0, 0, generation(id) + 1));
}

void HistoryRing::release_claims() {
  std::lock_guard<std::mutex> g(claims_mu_);
  for (auto& [h, claimed] : claims_) {
    // From the exact record claimed: a segment freed since (its thread died
    // and a drainer freed it) and claimed again by another thread is not ours.
    Word128 expected = claimed;
    (void)cas128(&h->ident, expected, make_word(0, 0, 0, generation(claimed) + 1));
  }
  claims_.clear();
}

void reset_segments_after_reboot(TableFile& file) {
  const uint32_t ring_entries = file.header()->ring_entries;
  const uint32_t units = format::segment_units(ring_entries);
  for (uint32_t k = 0; k < format::ring_segments(ring_entries); ++k) {
    format::SegmentHeader* h = segment_of(file.ring(), units, k);
    Word128 id = load128(&h->ident);
    while (!segment_free(id) && !(tid_word(id) & format::kOwnerDied) &&
           !cas128(&h->ident, id, make_word(tid_word(id) | format::kOwnerDied, pid_word(id), aux_word(id), generation(id)))) {
    }
  }
}

}  // namespace locktable::detail

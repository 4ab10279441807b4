#include "locktable_json.h"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>

#include "locktable/names.h"

namespace locktable::json {

using nlohmann::json;

namespace {

// Text that is not UTF-8 as a JSON string, with U+FFFD for each bad byte,
// as dump()'s replace handler writes it (dump() would throw on it).
json replaced_text(const std::string& s) {
  return json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace));
}

// Text from the system (a thread's comm) as a JSON string: as is when it is
// UTF-8, otherwise replaced_text().
json text(const std::string& s) { return is_utf8(s) ? json(s) : replaced_text(s); }

// A lock name under "name"; one that is not UTF-8 is there as
// replaced_text() and also under "name_hex", its exact bytes in hexadecimal.
void put_name(json& j, const std::string& name) {
  if (is_utf8(name)) {
    j["name"] = name;
    return;
  }
  j["name"] = replaced_text(name);
  std::string hex;
  for (unsigned char c : name) hex += fmt::format("{:02x}", c);
  j["name_hex"] = hex;
}

json owner(const Owner& o) { return json{{"pid", o.pid}, {"tid", o.tid}, {"start_time", o.start_time}}; }

}  // namespace

std::string rfc3339(uint64_t ns, int digits) {
  time_t secs = time_t(ns / 1'000'000'000u);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::string out = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                                tm.tm_hour, tm.tm_min, tm.tm_sec);
  digits = std::clamp(digits, 0, 9);
  if (digits > 0) out += "." + fmt::format("{:09}", ns % 1'000'000'000u).substr(0, size_t(digits));
  return out + "Z";
}

int time_digits(uint64_t resolution_ns) {
  int digits = 9;  // 9 - floor(log10(resolution)): 1 ns -> 9, 1 us -> 6, 4 ms -> 3
  for (uint64_t r = std::max<uint64_t>(resolution_ns, 1); r >= 10 && digits > 0; r /= 10) --digits;
  return digits;
}

const char* state_name(LockState s) {
  switch (s) {
    case LockState::free: return "free";
    case LockState::held: return "held";
    case LockState::shared: return "held";
    case LockState::dead_owner: return "dead-owner";
  }
  return "?";
}

const char* mode_name(Mode m) { return m == Mode::shared ? "shared" : "exclusive"; }

const char* level_name(HistoryLevel level) {
  switch (level) {
    case HistoryLevel::off: return "off";
    case HistoryLevel::ring: return "ring";
    case HistoryLevel::persisted: return "persisted";
  }
  return "?";
}

json holder(const HolderInfo& h) {
  json j = owner(h.owner);
  j["comm"] = text(h.comm);
  j["alive"] = h.alive;
  j["held_for_ms"] = h.held_for_ms ? json(*h.held_for_ms) : json(nullptr);
  j["token"] = h.token;
  return j;
}

json waiter(const WaiterInfo& w) {
  json j = owner(w.owner);
  j["comm"] = text(w.comm);
  j["mode"] = mode_name(w.mode);
  j["waiting_ms"] = w.waiting_ms;
  return j;
}

json counters(const LockCounters& c) {
  return json{{"exclusive_acquisitions", c.exclusive_acquisitions},
              {"shared_acquisitions", c.shared_acquisitions},
              {"contended", c.contended},
              {"timeouts", c.timeouts},
              {"abandoned", c.abandoned},
              {"wait_total_ns", c.wait_total_ns},
              {"wait_max_ns", c.wait_max_ns}};
}

json lock_info(const LockInfo& l) {
  // Built in place (operator[] and moves): an initializer list copies every
  // element, and `ls --json` builds one of these per lock of a million.
  json j = json::object();
  put_name(j, l.name);
  j["slot"] = l.slot;
  j["state"] = state_name(l.state);
  j["mode"] = l.state == LockState::free ? json(nullptr) : json(mode_name(l.mode));
  j["owner"] = l.holders.empty() ? json(nullptr) : holder(l.holders[0]);
  json& holders = j["holders"] = json::array();
  for (const HolderInfo& h : l.holders) holders.push_back(holder(h));
  j["held_for_ms"] = l.holders.empty() || !l.holders[0].held_for_ms ? json(nullptr) : json(*l.holders[0].held_for_ms);
  json& waiters = j["waiters"] = json::array();
  for (const WaiterInfo& w : l.waiting) waiters.push_back(waiter(w));
  j["sleepers"] = l.waiters;
  j["abandoned"] = l.abandoned;
  j["counters"] = counters(l.counters);
  return j;
}

json event(const Event& e, int time_digits) {
  json j{{"seq", e.seq},
         {"time", rfc3339(e.time_ns, time_digits)},
         {"event", event_kind_name(e.kind)},
         {"name", nullptr},
         {"slot", e.name.empty() ? json(nullptr) : json(e.slot)},
         {"pid", e.pid},
         {"tid", e.tid},
         {"comm", text(e.comm)}};
  if (!e.name.empty()) put_name(j, e.name);
  switch (e.kind) {
    case EventKind::acquired:
      j["mode"] = mode_name(e.mode);
      j["abandoned"] = e.abandoned;
      j["wait_ns"] = e.wait_ns;
      j["token"] = e.token;
      break;
    case EventKind::released:
      j["mode"] = mode_name(e.mode);
      j["hold_ns"] = e.hold_ns;
      j["abandoned"] = e.abandoned;
      j["token"] = e.token;
      break;
    case EventKind::downgraded:
      j["mode"] = mode_name(Mode::shared);
      j["token"] = e.token;
      break;
    case EventKind::deadlock:
    case EventKind::timeout:
      j["mode"] = mode_name(e.mode);
      j["wait_ns"] = e.wait_ns;
      break;
    case EventKind::recovered:
      j["mode"] = mode_name(e.mode);
      j["dead_owner"] = owner(e.dead_owner);
      break;
    case EventKind::lost:
    case EventKind::reset:
      j["count"] = e.count;
      break;
    case EventKind::grown:
      j["capacity"] = e.count;
      break;
    default:
      break;
  }
  return j;
}

json stats(const TableStats& st) {
  return json{{"dir", st.dir},
              {"backend", st.backend},
              {"time_resolution_ns", st.time_resolution_ns},
              {"format_version", st.format_version},
              {"slots", {{"capacity", st.slot_capacity}, {"used", st.slots_used}, {"max", st.max_slots}}},
              {"readers", {{"capacity", st.reader_capacity}, {"used", st.readers_used}}},
              {"extents", st.extents},
              {"files", {{"table_bytes", st.table_file_bytes}, {"lmdb_bytes", st.lmdb_file_bytes}}},
              {"boot_id", st.boot_id},
              {"reboot_resets", st.reset_count},
              {"history",
               {{"level", level_name(st.history_level)},
                {"records", st.history_records},
                {"lost", st.history_lost},
                {"retention_count", st.retention_count},
                {"retention_age_s", st.retention_age_s}}},
              {"ring",
               {{"entries", st.ring_entries},
                {"segments", st.ring_segments},
                {"segments_in_use", st.ring_segments_in_use},
                {"appended", st.ring_appended},
                {"accounted", st.ring_accounted},
                {"undrained", st.ring_appended - st.ring_accounted}}},
              {"counters", counters(st.counters)}};
}

json recovery(const Recovery& r) {
  json j{{"name", nullptr},
         {"slot", r.slot},
         {"mode", mode_name(r.mode)},
         {"dead_owner", owner(r.dead_owner)},
         {"action", r.action}};
  put_name(j, r.name);
  return j;
}

}  // namespace locktable::json

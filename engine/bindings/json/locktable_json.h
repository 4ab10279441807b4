// The JSON forms of locktable's rows (nlohmann::json), one definition for
// every place that shows them: `locktable ls --json`, `stat --json`,
// `history --json`, and the Python module's dicts. A key changes here or
// nowhere.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "locktable/locktable.h"

namespace locktable::json {

// "2026-11-22T03:12:00.123456789Z"
// "2026-11-22T03:12:00.123Z": with `digits` decimals of the second (0..9).
std::string rfc3339(uint64_t ns_since_epoch, int digits = 9);
// The decimals a clock of this resolution supports: 3 for a few ms, 9 for 1 ns.
int time_digits(uint64_t resolution_ns);
const char* state_name(LockState s);  // "free", "held", "dead-owner"
const char* mode_name(Mode m);        // "exclusive", "shared"
const char* level_name(HistoryLevel level);  // "off", "ring", "persisted"

nlohmann::json holder(const HolderInfo& h);      // pid, tid, start_time, comm, alive, held_for_ms, token
nlohmann::json waiter(const WaiterInfo& w);      // pid, tid, start_time, comm, mode, waiting_ms
nlohmann::json lock_info(const LockInfo& l);     // one element of `ls --json`
nlohmann::json counters(const LockCounters& c);  // exclusive_acquisitions, shared_acquisitions, contended, timeouts, abandoned, waits
nlohmann::json event(const Event& e, int time_digits = 9);  // one line of `history --json`
nlohmann::json stats(const TableStats& st);      // `stat --json`
nlohmann::json recovery(const Recovery& r);      // one action of `recover --json`

}  // namespace locktable::json

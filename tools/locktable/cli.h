// Shared pieces of the locktable command-line tool: exit codes, opening a
// table, and output helpers (aligned tables, times). The JSON forms are in
// engine/bindings/json.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "locktable/locktable.h"
#include "locktable_json.h"

namespace cli {

// Exit codes (README "Exit codes"): the contract scripts rely on.
enum Exit : int {
  kOk = 0,
  kNotAcquired = 1,  // timeout / conflict; `check` found problems
  kUsage = 2,
  kNotFound = 3,
  kBusy = 4,
  kCorrupt = 5,
  kVersion = 6,
  kPermission = 7,
  kUnsupported = 8,
  kCapacity = 9,
  kFailure = 10,
};

int exit_code(const locktable::Status& s);

// Prints "locktable: <message>" on stderr and returns the exit code for it.
int fail(const locktable::Status& s);

// What every subcommand's DIR argument says in --help and the man pages.
inline constexpr const char* kLocationHelp =
    "Table location: a folder, a file:/// URL, or an etcd:// or etcds:// URL (locktable(1): TABLE LOCATIONS)";

// Opens DIR; create only for init and run.
locktable::Status open_table(const std::string& dir, bool create, std::unique_ptr<locktable::Table>* table,
                             const locktable::Options& base = {});

// "1.2s", "350ms", "3m20s"
std::string human_duration_ms(uint64_t ms);
// Parses "2026-11-22T03:12:00Z", "2026-11-22 03:12:00", "1h"/"30m"/"10s"/"2d" (ago), or epoch seconds.
bool parse_time(const std::string& text, uint64_t* ns_since_epoch);

// "PID/TID COMM" for text output: the thread name escaped as names are
// (escape_name), since any process names its own threads and a terminal
// must not take one for escape sequences or a line break.
std::string thread_label(uint32_t pid, uint32_t tid, std::string_view comm);

// Left-aligned columns, two spaces apart.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);


}  // namespace cli

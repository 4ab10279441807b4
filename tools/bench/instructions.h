// Instruction counts per acquire+release pair, from valgrind's callgrind:
// the same program run with N pairs and with 0 pairs, the difference divided
// by N. Unlike time, the count does not depend on what else the machine is
// doing, so it shows a hot-path change the timing noise would hide.
#pragma once

#include <optional>
#include <string>

namespace bench {

// The child side: set up `impl`, then do `pairs` lock+unlock pairs (shared
// ones when `shared`), and exit. Run under callgrind by count_instructions.
int run_pairs_child(const std::string& impl, long pairs, bool shared);

// Instructions per pair for `impl`, or nothing when valgrind is missing or
// the runs failed (*why says which).
std::optional<double> count_instructions(const std::string& self_exe, const std::string& impl, bool shared,
                                         long pairs, std::string* why);

}  // namespace bench

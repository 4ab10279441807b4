// A picture of contention: history events drawn as a timeline, one row per
// lock, written as SVG with cairo (timeline.cc).
#pragma once

#include <string>
#include <vector>

#include "locktable/locktable.h"

namespace cli {

// Draws `events` (oldest first) into an SVG file at `path`: a bar for each
// hold, coloured by process (shared holds side by side in lanes), waits as
// thin lines before their acquisition, abandoned takeovers and timeouts
// marked, a UTC time axis. Holds narrower than a pixel are added up per
// pixel column and drawn as one shaded column (dense stretches aggregated,
// not smeared). At most `max_locks` rows, the busiest. Errors, naming the
// file and the cause: permission_denied, not_found (no such folder),
// capacity (no space), io_error.
locktable::Status write_timeline_svg(const std::vector<locktable::Event>& events, const std::string& path,
                                     const std::string& title, size_t max_locks = 50);

}  // namespace cli

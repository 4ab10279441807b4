// history: drain the ring, then print events oldest first.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "cli.h"
#include "timeline.h"
#include "commands.h"

namespace cli {

using namespace locktable;

namespace {

volatile sig_atomic_t g_stop = 0;
void stop(int) { g_stop = 1; }


std::vector<std::string> all_event_kinds() {
  std::vector<std::string> kinds;
  for (int k = 1; event_kind_name(EventKind(k)) != std::string_view("unknown"); ++k) kinds.emplace_back(event_kind_name(EventKind(k)));
  return kinds;
}

std::string event_detail(const Event& e) {
  auto ms = [](uint64_t ns) { return human_duration_ms(ns / 1'000'000); };
  switch (e.kind) {
    case EventKind::acquired:
      return fmt::format("{}{}{}{}", locktable::json::mode_name(e.mode), e.wait_ns ? ", waited " + ms(e.wait_ns) : "",
                         e.token ? fmt::format(", token {}", e.token) : "", e.abandoned ? ", ABANDONED" : "");
    case EventKind::released:
      return fmt::format("{}, held {}{}", locktable::json::mode_name(e.mode), ms(e.hold_ns),
                         e.abandoned ? ", still abandoned (not marked consistent)" : "");
    case EventKind::timeout:
      return fmt::format("{}, gave up after {}", locktable::json::mode_name(e.mode), ms(e.wait_ns));
    case EventKind::deadlock:
      return fmt::format("{}, deadlock: gave up after {}", locktable::json::mode_name(e.mode), ms(e.wait_ns));
    case EventKind::downgraded:
      return fmt::format("exclusive to shared, token {}", e.token);
    case EventKind::recovered:
      return fmt::format("from dead pid {} tid {}", e.dead_owner.pid, e.dead_owner.tid);
    case EventKind::lost:
      return fmt::format("{} events lost", e.count);
    case EventKind::grown:
      return fmt::format("capacity {} slots", e.count);
    case EventKind::reset:
      return fmt::format("reboot: {} locks freed", e.count);
    default:
      return "";
  }
}

constexpr std::chrono::milliseconds kFollowInterval{200};

// An event as it reads, its seq aside.
std::string identity(const Event& e) {
  nlohmann::json j = locktable::json::event(e, 9);
  j.erase("seq");
  return j.dump();
}

// --follow at level ring. Nothing is drained there, and an event's seq is its
// place in what the ring holds now, which moves as the ring laps: polling
// after the last seq printed stopped printing once the ring was full. Each
// poll reads what the ring holds and prints the events it did not hold at
// the poll before (a multiset: events that read the same are counted), after
// one `lost` event for those that came and went between two polls. The
// first poll prints its newest `limit` events (0: all).
Status follow_ring(Table& t, const HistoryQuery& q, size_t limit,
                   const std::function<void(const std::vector<Event>&, bool first)>& print) {
  std::map<std::string, size_t> held;  // identity -> how many the last poll read
  uint64_t lost = 0;                   // the last poll's lost count
  for (bool first = true; first || !g_stop; first = false) {
    if (!first) std::this_thread::sleep_for(kFollowInterval);
    std::vector<Event> now, fresh;
    if (Status s = t.history(q, &now); !s.ok()) return s;
    std::map<std::string, size_t> counts;
    std::optional<Event> gap;
    uint64_t now_lost = 0;
    for (Event& e : now) {
      if (e.kind == EventKind::lost) {
        now_lost += e.count;
        if (!gap) gap = e;
        continue;
      }
      const std::string id = identity(e);
      if (++counts[id] > held[id]) fresh.push_back(std::move(e));
    }
    // Of the events that left the ring since the last poll (its lost count
    // grew by that many), those the last poll read were printed already.
    uint64_t gone_seen = 0;
    for (const auto& [id, n] : held) {
      auto it = counts.find(id);
      gone_seen += n - std::min(n, it == counts.end() ? size_t{0} : it->second);
    }
    if (gap && now_lost > lost + gone_seen) {
      gap->count = now_lost - lost - gone_seen;
      fresh.insert(fresh.begin(), *gap);
    }
    if (first && limit > 0 && fresh.size() > limit) fresh.erase(fresh.begin(), fresh.end() - ptrdiff_t(limit));
    print(fresh, first);
    held = std::move(counts);
    lost = now_lost;
  }
  return Status::OK();
}

}  // namespace

void register_history(CLI::App& app, int* rc) {
  struct Args {
    std::string dir, name, kind, since, svg;
    size_t limit = 0;
    bool json = false, follow = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("history", "Print lock events, oldest first (drains the ring first)");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_option("--name", a->name, "Only events of this lock");
  cmd->add_option("--event", a->kind, "Only events of this kind")
      ->check(CLI::IsMember(all_event_kinds()));
  cmd->add_option("--since", a->since, "Only events at or after TIME (RFC 3339, epoch seconds, or 30s/10m/1h/2d ago)");
  cmd->add_option("--limit", a->limit, "Keep only the newest N events")
      ->check(CLI::Validator(
          [](const std::string& v) {
            // Digits only: CLI11 would read "-1" into a size_t as its largest value.
            const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
            return digits ? std::string() : std::string("must be a whole number, 0 or more");
          },
          "N"));
  cmd->add_flag("--json", a->json, "JSON Lines: one object per event");
  cmd->add_flag("--follow,-f", a->follow, "Keep printing new events until interrupted");
  cmd->add_option("--svg", a->svg, "Draw the events as a timeline picture into FILE (SVG) instead of printing them")
      ->excludes("--follow");
  cmd->callback([a, rc] {
    HistoryQuery q;
    if (!a->name.empty()) q.name = a->name;
    if (!a->kind.empty()) q.kind = event_kind_from_name(a->kind);
    if (!a->since.empty() && !parse_time(a->since, &q.since_ns)) {
      fmt::print(stderr, "locktable: --since: cannot read time '{}'\n", a->since);
      *rc = kUsage;
      return;
    }
    q.limit = a->limit;
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    // Times with the decimals the table's clock supports.
    TableStats st;
    const int digits = t->stats(&st).ok() ? locktable::json::time_digits(st.time_resolution_ns) : 9;
    auto row = [digits](const Event& e) {
      return std::vector<std::string>{std::to_string(e.seq), locktable::json::rfc3339(e.time_ns, digits),
                                      event_kind_name(e.kind),
                                      e.name.empty() ? "-" : escape_name(e.name),
                                      thread_label(e.pid, e.tid, e.comm), event_detail(e)};
    };
    const std::vector<std::string> header{"SEQ", "TIME (UTC)", "EVENT", "NAME", "PID/TID COMM", "DETAIL"};
    auto print = [&](const std::vector<Event>& events, bool aligned) {
      if (a->json) {
        for (const Event& e : events) fmt::print("{}\n", locktable::json::event(e, digits).dump());
      } else if (aligned) {
        std::vector<std::vector<std::string>> rows;
        for (const Event& e : events) rows.push_back(row(e));
        print_table(header, rows);
      } else {
        for (const Event& e : events) fmt::print("{}\n", fmt::join(row(e), "  "));
      }
      std::fflush(stdout);
    };
    if (a->follow && st.history_level == HistoryLevel::ring) {
      signal(SIGINT, stop);
      signal(SIGTERM, stop);
      q.limit = 0;
      if (s = follow_ring(*t, q, a->limit, print); !s.ok()) *rc = fail(s);
      return;
    }
    std::vector<Event> events;
    if (s = t->history(q, &events); !s.ok()) {
      *rc = fail(s);
      return;
    }
    if (!a->svg.empty()) {
      const std::string title =
          events.empty() ? fmt::format("{}: no events", a->dir)
                         : fmt::format("{}: {} events, {} to {}", a->dir, events.size(),
                                       locktable::json::rfc3339(events.front().time_ns, digits),
                                       locktable::json::rfc3339(events.back().time_ns, digits));
      if (s = write_timeline_svg(events, a->svg, title); !s.ok()) *rc = fail(s);
      return;
    }
    print(events, true);
    if (!a->follow) return;
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    q.limit = 0;
    uint64_t last = events.empty() ? 0 : events.back().seq;
    while (!g_stop) {
      std::this_thread::sleep_for(kFollowInterval);
      q.after_seq = last;
      if (s = t->history(q, &events); !s.ok()) {
        *rc = fail(s);
        return;
      }
      print(events, false);
      if (!events.empty()) last = events.back().seq;
    }
  });
}

}  // namespace cli

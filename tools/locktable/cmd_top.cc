// top: a live full-screen view of a table (ncurses), refreshed every second:
// the locks sorted by waiters, then by how long they have been held, with
// their holders, acquisitions per second, timeouts and abandoned takeovers.
// `q` quits; it redraws to the terminal's size. Without a terminal (or with
// --once) it prints one plain snapshot and exits.
//
// A live refresh reads only what one screen shows: the busy locks
// (ListScope::busy: on a mapped table a scan of the slots) and, to fill the
// screen, the first locks by name. A table of a million names costs a slot
// scan per refresh, not a million descriptions; only the start reads every
// lock once, for the counters that "(+N)" counts from.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include <fmt/format.h>

#include "cli.h"
#include "commands.h"

// After the locktable headers: curses defines OK (Status::OK) and, without
// NCURSES_NOMACROS, move() and erase() as macros.
#define NCURSES_NOMACROS 1
#include <curses.h>
#undef OK

namespace cli {

using namespace locktable;

namespace {

struct Snapshot {
  std::vector<LockInfo> locks;
  std::chrono::steady_clock::time_point at;
  uint64_t total = 0;  // named locks in the table (more than `locks` holds in a live view)
};

// Each slot's counters when top started, for "(+N) since then". A slot whose
// incarnation differs holds a name created since: all its counts are new.
struct Baseline {
  struct Start {
    uint32_t incarnation = 0;
    uint64_t timeouts = 0, abandoned = 0;
  };
  std::vector<Start> by_slot;
  Start of(const LockInfo& l) const {
    if (l.slot < by_slot.size() && by_slot[l.slot].incarnation == l.incarnation) return by_slot[l.slot];
    return Start{};
  }
};

struct Line {
  std::string name, state, holders, held, waiters, rate, timeouts, abandoned;
};

uint64_t held_ms(const LockInfo& l) {
  return l.holders.empty() || !l.holders[0].held_for_ms ? 0 : *l.holders[0].held_for_ms;
}

uint32_t waiting(const LockInfo& l) { return std::max<uint32_t>(l.waiters, uint32_t(l.waiting.size())); }

// Top's order: more waiters first, then held longer.
bool busier(const LockInfo& a, const LockInfo& b) {
  if (waiting(a) != waiting(b)) return waiting(a) > waiting(b);
  return held_ms(a) > held_ms(b);
}

// Acquisitions in either mode.
uint64_t acquisitions(const LockCounters& c) { return c.exclusive_acquisitions + c.shared_acquisitions; }

// The rows of `now`, busiest first; rates against `before` (same names),
// timeouts and abandonments since `first` (top's start) in brackets.
std::vector<Line> lines(const Snapshot& now, const Snapshot* before, const Baseline* first = nullptr) {
  std::vector<const LockInfo*> order;
  for (const LockInfo& l : now.locks) order.push_back(&l);
  std::stable_sort(order.begin(), order.end(), [](const LockInfo* a, const LockInfo* b) { return busier(*a, *b); });
  std::map<std::string, uint64_t> previous;
  double seconds = 0;
  if (before != nullptr) {
    for (const LockInfo& l : before->locks) previous[l.name] = acquisitions(l.counters);
    seconds = std::chrono::duration<double>(now.at - before->at).count();
  }
  std::vector<Line> out;
  for (const LockInfo* l : order) {
    Line line;
    line.name = escape_name(l->name);
    line.state = locktable::json::state_name(l->state);
    if (l->state != LockState::free) line.state += std::string(" ") + locktable::json::mode_name(l->mode);
    if (l->abandoned) line.state += " (abandoned)";
    std::vector<std::string> who;
    for (const HolderInfo& h : l->holders) {
      who.push_back(thread_label(h.owner.pid, h.owner.tid, h.comm) + (h.alive ? "" : " (dead)"));
    }
    line.holders = who.empty() ? "-" : fmt::format("{}", fmt::join(who, ", "));
    line.held = l->holders.empty() ? "-" : human_duration_ms(held_ms(*l));
    line.waiters = std::to_string(waiting(*l));
    auto it = previous.find(l->name);
    line.rate = it == previous.end() || seconds <= 0
                    ? "-"
                    : fmt::format("{:.0f}", double(acquisitions(l->counters) - std::min(it->second, acquisitions(l->counters))) / seconds);
    line.timeouts = std::to_string(l->counters.timeouts);
    line.abandoned = std::to_string(l->counters.abandoned);
    if (first != nullptr) {
      const Baseline::Start base = first->of(*l);
      line.timeouts += fmt::format(" (+{})", l->counters.timeouts - std::min(base.timeouts, l->counters.timeouts));
      line.abandoned += fmt::format(" (+{})", l->counters.abandoned - std::min(base.abandoned, l->counters.abandoned));
    }
    out.push_back(std::move(line));
  }
  return out;
}

const std::vector<std::string> kHeader{"NAME", "STATE", "HOLDERS (PID/TID COMM)", "HELD", "WAIT", "ACQ/S", "TIMEOUTS",
                                       "ABANDONED"};

std::vector<std::string> cells(const Line& l) {
  return {l.name, l.state, l.holders, l.held, l.waiters, l.rate, l.timeouts, l.abandoned};
}

Status take(Table& t, Snapshot* s) {
  s->locks.clear();
  s->at = std::chrono::steady_clock::now();
  Status st = t.list(&s->locks);
  s->total = s->locks.size();
  return st;
}

// What a screen of `rows` locks shows: every busy lock, then the first by
// name that are not busy, up to `rows`.
Status take_screen(Table& t, size_t rows, Snapshot* s) {
  s->locks.clear();
  s->at = std::chrono::steady_clock::now();
  if (Status st = t.list(&s->locks, ListScope::busy); !st.ok()) return st;
  std::set<std::string> busy;
  for (const LockInfo& l : s->locks) busy.insert(l.name);
  if (s->locks.size() < rows) {
    bool enough = false;
    Status st = t.list([&](const LockInfo& l) {
      if (busy.count(l.name) == 0) s->locks.push_back(l);
      if (s->locks.size() < rows) return Status::OK();
      enough = true;
      return Status(Code::busy, "the screen is full");
    });
    if (!enough && !st.ok()) return st;
  }
  TableStats stats;
  if (Status st = t.stats(&stats); !st.ok()) return st;
  s->total = std::max<uint64_t>(stats.slots_used, s->locks.size());
  return Status::OK();
}

Baseline baseline_of(const Snapshot& s) {
  Baseline b;
  for (const LockInfo& l : s.locks) {
    if (l.slot >= b.by_slot.size()) b.by_slot.resize(size_t(l.slot) + 1);
    b.by_slot[l.slot] = Baseline::Start{l.incarnation, l.counters.timeouts, l.counters.abandoned};
  }
  return b;
}

std::string clock_text() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&now));
  return std::string(buf) + "Z";
}

// One screen: a title line, the column header, as many locks as fit, each
// column as wide as its widest cell but the holders', which gets what is left.
void draw(const std::string& dir, const std::vector<Line>& rows, uint64_t total) {
  erase();
  const int width = COLS, height = LINES;
  uint64_t waiting_total = 0;
  for (const Line& r : rows) waiting_total += std::stoull(r.waiters);
  mvprintw(0, 0, "%.*s", width,
           fmt::format("locktable top  {} locks, {} waiting  {}  q quits  {}", total, waiting_total,
                       clock_text(), dir)
               .c_str());
  std::vector<size_t> w(kHeader.size());
  for (size_t c = 0; c < kHeader.size(); ++c) w[c] = kHeader[c].size();
  const int visible = std::max(0, height - 3);
  for (int i = 0; i < visible && i < int(rows.size()); ++i) {
    std::vector<std::string> cs = cells(rows[size_t(i)]);
    for (size_t c = 0; c < cs.size(); ++c) w[c] = std::max(w[c], cs[c].size());
  }
  size_t fixed = 0;
  for (size_t c = 0; c < w.size(); ++c) fixed += (c == 2 ? 0 : w[c]) + 2;
  w[2] = std::max<size_t>(8, size_t(std::max(0, width)) > fixed ? std::min(w[2], size_t(width) - fixed) : 8);
  auto row_text = [&](const std::vector<std::string>& cs) {
    std::string text;
    for (size_t c = 0; c < cs.size(); ++c) {
      std::string cell = cs[c].size() > w[c] ? cs[c].substr(0, w[c] - 1) + "~" : cs[c];
      text += fmt::format("{:<{}}  ", cell, w[c]);
    }
    return text;
  };
  attron(A_REVERSE);
  mvprintw(2, 0, "%-*.*s", width, width, row_text(kHeader).c_str());
  attroff(A_REVERSE);
  for (int i = 0; i < visible && i < int(rows.size()); ++i) {
    mvprintw(3 + i, 0, "%.*s", width, row_text(cells(rows[size_t(i)])).c_str());
  }
  const uint64_t shown = std::min<uint64_t>(uint64_t(visible), rows.size());
  if (total > shown && height > 1) {
    mvprintw(height - 1, 0, "%.*s", width, fmt::format("... {} more", total - shown).c_str());
  }
  refresh();
}

}  // namespace

void register_top(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    double interval = 1.0;
    bool once = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("top", "A live view of the locks: waiters, holders, acquisitions per second");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_option("--interval,-n", a->interval, "Seconds between refreshes")->check(CLI::Range(0.1, 3600.0));
  cmd->add_flag("--once", a->once, "Print one plain snapshot and exit (also without a terminal)");
  cmd->footer("Keys: q quits. Rows are sorted by waiters, then by how long the lock has been held; ACQ/S counts "
              "exclusive acquisitions per second since the last refresh; TIMEOUTS and ABANDONED are totals, with "
              "those since top started in brackets.");
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    Snapshot before, now;
    if (s = take(*t, &now); !s.ok()) {
      *rc = fail(s);
      return;
    }
    if (a->once || !::isatty(STDOUT_FILENO) || !::isatty(STDIN_FILENO)) {
      std::vector<std::vector<std::string>> rows;
      for (const Line& l : lines(now, nullptr)) rows.push_back(cells(l));
      print_table(kHeader, rows);
      return;
    }
    const Baseline first = baseline_of(now);
    initscr();
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    timeout(int(a->interval * 1000));
    bool have_before = false;
    // The first screen shows the full listing's busiest rows; later ones read one screen.
    auto screen_rows = [] { return size_t(std::max(1, LINES - 3)); };
    std::stable_sort(now.locks.begin(), now.locks.end(), busier);
    // A million rows need not stay in memory: keep one screen.
    now.locks = std::vector<LockInfo>(now.locks.begin(), now.locks.begin() + long(std::min(now.locks.size(), screen_rows())));
    std::vector<Line> rows = lines(now, nullptr, &first);
    for (;;) {
      if (have_before) rows = lines(now, &before, &first);
      draw(a->dir, rows, now.total);
      const int key = getch();  // waits at most the interval
      if (key == 'q' || key == 'Q') break;
      if (key == KEY_RESIZE) {
        continue;  // redrawn at the new size
      }
      before = std::move(now);
      have_before = true;
      if (s = take_screen(*t, screen_rows(), &now); !s.ok()) break;
    }
    endwin();
    if (!s.ok()) *rc = fail(s);
  });
}

}  // namespace cli

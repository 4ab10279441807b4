// ls, stat, check.
#include <fmt/format.h>

#include <cstdio>
#include <map>
#include <set>

#include "cli.h"
#include "commands.h"

namespace cli {

using namespace locktable;

namespace {

std::string thread_label(const Owner& o, const std::string& comm) { return cli::thread_label(o.pid, o.tid, comm); }

// `ls --waits`: every published wait as an edge waiter -> lock -> holders,
// then the cycles among them. The listing reads lock after lock, so a cycle
// printed here is what the listing saw; the engine confirms one before it
// breaks it.
void print_waits(const std::vector<LockInfo>& locks) {
  using Key = std::pair<uint32_t, uint32_t>;  // pid, tid
  struct Edge {
    const LockInfo* lock;
    Key to;
  };
  std::map<Key, std::vector<Edge>> out;
  std::map<Key, std::string> label;
  size_t waits = 0;
  for (const LockInfo& l : locks) {
    for (const WaiterInfo& w : l.waiting) {
      ++waits;
      const Key from{w.owner.pid, w.owner.tid};
      label[from] = thread_label(w.owner, w.comm);
      std::vector<std::string> held_by;
      for (const HolderInfo& h : l.holders) {
        const Key to{h.owner.pid, h.owner.tid};
        if (to == from) continue;
        label.emplace(to, thread_label(h.owner, h.comm));
        out[from].push_back(Edge{&l, to});
        held_by.push_back(thread_label(h.owner, h.comm) + (h.alive ? "" : " (dead)"));
      }
      fmt::print("{} waits {} for {} ({}), held by {}\n", label[from], human_duration_ms(w.waiting_ms),
                 escape_name(l.name), locktable::json::mode_name(w.mode),
                 held_by.empty() ? std::string("nobody (about to get it)") : fmt::format("{}", fmt::join(held_by, ", ")));
    }
  }
  if (waits == 0) {
    fmt::print("no thread waits\n");
    return;
  }
  // Cycles: a depth-first search; each back edge closes one.
  std::map<Key, int> color;  // 0 new, 1 on the path, 2 done
  std::vector<std::pair<Key, const LockInfo*>> path;
  std::set<std::set<Key>> printed;
  size_t cycles = 0;
  std::function<void(const Key&)> visit = [&](const Key& k) {
    color[k] = 1;
    for (const Edge& e : out[k]) {
      path.emplace_back(k, e.lock);
      if (color[e.to] == 1) {
        auto start = std::find_if(path.begin(), path.end(), [&](const auto& p) { return p.first == e.to; });
        std::set<Key> members;
        std::string text;
        for (auto it = start; it != path.end(); ++it) {
          members.insert(it->first);
          text += fmt::format("{} -[{}]-> ", label[it->first], escape_name(it->second->name));
        }
        if (printed.insert(members).second) {
          fmt::print("cycle: {}{}\n", text, label[e.to]);
          ++cycles;
        }
      } else if (color[e.to] == 0) {
        visit(e.to);
      }
      path.pop_back();
    }
    color[k] = 2;
  };
  for (const auto& [k, edges] : out) {
    if (color[k] == 0) visit(k);
  }
  if (cycles == 0) fmt::print("no cycle\n");
}

}  // namespace

void register_ls(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    bool json = false;
    bool waits = false;
    bool busy = false;
    std::string prefix;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("ls", "List every named lock: state, holders, waiters");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_flag("--json", a->json, "Print one JSON array, one lock per line (streamed)");
  cmd->add_flag("--busy", a->busy,
                "Only the locks held, abandoned or waited for (on a mapped table found from its slots: fast among "
                "millions of names)");
  CLI::Option* prefix = cmd->add_option("--prefix", a->prefix,
                                        "Only the names that begin with PREFIX (read as a range: fast among millions "
                                        "of names)");
  cmd->add_flag("--waits", a->waits, "Print the waits-for graph: who waits for which lock held by whom, and cycles")
      ->excludes("--json")
      ->excludes(prefix);  // a cycle may run through names outside the prefix
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    const ListScope scope = a->busy ? ListScope::busy : ListScope::all;
    if (a->json) {
      // Streamed: a table of a million names prints as it is read, in
      // constant memory. On an error midway the array stays unclosed (not
      // valid JSON) and the exit code says so.
      bool first = true;
      std::fputs("[", stdout);
      s = t->list(
          [&](const LockInfo& l) {
            const nlohmann::json j = locktable::json::lock_info(l);
            std::fputs(first ? "\n  " : ",\n  ", stdout);
            std::fputs(j.dump().c_str(), stdout);
            first = false;
            return Status::OK();
          },
          scope, a->prefix);
      if (!s.ok()) {
        std::fputs("\n", stdout);
        *rc = fail(s);
        return;
      }
      std::fputs(first ? "]\n" : "\n]\n", stdout);
      return;
    }
    std::vector<LockInfo> locks;
    if (s = t->list(&locks, scope, a->prefix); !s.ok()) {
      *rc = fail(s);
      return;
    }
    if (a->waits) {
      print_waits(locks);
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const LockInfo& l : locks) {
      std::string owner = "-", held = "-";
      if (!l.holders.empty()) {
        std::vector<std::string> parts;
        for (const HolderInfo& h : l.holders) {
          parts.push_back(thread_label(h.owner, h.comm) + (h.alive ? "" : " (dead)"));
        }
        owner = fmt::format("{}", fmt::join(parts, ", "));
        held = l.holders[0].held_for_ms ? human_duration_ms(*l.holders[0].held_for_ms) : "?";
      }
      std::string state = locktable::json::state_name(l.state);
      if (l.abandoned) state += " (abandoned)";
      rows.push_back({escape_name(l.name), std::to_string(l.slot), state,
                      l.state == LockState::free ? "-" : locktable::json::mode_name(l.mode), owner, held,
                      std::to_string(std::max<size_t>(l.waiters, l.waiting.size()))});
    }
    print_table({"NAME", "SLOT", "STATE", "MODE", "OWNER (PID/TID COMM)", "HELD FOR", "WAITERS"}, rows);
  });
}

void register_stat(CLI::App& app, int* rc) {
  struct Args {
    std::string dir;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("stat", "Capacity and use, file sizes, history and ring state, boot id");
  cmd->add_option("DIR", a->dir, kLocationHelp)->required();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(a->dir, false, &t);
    TableStats st;
    if (s.ok()) s = t->stats(&st);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    const char* level = locktable::json::level_name(st.history_level);
    const nlohmann::json j = locktable::json::stats(st);
    if (a->json) {
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("table            {}\n", st.dir);
    fmt::print("format version   {}\n", st.format_version);
    fmt::print("event times      resolution {} ns ({} decimals)\n", st.time_resolution_ns,
               locktable::json::time_digits(st.time_resolution_ns));
    if (st.backend != "local") {
      fmt::print("backend          {}\n", st.backend);
      fmt::print("names            {}\n", st.slots_used);
      fmt::print("history          {}: {} records, keep {} records / {} s\n", level, st.history_records,
                 st.retention_count, st.retention_age_s);
      return;
    }
    fmt::print("slots            {} used of {} (grows to {})\n", st.slots_used, st.slot_capacity, st.max_slots);
    fmt::print("reader records   {} used of {}\n", st.readers_used, st.reader_capacity);
    fmt::print("extents          {}\n", st.extents);
    fmt::print("files            table {} bytes, lmdb {} bytes\n", st.table_file_bytes, st.lmdb_file_bytes);
    fmt::print("boot id          {} ({} reboot resets)\n", st.boot_id, st.reset_count);
    fmt::print("history          {}: {} records, {} lost, keep {} records / {} s\n", level, st.history_records,
               st.history_lost, st.retention_count, st.retention_age_s);
    fmt::print("ring             {} entries in {} segments ({} in use), {} events appended, {} not yet drained\n",
               st.ring_entries, st.ring_segments, st.ring_segments_in_use, st.ring_appended,
               st.ring_appended - st.ring_accounted);
    const LockCounters& c = st.counters;
    fmt::print("acquisitions     {} exclusive, {} shared; {} waited, {} timed out, {} abandoned (every lock)\n",
               c.exclusive_acquisitions, c.shared_acquisitions, c.contended, c.timeouts, c.abandoned);
  });
}

void register_check(CLI::App& app, int* rc) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "check", "Verify the header, slots, reader records, name map and history against each other");
  cmd->add_option("DIR", *dir, kLocationHelp)->required();
  cmd->callback([dir, rc] {
    std::unique_ptr<Table> t;
    Status s = open_table(*dir, false, &t);
    std::vector<std::string> problems;
    if (s.ok()) s = t->check(&problems);
    if (!s.ok()) {
      *rc = fail(s);
      return;
    }
    for (const std::string& p : problems) fmt::print("{}\n", p);
    if (!problems.empty()) {
      *rc = kNotAcquired;
      return;
    }
    fmt::print("{}: consistent\n", *dir);
  });
}

}  // namespace cli

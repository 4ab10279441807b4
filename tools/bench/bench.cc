// locktable-bench: locktable against the locks its users would pick instead,
// measured side by side in one run and reported as ratios.
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include <fmt/format.h>

#include "etcd_mode.h"
#include "instructions.h"
#include "scale_probe.h"
#include "scenarios.h"

namespace {

using namespace bench;
using nlohmann::json;

json machine() {
  std::string cpu = "unknown";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return json{{"cpu", cpu},
              {"cores", sysconf(_SC_NPROCESSORS_ONLN)},
              {"kernel", std::string(u.sysname) + " " + u.release},
              {"compiler", std::string("gcc ") + __VERSION__}};
}

json to_json(const Result& r) {
  json j{{"scenario", r.scenario}, {"impl", r.impl}, {"runs", r.runs}};
  auto opt = [&](const char* k, const std::optional<double>& v) { j[k] = v ? json(*v) : json(nullptr); };
  if (r.scenario == "recovery") {
    opt("ms_median", r.ms_median);
    opt("ms_p99", r.ms_p99);
    opt("cpu_pct", r.cpu_pct);
    j["recovered"] = r.recovered;
  } else {
    opt("ns_per_op", r.ns_per_op);
  }
  opt("rss_mb", r.rss_mb);
  opt("pss_mb", r.pss_mb);
  opt("min", r.min);
  opt("max", r.max);
  if (!r.note.empty()) j["note"] = r.note;
  return j;
}

std::string fmt_ns(const std::optional<double>& v) {
  if (!v) return "-";
  if (*v >= 1e6) return fmt::format("{:.2f} ms", *v / 1e6);
  if (*v >= 1e4) return fmt::format("{:.1f} us", *v / 1e3);
  return fmt::format("{:.1f} ns", *v);
}

void print_table(const std::vector<Result>& results) {
  std::map<std::string, double> locktable_ns;  // scenario -> locktable's ns (for ratios)
  for (const Result& r : results) {
    if (r.impl == "locktable" && r.ns_per_op) locktable_ns[r.scenario] = *r.ns_per_op;
  }
  std::string scenario;
  for (const Result& r : results) {
    if (r.scenario != scenario) {
      scenario = r.scenario;
      fmt::print("\n{}\n", scenario);
    }
    if (r.scenario == "recovery") {
      if (!r.recovered) {
        fmt::print("  {:<20} {}\n", r.impl, r.note);
      } else {
        fmt::print("  {:<20} median {:>8.3f} ms   p99 {:>8.3f} ms   waiter cpu {:>5.2f}%   ({} trials)\n", r.impl,
                   *r.ms_median, *r.ms_p99, *r.cpu_pct, r.runs);
      }
      continue;
    }
    std::string ratio;
    auto it = locktable_ns.find(r.scenario);
    if (r.ns_per_op && it != locktable_ns.end() && r.impl != "locktable") {
      ratio = fmt::format("{:.2f}x locktable", *r.ns_per_op / it->second);
    }
    fmt::print("  {:<20} {:>10}  [{} .. {}]  {:<18} {}\n", r.impl, fmt_ns(r.ns_per_op), fmt_ns(r.min),
               fmt_ns(r.max), ratio, r.note);
  }
}

// The README's performance tables (Markdown): one row per scenario, one
// column per implementation, each cell the median and its ratio to
// locktable's (peer / locktable; below 1 the peer is faster).
void print_markdown(const std::vector<Result>& results) {
  auto cell = [](const Result& r, const Result* base) {
    if (!r.ns_per_op) return r.note.empty() ? std::string("-") : r.note;
    std::string v = fmt_ns(r.ns_per_op);
    if (base != nullptr && base != &r && base->ns_per_op) {
      v += fmt::format(" ({:.2f}x)", *r.ns_per_op / *base->ns_per_op);
    }
    return v;
  };
  auto table = [&](const std::vector<std::string>& scenarios, const std::vector<std::string>& impls) {
    std::vector<std::string> present;
    for (const std::string& i : impls) {
      for (const Result& r : results) {
        if (r.impl == i && std::find(scenarios.begin(), scenarios.end(), r.scenario) != scenarios.end()) {
          present.push_back(i);
          break;
        }
      }
    }
    if (present.empty()) return;
    fmt::print("\n| scenario | {} |\n|---|", fmt::join(present, " | "));
    for (size_t i = 0; i < present.size(); ++i) fmt::print("---|");
    fmt::print("\n");
    for (const std::string& sc : scenarios) {
      const Result* base = nullptr;
      for (const Result& r : results) {
        if (r.scenario == sc && r.impl == "locktable") base = &r;
      }
      bool any = false;
      std::string row = fmt::format("| {} |", sc);
      for (const std::string& i : present) {
        const Result* found = nullptr;
        for (const Result& r : results) {
          if (r.scenario == sc && r.impl == i) found = &r;
        }
        any |= found != nullptr;
        row += fmt::format(" {} |", found ? cell(*found, base) : std::string());
      }
      if (any) fmt::print("{}\n", row);
    }
  };
  std::vector<std::string> timed, shared, other;
  for (const Result& r : results) {
    auto add = [](std::vector<std::string>& v, const std::string& s) {
      if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
    };
    if (r.scenario == "recovery") continue;
    if (r.scenario.rfind("uncontended_shared", 0) == 0 || r.scenario.rfind("readers_", 0) == 0) {
      add(shared, r.scenario);
    } else if (r.scenario.rfind("lookup", 0) == 0 || r.scenario.rfind("growth", 0) == 0 ||
               r.scenario.rfind("scale", 0) == 0) {
      add(other, r.scenario);
    } else {
      add(timed, r.scenario);
    }
  }
  table(timed, {"locktable", "locktable_ring", "locktable_history", "pthread_robust", "pthread", "boost_interprocess",
                "ofd_lock", "flock", "cas_sleep_poll", "cas16_bare"});
  table(shared, {"locktable", "pthread_rwlock", "ofd_lock", "flock"});
  table(other, {"locktable", "pthread_robust", "cas16_bare", "flock"});
  bool header = false;
  for (const Result& r : results) {
    if (r.scenario != "recovery") continue;
    if (!header) fmt::print("\n| dead holder | median | p99 | waiter CPU |\n|---|---|---|---|\n");
    header = true;
    if (!r.recovered) {
      fmt::print("| {} | {} | | |\n", r.impl, r.note);
    } else {
      fmt::print("| {} | {:.2f} ms | {:.2f} ms | {:.2f}% |\n", r.impl, *r.ms_median, *r.ms_p99, *r.cpu_pct);
    }
  }
  for (const Result& r : results) {
    if (!r.note.empty() && r.ns_per_op && (r.scenario.rfind("scale", 0) == 0 || r.scenario.rfind("growth", 0) == 0)) {
      fmt::print("\n{} / {}: {}", r.scenario, r.impl, r.note);
    }
  }
  fmt::print("\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"locktable-bench: locktable against pthread robust mutexes, file locks and others, in one run"};
  bool quick = false, as_json = false;
  std::vector<std::string> only_scenarios, only_impls;
  app.add_flag("--quick", quick, "Shorter runs (under 2 minutes on 2 cores)");
  app.add_flag("--json", as_json, "Print one JSON object (machine, results)");
  bool as_markdown = false;
  app.add_flag("--markdown", as_markdown, "Print the results as the README's Markdown tables");
  app.add_option("--scenario", only_scenarios, "Run only these scenarios (prefix match)");
  app.add_option("--impl", only_impls, "Run only these implementations");
  bool instructions = false;
  long pairs = 100'000;
  std::string pairs_child;
  bool pairs_shared = false;
  app.add_flag("--instructions", instructions,
               "Print instructions per acquire+release pair (valgrind callgrind: N pairs minus 0 pairs)");
  app.add_option("--pairs", pairs, "Pairs per --instructions run")->check(CLI::NonNegativeNumber);
  app.add_option("--pairs-child", pairs_child, "(internal) do --pairs pairs of this implementation and exit")
      ->group("");
  app.add_flag("--pairs-shared", pairs_shared, "(internal) shared pairs")->group("");
  int runs = 0;
  double seconds = 0;
  app.add_option("--runs", runs, "Repetitions of each timed case (default 11; --quick 3)")->check(CLI::Range(1, 1000));
  app.add_option("--seconds", seconds, "Length of each timed run (default 0.3; --quick 0.25)")
      ->check(CLI::Range(0.01, 60.0));
  int scale_names = 0, scale_procs = 0;
  app.add_option("--scale-names", scale_names, "Names in the scale scenario (default 1,000,000; --quick 100,000)")
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--scale-procs", scale_procs, "Processes in the scale scenario (default 64)")->check(CLI::Range(1, 64));
  bool scale_probe = false;
  app.add_flag("--scale-probe", scale_probe,
               "Where the scale scenario's time goes: its pairs whole, with the next lock prefetched, and bare CASes");
  bool etcd = false;
  app.add_flag("--etcd", etcd, "The etcd backend against etcd's own Lock/Unlock, on an etcd it starts (needs etcd-server)");
  CLI11_PARSE(app, argc, argv);
  if (!pairs_child.empty()) return run_pairs_child(pairs_child, pairs, pairs_shared);
  if (scale_probe) {
    return run_scale_probe(scale_names > 0 ? scale_names : (quick ? 100'000 : 1'000'000), scale_procs > 0 ? scale_procs : 2,
                           runs > 0 ? runs : 5, seconds > 0 ? seconds : 0.5);
  }
  if (etcd) {
#ifdef LOCKTABLE_HAVE_ETCD
    return bench::run_etcd_mode(quick);
#else
    fmt::print(stderr, "locktable-bench: --etcd: this build has no etcd backend (install libcurl4-openssl-dev)\n");
    return 1;
#endif
  }

  Config cfg;
  if (quick) {
    cfg.quick = true;
    cfg.runs = 3;
    cfg.seconds = 0.25;
    cfg.recovery_trials = 20;
    cfg.recovery_wait_s = 0.1;
    cfg.growth_names = 100'000;
    cfg.scale_names = 100'000;
  }
  if (runs > 0) cfg.runs = runs;
  if (seconds > 0) cfg.seconds = seconds;
  if (scale_names > 0) cfg.scale_names = scale_names;
  if (scale_procs > 0) cfg.scale_procs = scale_procs;
  auto want_scenario = [&](const std::string& s) {
    if (only_scenarios.empty()) return true;
    for (const std::string& p : only_scenarios) {
      if (s.rfind(p, 0) == 0) return true;
    }
    return false;
  };
  std::set<std::string> impls;
  for (const std::string& n : impl_names()) impls.insert(n);
  auto want_impl = [&](const std::string& i) {
    return only_impls.empty() || std::find(only_impls.begin(), only_impls.end(), i) != only_impls.end();
  };
  const std::vector<std::string> mutexes{"locktable",          "locktable_ring", "locktable_history", "pthread_robust",
                                         "pthread",            "boost_interprocess", "ofd_lock",      "flock",
                                         "cas_sleep_poll",     "cas16_bare"};
  const std::vector<std::string> shared_impls{"locktable", "pthread_rwlock", "ofd_lock", "flock"};

  if (instructions) {
    const std::string self = "/proc/self/exe";
    char path[4096];
    ssize_t n = ::readlink(self.c_str(), path, sizeof path - 1);
    std::string exe = n > 0 ? std::string(path, size_t(n)) : std::string(argv[0]);
    json out = json::array();
    if (!as_json) {
      fmt::print("instructions per acquire+release pair ({} pairs, callgrind), net of the benchmark's own loop\n",
                 pairs);
    }
    for (bool shared : {false, true}) {
      std::string why;
      std::optional<double> loop = count_instructions(exe, "none", shared, pairs, &why);
      if (!loop) {
        fmt::print(stderr, "locktable-bench: --instructions: {}\n", why);
        return 1;
      }
      for (const std::string& i : shared ? shared_impls : mutexes) {
        if (!want_impl(i)) continue;
        std::optional<double> per = count_instructions(exe, i, shared, pairs, &why);
        if (!per && !as_json) fmt::print(stderr, "  {}: {}\n", i, why);
        if (!per) continue;
        double net = *per - *loop;
        out.push_back({{"impl", i}, {"mode", shared ? "shared" : "exclusive"}, {"instructions_per_pair", net}});
        if (!as_json) fmt::print("  {:<10} {:<20} {:>8.1f}\n", shared ? "shared" : "exclusive", i, net);
      }
    }
    if (as_json) fmt::print("{}\n", out.dump(2));
    return 0;
  }

  std::vector<Result> results;
  auto add = [&](Result r) {
    if (!as_json && !as_markdown) {
      fmt::print(stderr, "  {:<22} {:<20} done\n", r.scenario, r.impl);
    }
    results.push_back(std::move(r));
  };
  auto each = [&](const std::vector<std::string>& set, const std::string& scenario, auto fn) {
    if (!want_scenario(scenario)) return;
    for (const std::string& i : set) {
      if (want_impl(i)) add(fn(i));
    }
  };
  // Timed scenarios run all their implementations interleaved.
  auto together = [&](const std::vector<std::string>& set, const std::string& scenario, auto fn) {
    if (!want_scenario(scenario)) return;
    std::vector<std::string> chosen;
    for (const std::string& i : set) {
      if (want_impl(i)) chosen.push_back(i);
    }
    if (chosen.empty()) return;
    for (Result& r : fn(chosen)) add(std::move(r));
  };
  together(mutexes, "uncontended", [&](const auto& set) { return uncontended(set, cfg); });
  together(mutexes, "contended_2proc", [&](const auto& set) { return contended(set, cfg); });
  together(mutexes, "handoff_2proc", [&](const auto& set) { return handoff(set, cfg); });
  for (int n : {2, 4, 16}) {
    together(mutexes, "spread_" + std::to_string(n) + "proc", [&](const auto& set) { return spread(set, n, cfg); });
  }
  together(shared_impls, "uncontended_shared", [&](const auto& set) { return uncontended_shared(set, cfg); });
  for (int n : {2, 4}) {
    together(shared_impls, "readers_" + std::to_string(n) + "proc",
             [&](const auto& set) { return readers(set, n, cfg); });
  }
  together(std::vector<std::string>{"locktable", "pthread_robust", "cas16_bare"}, "scale",
           [&](const auto& set) { return scale(set, cfg); });
  if (want_scenario("lookup")) {
    for (const char* i : {"locktable", "flock"}) {
      if (!want_impl(i)) continue;
      for (Result& r : lookup(i, cfg)) add(std::move(r));
    }
  }
  const std::vector<std::string> recoverers{"locktable", "pthread_robust", "pthread", "boost_interprocess",
                                            "ofd_lock",  "flock",          "cas_sleep_poll"};
  each(recoverers, "recovery", [&](const std::string& i) { return recovery(i, cfg); });
  if (want_scenario("growth") && want_impl("locktable")) {
    for (Result& r : growth(cfg)) add(std::move(r));
  }

  if (as_markdown) {
    json m = machine();
    fmt::print("locktable-bench{}: {}, {} cores, {}, {}\n", quick ? " --quick" : "", m["cpu"].get<std::string>(),
               m["cores"].get<long>(), m["kernel"].get<std::string>(), m["compiler"].get<std::string>());
    print_markdown(results);
  } else if (as_json) {
    json out{{"machine", machine()}, {"quick", quick}, {"results", json::array()}};
    for (const Result& r : results) out["results"].push_back(to_json(r));
    fmt::print("{}\n", out.dump(2));
  } else {
    json m = machine();
    fmt::print("\nlocktable-bench{}: {}, {} cores, {}, {}\n", quick ? " --quick" : "", m["cpu"].get<std::string>(),
               m["cores"].get<long>(), m["kernel"].get<std::string>(), m["compiler"].get<std::string>());
    print_table(results);
  }
  return 0;
}

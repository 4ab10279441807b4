// locktable: inspect and use a locktable table from the shell.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string_view>

#include "cli.h"
#include "commands.h"
#include "locktable/version.h"

int main(int argc, char** argv) {
  // Under a file size limit (ulimit -f), a write past it is EFBIG, reported
  // as `capacity` naming the file, instead of SIGXFSZ killing the tool in
  // the middle of a change (run's command gets the default back).
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"locktable: crash-aware named interprocess locks (inspect, recover, run commands under a lock)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.set_version_flag("--version", std::string("locktable ") + LOCKTABLE_VERSION, "Print the version and exit");
  int rc = cli::kOk;
  cli::register_init(app, &rc);
  cli::register_ls(app, &rc);
  cli::register_run(app, &rc);
  cli::register_history(app, &rc);
  cli::register_recover(app, &rc);
  cli::register_check(app, &rc);
  cli::register_stat(app, &rc);
  cli::register_rm(app, &rc);
  cli::register_metrics(app, &rc);
  cli::register_top(app, &rc);
  cli::register_docs(app, &rc);
  // `run DIR NAME... -- CMD...`: what follows the first `--` is the command,
  // never parsed as options or names.
  int parsed = argc;
  if (argc > 1 && std::string_view(argv[1]) == "run") {
    for (int i = 2; i < argc; ++i) {
      if (std::string_view(argv[i]) != "--") continue;
      cli::run_command().assign(argv + i + 1, argv + argc);
      parsed = i;
      break;
    }
  }
  try {
    app.parse(parsed, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    bool known = false;
    if (argc > 1) {
      for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
        known |= sub->check_name(argv[1]);
      }
    }
    if (argc > 1 && argv[1][0] != '-' && !known) {
      std::fprintf(stderr, "locktable: unknown subcommand '%s'\nRun with --help for usage.\n", argv[1]);
    } else {
      std::fprintf(stderr, "locktable: %s\nRun with --help for usage.\n", e.what());
    }
    return cli::kUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "locktable: %s\n", e.what());
    return cli::kFailure;
  }
  return rc;
}

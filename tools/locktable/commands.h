// Each subcommand registers itself on the CLI11 app; its callback stores the
// process exit code in *rc.
#pragma once

#include <CLI/CLI.hpp>

namespace cli {

void register_init(CLI::App& app, int* rc);
void register_ls(CLI::App& app, int* rc);
void register_run(CLI::App& app, int* rc);
void register_metrics(CLI::App& app, int* rc);
void register_top(CLI::App& app, int* rc);
void register_docs(CLI::App& app, int* rc);  // hidden: the man pages and completion
// The command of `run`: the arguments after its `--` (main() splits them off
// before parsing, so that NAME can take several names).
std::vector<std::string>& run_command();
void register_history(CLI::App& app, int* rc);
void register_recover(CLI::App& app, int* rc);
void register_check(CLI::App& app, int* rc);
void register_stat(CLI::App& app, int* rc);
void register_rm(CLI::App& app, int* rc);

}  // namespace cli

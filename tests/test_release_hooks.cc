// A library built without -Dcrash_points holds no test hook: the tool built on
// it ignores LOCKTABLE_CRASH_AT at every crash point, and the library does not
// even contain the variable's name. The same run of the tool built on the
// test library (crash points in) is killed at a point it passes, so this test
// would notice hooks leaking into the plain build.
//
// Meson builds this test only together with a second, plain copy of the
// library and the tool (tests/meson.build), and passes their paths.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "crash_point.h"
#include "helpers.h"

using testing::TempDir;

namespace {

std::string env_path(const char* name) {
  const char* p = std::getenv(name);
  REQUIRE(p != nullptr);
  return p;
}

// Runs `tool run DIR NAME -- true` with LOCKTABLE_CRASH_AT=site; its exit
// status, or 128 + signal.
int run_with_crash_point(const std::string& tool, const std::string& dir, const char* site) {
  std::vector<std::string> args{tool, "run", dir, "name", "--", "true"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s{std::string("LOCKTABLE_CRASH_AT=") + site, "PATH=/usr/bin:/bin"};
  std::vector<char*> env;
  for (auto& e : env_s) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), env.data()) == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool file_contains(const std::string& path, const std::string& needle) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("release build: LOCKTABLE_CRASH_AT is ignored at every crash point") {
  const std::string plain = env_path("LOCKTABLE_PLAIN_CLI");
  for (const char* site : locktable::detail::kCrashSites) {
    TempDir tmp;  // a new table and a new name each time: creation's points are passed
    INFO("crash point " << site);
    CHECK(run_with_crash_point(plain, tmp.table(), site) == 0);
  }
}

TEST_CASE("release build: the library does not contain the hook, the test build's does") {
  CHECK(!file_contains(env_path("LOCKTABLE_PLAIN_LIB"), "LOCKTABLE_CRASH_AT"));
  CHECK(file_contains(env_path("LOCKTABLE_TEST_LIB"), "LOCKTABLE_CRASH_AT"));
}

TEST_CASE("release build: the same run of the test build's tool is killed at a crash point it passes") {
  const std::string hooked = env_path("LOCKTABLE_CLI");
  for (const char* site : {"create:before_link", "create:before_commit"}) {
    TempDir tmp;
    INFO("crash point " << site);
    CHECK(run_with_crash_point(hooked, tmp.table(), site) == 128 + SIGKILL);
  }
}

#include "backend_registry.h"

#include <fmt/format.h>

#include "ascii.h"
#include "percent_encoding.h"

#include "local/local_table.h"
#ifdef LOCKTABLE_HAVE_ETCD
#include "etcd/etcd_table.h"
#endif

namespace locktable::detail {

namespace {

using Opener = Status (*)(const std::string& location, const Options& options, std::shared_ptr<Backend>* out);

struct Scheme {
  std::string_view name;
  Opener open;
  std::string_view form;  // for messages: what a location of this scheme looks like
};

// file:///PATH or file://localhost/PATH (RFC 8089), the path percent-encoded
// as Python's Path.as_uri() and other URL makers write it ("%20" a space).
Status open_file_url(const std::string& location, const Options& options, std::shared_ptr<Backend>* out) {
  auto bad = [&](std::string_view why) {
    return Status(Code::invalid_argument,
                  fmt::format("{}: {} (expected file:///absolute/folder, the path %-encoded)", location, why));
  };
  std::string_view rest = std::string_view(location).substr(std::string_view("file://").size());
  if (rest.rfind("localhost/", 0) == 0) rest.remove_prefix(std::string_view("localhost").size());
  if (rest.empty() || rest[0] != '/') return bad("a file URL names an absolute path on this machine");
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("a file URL takes no query or fragment (write '?' as %3F and '#' as %23)");
  }
  std::string path;
  if (!percent_decode(rest, &path)) return bad("a '%' not followed by two hex digits");
  if (path.find('\0') != std::string::npos) return bad("a path cannot hold a NUL byte (%00)");
  return open_local_table(path, location, options, out);
}

// Every backend this build has, by scheme.
constexpr Scheme kSchemes[] = {
    {"file", open_file_url, "file:///absolute/folder"},
#ifdef LOCKTABLE_HAVE_ETCD
    {"etcd", open_etcd_table, "etcd://host:port[,host:port...]/prefix[?ttl=SECONDS]"},
    {"etcds", open_etcd_table, "etcds://host:port[,host:port...]/prefix[?cacert=PATH]"},
#endif
};

}  // namespace

std::string_view location_scheme(std::string_view location) {
  size_t sep = location.find("://");
  if (sep == std::string_view::npos || sep == 0) return {};
  std::string_view scheme = location.substr(0, sep);
  if (!ascii_alpha(static_cast<unsigned char>(scheme[0]))) return {};
  for (char c : scheme) {
    if (!ascii_alnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return {};
  }
  return scheme;
}

Status open_backend(const std::string& given, const Options& options, std::shared_ptr<Backend>* out) {
  std::string_view scheme = location_scheme(given);
  if (scheme.empty()) return open_local_table(given, given, options, out);
  // Schemes are case-insensitive (RFC 3986, 3.1): FILE:// and Etcd:// are
  // handed on as file:// and etcd://.
  std::string location = given;
  for (size_t i = 0; i < scheme.size(); ++i) {
    if (location[i] >= 'A' && location[i] <= 'Z') location[i] = char(location[i] - 'A' + 'a');
  }
  scheme = std::string_view(location).substr(0, scheme.size());
  std::string known;
  for (const Scheme& s : kSchemes) {
    if (s.name == scheme) return s.open(location, options, out);
    known += fmt::format("{}{}", known.empty() ? "" : ", ", s.form);
  }
  return Status(Code::unsupported,
                fmt::format("{}: unsupported table location scheme '{}' (this build opens a folder path, {})",
                            given, location_scheme(given), known));
}

}  // namespace locktable::detail

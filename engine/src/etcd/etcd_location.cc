#include "etcd_location.h"

#include <charconv>
#include <set>

#include <fmt/format.h>

#include "ascii.h"
#include "percent_encoding.h"

namespace locktable::detail {

namespace {

Status bad(const std::string& url, std::string_view why) {
  return Status(Code::invalid_argument, fmt::format("{}: {} (expected {})", url, why, kEtcdLocationForm));
}

// A host name or IPv4 address (letters, digits, '.', '-'), or an IPv6
// literal in brackets ("[::1]": hex digits, ':' and '.' inside), then ":port".
bool valid_host(std::string_view h) {
  if (h.empty()) return false;
  const bool bracketed = h.front() == '[';
  if (bracketed) {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  }
  for (char c : h) {
    const auto b = static_cast<unsigned char>(c);
    const bool ok = bracketed ? ascii_xdigit(b) || c == ':' || c == '.' : ascii_alnum(b) || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool valid_endpoint(std::string_view e) {
  const size_t colon = e.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == e.size() || !valid_host(e.substr(0, colon))) return false;
  unsigned port = 0;
  auto port_text = e.substr(colon + 1);
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  return ec == std::errc() && end == port_text.data() + port_text.size() && port > 0 && port < 65536;
}

}  // namespace

Status parse_etcd_location(const std::string& url, EtcdLocation* out) {
  EtcdLocation loc;
  std::string_view rest = url;
  if (rest.rfind("etcd://", 0) == 0) {
    rest.remove_prefix(std::string_view("etcd://").size());
  } else if (rest.rfind("etcds://", 0) == 0) {
    rest.remove_prefix(std::string_view("etcds://").size());
    loc.tls = true;
  } else {
    return bad(url, "not an etcd:// or etcds:// URL");
  }
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return bad(url, "no prefix");
  std::string_view hosts = rest.substr(0, slash);
  // The prefix is percent-encoded, as a URL's path is: "my%20app" is the
  // prefix `etcdctl lock "my app/N"` uses.
  std::string prefix;
  if (!percent_decode(rest.substr(slash + 1), &prefix)) return bad(url, "a '%' in the prefix not followed by two hex digits");
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (prefix.empty()) return bad(url, "an empty prefix");
  if (hosts.find('@') != std::string_view::npos) {
    return bad(url, "credentials do not go in the URL (user=NAME&password_file=PATH)");
  }
  while (!hosts.empty()) {
    const size_t comma = hosts.find(',');
    std::string_view e = hosts.substr(0, comma);
    if (!valid_endpoint(e)) return bad(url, fmt::format("'{}' is not host:port", e));
    loc.endpoints.emplace_back(e);
    if (comma == std::string_view::npos) break;
    hosts.remove_prefix(comma + 1);
  }
  if (loc.endpoints.empty()) return bad(url, "no endpoint");
  loc.prefix = std::move(prefix);
  std::set<std::string, std::less<>> seen;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view kv = query.substr(0, amp);
    const size_t eq = kv.find('=');
    const std::string_view key = kv.substr(0, eq);
    std::string value;
    if (eq == std::string_view::npos || !decode_name_segment(kv.substr(eq + 1), &value) || value.empty()) {
      return bad(url, fmt::format("parameter '{}' needs a value", key));
    }
    if (!seen.emplace(key).second) return bad(url, fmt::format("parameter '{}' given twice", key));
    if (key == "ttl") {
      unsigned ttl = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ttl);
      if (ec != std::errc() || end != value.data() + value.size() || ttl < 2 || ttl > 3600) {
        return bad(url, "ttl must be a whole number of seconds from 2 to 3600");
      }
      loc.ttl = std::chrono::seconds(ttl);
    } else if (key == "cacert" || key == "cert" || key == "key") {
      if (!loc.tls) return bad(url, fmt::format("'{}' is a TLS parameter: the URL must be etcds://", key));
      (key == "cacert" ? loc.ca_file : key == "cert" ? loc.cert_file : loc.key_file) = std::move(value);
    } else if (key == "user") {
      loc.user = std::move(value);
    } else if (key == "password_file") {
      loc.password_file = std::move(value);
    } else {
      return bad(url, fmt::format("unknown parameter '{}'", kv));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  if (loc.cert_file.empty() != loc.key_file.empty()) return bad(url, "cert and key go together");
  if (loc.user.empty() != loc.password_file.empty()) return bad(url, "user and password_file go together");
  *out = std::move(loc);
  return Status::OK();
}

std::string encode_name_segment(std::string_view name) {
  std::string out;
  for (size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    // ASCII classes, not <cctype>'s: the key must be the same in every
    // process, whatever its locale.
    const bool plain = ascii_alnum(c) || c == '-' || c == '_' || (c == '.' && i != 0);
    if (plain) {
      out.push_back(char(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

bool decode_name_segment(std::string_view s, std::string* name) { return percent_decode(s, name); }

}  // namespace locktable::detail

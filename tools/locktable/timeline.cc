#include "timeline.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <tuple>

#include <fmt/format.h>

namespace cli {

using namespace locktable;

namespace {

constexpr double kLeft = 170, kPlot = 1000, kTop = 56, kRowHeight = 26, kRowGap = 6, kLegend = 54;
constexpr int kMaxLanes = 4;

struct Interval {
  uint64_t start, end;
  uint32_t pid;
  Mode mode;
  int lane = 0;
};

enum class Mark { takeover, timeout, deadlock };

// The SVG's file, written through cairo's stream callback; `error` keeps the
// first write's errno.
struct SvgFile {
  std::FILE* file = nullptr;
  int error = 0;
  static cairo_status_t write(void* self, const unsigned char* data, unsigned int length) {
    auto* f = static_cast<SvgFile*>(self);
    if (f->error == 0 && std::fwrite(data, 1, length, f->file) != length) f->error = errno != 0 ? errno : EIO;
    return f->error == 0 ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
  }
};

Status write_error(const std::string& path, int err) {
  return Status(code_for_errno(err), fmt::format("{}: cannot write the picture: {}", path, std::strerror(err)));
}

struct Row {
  std::string name;
  std::vector<Interval> holds, waits;
  std::vector<std::pair<uint64_t, Mark>> marks;
  int lanes = 1;
};

struct Rgb {
  double r, g, b;
};

// A stable, distinct colour per process (golden-ratio hues).
Rgb colour_of(uint32_t pid) {
  const double h = std::fmod(pid * 0.618033988749895, 1.0) * 6, s = 0.55, v = 0.85;
  const int i = int(h);
  const double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  switch (i % 6) {
    case 0: return {v, t, p};
    case 1: return {q, v, p};
    case 2: return {p, v, t};
    case 3: return {p, q, v};
    case 4: return {t, p, v};
    default: return {v, p, q};
  }
}

std::string utc(uint64_t ns, uint64_t step_ns) {
  std::time_t secs = std::time_t(ns / 1'000'000'000u);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::string out = fmt::format("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (step_ns < 1'000'000'000u) out += fmt::format(".{:03}", (ns / 1'000'000u) % 1000);
  return out;
}

// Builds the rows: holds from acquired to released (or the edges of the
// window), waits before acquisitions and timeouts, and the marks.
std::map<std::string, Row> rows_of(const std::vector<Event>& events, uint64_t t0, uint64_t t1) {
  std::map<std::string, Row> rows;
  std::map<std::tuple<std::string, uint32_t, uint32_t>, std::pair<uint64_t, Mode>> open;
  for (const Event& e : events) {
    if (e.name.empty()) continue;
    Row& row = rows[e.name];
    row.name = e.name;
    const auto key = std::make_tuple(e.name, e.pid, e.tid);
    auto close = [&](uint64_t at) {
      auto it = open.find(key);
      const uint64_t start = it == open.end() ? t0 : it->second.first;
      const Mode mode = it == open.end() ? e.mode : it->second.second;
      row.holds.push_back(Interval{start, std::max(at, start), e.pid, mode});
      if (it != open.end()) open.erase(it);
    };
    switch (e.kind) {
      case EventKind::acquired:
        // An exclusive hold of another thread still open here ended without
        // a release: its holder died (the takeover's mark says so).
        for (auto it = open.begin(); it != open.end();) {
          if (std::get<0>(it->first) == e.name && it->first != key && it->second.second == Mode::exclusive) {
            row.holds.push_back(Interval{it->second.first, e.time_ns, std::get<1>(it->first), Mode::exclusive});
            it = open.erase(it);
          } else {
            ++it;
          }
        }
        open[key] = {e.time_ns, e.mode};
        if (e.wait_ns > 0) row.waits.push_back(Interval{e.time_ns - std::min(e.wait_ns, e.time_ns - t0), e.time_ns, e.pid, e.mode});
        if (e.abandoned) row.marks.emplace_back(e.time_ns, Mark::takeover);
        break;
      case EventKind::released:
        close(e.time_ns);
        break;
      case EventKind::downgraded:
        close(e.time_ns);
        open[key] = {e.time_ns, Mode::shared};
        break;
      case EventKind::timeout:
        row.marks.emplace_back(e.time_ns, Mark::timeout);
        if (e.wait_ns > 0) row.waits.push_back(Interval{e.time_ns - std::min(e.wait_ns, e.time_ns - t0), e.time_ns, e.pid, e.mode});
        break;
      case EventKind::deadlock:
        row.marks.emplace_back(e.time_ns, Mark::deadlock);
        break;
      default:
        break;
    }
  }
  for (const auto& [key, start] : open) {
    Row& row = rows[std::get<0>(key)];
    row.holds.push_back(Interval{start.first, t1, std::get<1>(key), start.second});
  }
  // Lanes: shared holds that overlap go side by side (at most kMaxLanes).
  for (auto& [name, row] : rows) {
    std::sort(row.holds.begin(), row.holds.end(), [](const Interval& a, const Interval& b) { return a.start < b.start; });
    std::vector<uint64_t> lane_end;
    for (Interval& h : row.holds) {
      if (h.mode == Mode::exclusive) continue;
      int lane = 0;
      while (lane < int(lane_end.size()) && lane_end[size_t(lane)] > h.start) ++lane;
      if (lane == int(lane_end.size())) lane_end.push_back(0);
      lane_end[size_t(lane)] = h.end;
      h.lane = std::min(lane, kMaxLanes - 1);
    }
    row.lanes = std::clamp(int(lane_end.size()), 1, kMaxLanes);
  }
  return rows;
}

uint64_t tick_step(uint64_t span_ns) {
  static const uint64_t steps[] = {
      1'000'000,      2'000'000,      5'000'000,      10'000'000,     20'000'000,     50'000'000,
      100'000'000,    200'000'000,    500'000'000,    1'000'000'000,  2'000'000'000,  5'000'000'000,
      10'000'000'000, 15'000'000'000, 30'000'000'000, 60'000'000'000, 120'000'000'000, 300'000'000'000,
      600'000'000'000, 900'000'000'000, 1'800'000'000'000, 3'600'000'000'000, 7'200'000'000'000};
  for (uint64_t s : steps) {
    if (span_ns / s <= 10) return s;
  }
  return 21'600'000'000'000;
}

}  // namespace

Status write_timeline_svg(const std::vector<Event>& events, const std::string& path, const std::string& title,
                          size_t max_locks) {
  uint64_t t0 = UINT64_MAX, t1 = 0;
  for (const Event& e : events) {
    t0 = std::min(t0, e.time_ns - std::min(e.time_ns, e.wait_ns));
    t1 = std::max(t1, e.time_ns);
  }
  if (events.empty()) t0 = t1 = 0;
  if (t1 <= t0) t1 = t0 + 1'000'000;
  std::map<std::string, Row> all = rows_of(events, t0, t1);
  // The busiest rows, then by name.
  std::vector<Row*> rows;
  for (auto& [name, row] : all) rows.push_back(&row);
  std::stable_sort(rows.begin(), rows.end(), [](const Row* a, const Row* b) {
    return a->holds.size() + a->marks.size() > b->holds.size() + b->marks.size();
  });
  const size_t hidden = rows.size() > max_locks ? rows.size() - max_locks : 0;
  rows.resize(std::min(rows.size(), max_locks));
  std::sort(rows.begin(), rows.end(), [](const Row* a, const Row* b) { return a->name < b->name; });

  const double width = kLeft + kPlot + 30;
  const double height = kTop + double(std::max<size_t>(rows.size(), 1)) * (kRowHeight + kRowGap) + kLegend;
  // The file is opened here, not by cairo, so that a failure names its cause
  // (cairo says only "error while writing to output stream").
  SvgFile out;
  out.file = std::fopen(path.c_str(), "we");
  if (out.file == nullptr) return write_error(path, errno);
  cairo_surface_t* surface = cairo_svg_surface_create_for_stream(&SvgFile::write, &out, width, height);
  cairo_t* cr = cairo_create(surface);
  auto x_of = [&](uint64_t t) { return kLeft + kPlot * double(t - t0) / double(t1 - t0); };
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);

  // Title and the UTC axis.
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_set_font_size(cr, 14);
  cairo_move_to(cr, 10, 20);
  cairo_show_text(cr, title.c_str());
  const uint64_t step = tick_step(t1 - t0);
  cairo_set_font_size(cr, 10);
  cairo_set_line_width(cr, 0.5);
  for (uint64_t t = (t0 + step - 1) / step * step; t <= t1; t += step) {
    const double x = x_of(t);
    cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
    cairo_move_to(cr, x, kTop - 6);
    cairo_line_to(cr, x, height - kLegend);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, x - 20, kTop - 10);
    cairo_show_text(cr, utc(t, step).c_str());
  }
  cairo_move_to(cr, kLeft, 36);
  cairo_show_text(cr, fmt::format("UTC, {} per tick", step >= 1'000'000'000 ? fmt::format("{} s", step / 1'000'000'000)
                                                                            : fmt::format("{} ms", step / 1'000'000))
                          .c_str());

  std::map<uint32_t, int> pids;  // for the legend, in order of appearance
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = *rows[i];
    const double top = kTop + double(i) * (kRowHeight + kRowGap);
    cairo_set_source_rgb(cr, 0.96, 0.96, 0.96);
    cairo_rectangle(cr, kLeft, top, kPlot, kRowHeight);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_set_font_size(cr, 11);
    std::string label = escape_name(row.name);
    if (label.size() > 24) label = label.substr(0, 23) + "~";
    cairo_move_to(cr, 8, top + kRowHeight / 2 + 4);
    cairo_show_text(cr, label.c_str());
    // Holds at least a pixel and a half wide, one by one; the rest added up
    // per pixel column.
    std::vector<double> busy(size_t(kPlot) + 1, 0.0);
    const double lane_height = (kRowHeight - 5) / row.lanes;
    for (const Interval& h : row.holds) {
      const double x0 = x_of(h.start), x1 = x_of(h.end);
      if (x1 - x0 >= 1.5) {
        const Rgb c = colour_of(h.pid);
        pids.emplace(h.pid, int(pids.size()));
        cairo_set_source_rgb(cr, c.r, c.g, c.b);
        if (h.mode == Mode::exclusive) cairo_rectangle(cr, x0, top + 1, x1 - x0, kRowHeight - 6);
        else cairo_rectangle(cr, x0, top + 1 + h.lane * lane_height, x1 - x0, lane_height - 1);
        cairo_fill(cr);
      } else {
        busy[size_t(std::clamp(x0 - kLeft, 0.0, kPlot))] += double(h.end - h.start);
      }
    }
    const double column_ns = double(t1 - t0) / kPlot;
    for (size_t col = 0; col < busy.size(); ++col) {
      if (busy[col] <= 0) continue;
      const double share = std::min(1.0, busy[col] / column_ns);
      cairo_set_source_rgba(cr, 0.25, 0.25, 0.35, 0.25 + 0.75 * share);
      cairo_rectangle(cr, kLeft + double(col), top + 1, 1, kRowHeight - 6);
      cairo_fill(cr);
    }
    // Waits: thin lines under the bars.
    cairo_set_line_width(cr, 1.5);
    for (const Interval& w : row.waits) {
      const Rgb c = colour_of(w.pid);
      cairo_set_source_rgb(cr, c.r * 0.6, c.g * 0.6, c.b * 0.6);
      cairo_move_to(cr, x_of(w.start), top + kRowHeight - 2);
      cairo_line_to(cr, std::max(x_of(w.end), x_of(w.start) + 1), top + kRowHeight - 2);
      cairo_stroke(cr);
    }
    // Marks: takeovers (red triangles), timeouts (orange crosses), deadlocks (purple diamonds).
    for (const auto& [t, mark] : row.marks) {
      const double x = x_of(t), y = top + kRowHeight / 2;
      if (mark == Mark::takeover) {
        cairo_set_source_rgb(cr, 0.85, 0.1, 0.1);
        cairo_move_to(cr, x, y - 7);
        cairo_line_to(cr, x + 6, y + 6);
        cairo_line_to(cr, x - 6, y + 6);
        cairo_close_path(cr);
        cairo_fill(cr);
      } else if (mark == Mark::timeout) {
        cairo_set_source_rgb(cr, 0.95, 0.55, 0.0);
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, x - 5, y - 5);
        cairo_line_to(cr, x + 5, y + 5);
        cairo_move_to(cr, x + 5, y - 5);
        cairo_line_to(cr, x - 5, y + 5);
        cairo_stroke(cr);
      } else {
        cairo_set_source_rgb(cr, 0.5, 0.1, 0.6);
        cairo_move_to(cr, x, y - 7);
        cairo_line_to(cr, x + 6, y);
        cairo_line_to(cr, x, y + 7);
        cairo_line_to(cr, x - 6, y);
        cairo_close_path(cr);
        cairo_fill(cr);
      }
    }
  }
  // Legend: processes, then marks.
  double x = 10;
  const double y = height - kLegend + 22;
  cairo_set_font_size(cr, 10);
  std::vector<std::pair<int, uint32_t>> by_order;
  for (const auto& [pid, order] : pids) by_order.emplace_back(order, pid);
  std::sort(by_order.begin(), by_order.end());
  for (size_t k = 0; k < by_order.size() && k < 12; ++k) {
    const Rgb c = colour_of(by_order[k].second);
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_rectangle(cr, x, y - 9, 12, 10);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_move_to(cr, x + 16, y);
    const std::string text = fmt::format("pid {}", by_order[k].second);
    cairo_show_text(cr, text.c_str());
    x += 24 + 7.0 * double(text.size());
  }
  std::string notes = "shaded: holds narrower than a pixel, added up; thin line: waiting; red triangle: abandoned "
                      "takeover; orange x: timeout; purple diamond: deadlock";
  if (hidden > 0) notes += fmt::format("; {} quieter locks not shown", hidden);
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  cairo_move_to(cr, 10, y + 18);
  cairo_show_text(cr, notes.c_str());

  cairo_destroy(cr);
  cairo_surface_finish(surface);
  const cairo_status_t status = cairo_surface_status(surface);
  cairo_surface_destroy(surface);
  if (std::fclose(out.file) != 0 && out.error == 0) out.error = errno;
  if (out.error != 0) return write_error(path, out.error);
  if (status != CAIRO_STATUS_SUCCESS) {
    return Status(Code::io_error, fmt::format("{}: cannot write the picture: {}", path, cairo_status_to_string(status)));
  }
  return Status::OK();
}

}  // namespace cli

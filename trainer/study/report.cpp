#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "ledger.h"
#include "log.h"

namespace opu::trainer::study {
namespace {

using Json = nlohmann::json;

// The ok and failed records of one point, in seed order.
struct PointRuns {
  const Point* point = nullptr;
  std::vector<const Json*> ok;
  std::int64_t failed = 0;
};

struct Spread {
  double mean = NAN;
  double std = NAN;  // sample standard deviation; 0 for a single run
};

Spread spread(const std::vector<double>& values) {
  if (values.empty()) return {};
  double sum = 0.0;
  for (double v : values) sum += v;
  const double mean = sum / static_cast<double>(values.size());
  double squares = 0.0;
  for (double v : values) squares += (v - mean) * (v - mean);
  const double n = static_cast<double>(values.size());
  return {mean, values.size() > 1 ? std::sqrt(squares / (n - 1.0)) : 0.0};
}

// A number read from a record by JSON pointer ("/snr/measured"); NaN when absent or null.
double number_at(const Json& record, const std::string& pointer) {
  const Json::json_pointer path(pointer);
  if (!record.contains(path)) return NAN;
  const Json& value = record.at(path);
  return value.is_number() ? value.get<double>() : NAN;
}

Spread spread_of(const PointRuns& runs, const std::string& pointer) {
  std::vector<double> values;
  for (const Json* r : runs.ok) {
    const double v = number_at(*r, pointer);
    if (std::isfinite(v)) values.push_back(v);
  }
  return spread(values);
}

std::string format(double value) {
  if (!std::isfinite(value)) return "";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", value);
  return buffer;
}

bool is_number(const std::string& text) {
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

std::vector<std::string> feedback_points(const std::vector<PointRuns>& all) {
  std::set<std::string> names;
  for (const PointRuns& runs : all) {
    for (const Json* r : runs.ok) {
      if (r->contains("alignment") && r->at("alignment").is_object()) {
        for (const auto& [name, value] : r->at("alignment").items()) names.insert(name);
      }
    }
  }
  return {names.begin(), names.end()};
}

Status write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) return data_loss(path.string() + ": write failed");
  return {};
}

// --- summary.csv ---

const std::vector<std::pair<std::string, std::string>>& summary_columns() {
  // (column, JSON pointer in a run record); SNR figures are a property of the point, the same
  // for every seed, so their mean is the figure.
  static const std::vector<std::pair<std::string, std::string>> kColumns = {
      {"test_accuracy", "/test_accuracy"},
      {"best_test_accuracy", "/best_test_accuracy"},
      {"final_loss", "/final_loss"},
      {"snr_measured", "/snr/measured"},
      {"snr_predicted", "/snr/predicted"},
      {"snr_total", "/snr/total"},
      {"correlation", "/snr/correlation"},
      {"relative_bias", "/snr/relative_bias"},
      {"relative_error", "/snr/relative_error"},
      {"frames", "/frames"},
      {"device_time_s", "/device_time_s"},
  };
  return kColumns;
}

std::string summary_csv(const std::vector<PointRuns>& all,
                        const std::vector<std::string>& alignment_points) {
  std::ostringstream csv;
  csv << "point,axis,value,kind,runs_ok,runs_failed";
  for (const auto& [column, pointer] : summary_columns()) {
    csv << "," << column << "_mean," << column << "_std";
  }
  for (const std::string& p : alignment_points)
    csv << ",alignment_" << p << "_mean,alignment_" << p << "_std";
  csv << "\n";
  for (const PointRuns& runs : all) {
    csv << runs.point->key << "," << runs.point->axis << "," << runs.point->value << ","
        << point_kind_name(runs.point->kind) << "," << runs.ok.size() << "," << runs.failed;
    for (const auto& [column, pointer] : summary_columns()) {
      const Spread s = spread_of(runs, pointer);
      csv << "," << format(s.mean) << "," << format(s.std);
    }
    for (const std::string& p : alignment_points) {
      const Spread s = spread_of(runs, "/alignment/" + p);
      csv << "," << format(s.mean) << "," << format(s.std);
    }
    csv << "\n";
  }
  return csv.str();
}

// --- plots ---

struct Plot {
  std::string name;  // file stem
  std::string data;  // .dat contents
  std::string script;
  bool drawable = false;  // has at least one series (gnuplot refuses an empty plot command)
};

std::string plot_header(const std::string& name, const std::string& title,
                        const std::string& xlabel, const std::string& ylabel) {
  return "set terminal svg size 640,480 dynamic font 'Helvetica,12' background rgb 'white'\n"
         "set output '" +
         name +
         ".svg'\n"
         "set title \"" +
         title +
         "\" noenhanced\n"
         "set xlabel \"" +
         xlabel +
         "\" noenhanced\n"
         "set ylabel \"" +
         ylabel +
         "\"\n"
         "set grid\nset key below noenhanced\n";
}

// One data block per series: "x mean std [label]" lines; blocks separated by two blank lines.
struct Series {
  std::string title;
  std::string block;
  std::string style = "yerrorlines";
};

std::string join_series(const std::string& name, const std::vector<Series>& series,
                        const std::string& using_spec, std::string& data) {
  std::string plot = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    data += series[i].block + "\n\n";
    plot += std::string(i ? ", \\\n     " : "") + "'" + name + ".dat' index " + std::to_string(i) +
            " using " + using_spec + " with " + series[i].style + " title \"" + series[i].title +
            "\"";
  }
  return plot;
}

bool log_scale_wanted(const std::vector<double>& xs) {
  if (xs.empty()) return false;
  const auto [lo, hi] = std::minmax_element(xs.begin(), xs.end());
  return *lo > 0.0 && *hi / *lo >= 20.0;
}

Plot accuracy_plot(const SweepAxis& axis, const std::vector<PointRuns>& all) {
  Plot plot{"accuracy_vs_" + axis.name, "", ""};
  const bool numeric = std::all_of(axis.values.begin(), axis.values.end(), is_number);
  std::vector<Series> series = {{axis.name == "snr" ? "digital B + noise" : "OPU feedback", ""},
                                {"digital B + noise of matched SNR", ""}};
  std::vector<double> xs;
  double exact = NAN;
  for (const PointRuns& runs : all) {
    if (runs.point->kind == PointKind::kExactDigital)
      exact = spread_of(runs, "/test_accuracy").mean;
    if (runs.point->axis != axis.name || runs.ok.empty()) continue;
    const Spread s = spread_of(runs, "/test_accuracy");
    const std::size_t index = static_cast<std::size_t>(
        std::find(axis.values.begin(), axis.values.end(), runs.point->value) - axis.values.begin());
    const std::string x = numeric ? runs.point->value : std::to_string(index);
    if (numeric) xs.push_back(std::strtod(x.c_str(), nullptr));
    series[runs.point->kind == PointKind::kMatchedDigital ? 1 : 0].block +=
        x + " " + format(100.0 * s.mean) + " " + format(100.0 * s.std) + " " + runs.point->value +
        "\n";
  }
  std::erase_if(series, [](const Series& s) { return s.block.empty(); });
  plot.script =
      plot_header(plot.name, "test accuracy vs " + axis.name + " (mean +- std over seeds)",
                  axis.name, "test accuracy (%)");
  if (log_scale_wanted(xs)) plot.script += "set logscale x\n";
  if (!numeric) plot.script += "set xrange [-0.5:" + std::to_string(axis.values.size()) + "-0.5]\n";
  plot.script += "set offsets graph 0.03, graph 0.03, graph 0.05, graph 0.05\n";
  std::string command =
      join_series(plot.name, series, numeric ? "1:2:3" : "1:2:3:xtic(4)", plot.data);
  plot.drawable = !series.empty() || std::isfinite(exact);
  if (std::isfinite(exact)) {
    command += std::string(series.empty() ? "" : ", \\\n     ") + format(100.0 * exact) +
               " with lines dashtype 2 lc rgb 'black' title \"exact digital B\"";
  }
  plot.script += command + "\n";
  return plot;
}

constexpr std::ptrdiff_t kMaxMarkedEpochs = 30;

// Mean alignment per epoch at one feedback point over the ok seeds of a point.
std::string alignment_block(const PointRuns& runs, const std::string& feedback_point) {
  std::vector<std::vector<double>> per_epoch;
  for (const Json* r : runs.ok) {
    const Json::json_pointer path("/alignment_history/" + feedback_point);
    if (!r->contains(path)) continue;
    const Json& history = r->at(path);
    for (std::size_t e = 0; e < history.size(); ++e) {
      if (per_epoch.size() <= e) per_epoch.resize(e + 1);
      if (history[e].is_number()) per_epoch[e].push_back(history[e].get<double>());
    }
  }
  std::string block;
  for (std::size_t e = 0; e < per_epoch.size(); ++e) {
    const Spread s = spread(per_epoch[e]);
    if (std::isfinite(s.mean)) {
      block += std::to_string(e + 1) + " " + format(s.mean) + " " + format(s.std) + "\n";
    }
  }
  return block;
}

Plot alignment_plot(const SweepAxis& axis, const std::string& feedback_point,
                    const std::vector<PointRuns>& all) {
  Plot plot{"alignment_" + axis.name + "_" + feedback_point, "", ""};
  std::vector<Series> series;
  for (const PointRuns& runs : all) {
    const bool on_axis =
        runs.point->axis == axis.name && runs.point->kind != PointKind::kMatchedDigital;
    if (!on_axis && runs.point->kind != PointKind::kExactDigital) continue;
    Series s{on_axis ? axis.name + "=" + runs.point->value : "exact digital B",
             alignment_block(runs, feedback_point), "linespoints"};
    // Markers on every epoch of a long run would only blot the lines (and bloat the SVG).
    if (std::count(s.block.begin(), s.block.end(), '\n') > kMaxMarkedEpochs) s.style = "lines";
    if (!s.block.empty()) series.push_back(s);
  }
  plot.script =
      plot_header(plot.name, "alignment at " + feedback_point + " over training, by " + axis.name,
                  "epoch", "cosine(DFA signal, BP gradient)");
  plot.script += join_series(plot.name, series, "1:2", plot.data) + "\n";
  plot.drawable = !series.empty();
  return plot;
}

Plot snr_plot(const std::vector<SweepAxis>& axes, const std::vector<PointRuns>& all) {
  Plot plot{"accuracy_vs_snr", "", ""};
  std::vector<Series> series;
  auto add = [&](const std::string& title, auto&& wanted) {
    Series s{title, "", "yerrorlines"};
    for (const PointRuns& runs : all) {
      const double snr = spread_of(runs, "/snr/measured").mean;
      if (!wanted(*runs.point) || !std::isfinite(snr) || snr <= 0.0) continue;
      const Spread acc = spread_of(runs, "/test_accuracy");
      s.block +=
          format(snr) + " " + format(100.0 * acc.mean) + " " + format(100.0 * acc.std) + "\n";
    }
    if (!s.block.empty()) series.push_back(s);
  };
  for (const SweepAxis& axis : axes) {
    add(axis.name == "snr" ? "digital B + noise" : "OPU, sweeping " + axis.name,
        [&](const Point& p) {
          return p.axis == axis.name && p.kind != PointKind::kMatchedDigital;
        });
  }
  add("digital B + matched noise",
      [](const Point& p) { return p.kind == PointKind::kMatchedDigital; });
  for (Series& s : series) s.style = "yerrorbars";
  plot.script =
      plot_header(plot.name, "test accuracy vs effective SNR of B.e (noiseless points not shown)",
                  "effective SNR of the projection (signal / noise variance)", "test accuracy (%)");
  plot.script += "set logscale x\n" + join_series(plot.name, series, "1:2:3", plot.data) + "\n";
  plot.drawable = !series.empty();
  return plot;
}

bool gnuplot_available(const std::string& gnuplot) {
  const std::string probe = "command -v '" + gnuplot + "' > /dev/null 2>&1";
  return std::system(probe.c_str()) == 0;
}

// Writes every plot's .dat and .gp; renders them when gnuplot is there. Returns whether all were
// rendered.
Result<bool> write_plots(const std::vector<Plot>& plots, const std::filesystem::path& dir,
                         const std::string& gnuplot) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return failed_precondition(dir.string() + ": cannot create (" + error.message() + ")");
  for (const Plot& plot : plots) {
    OPU_RETURN_IF_ERROR(write_text(dir / (plot.name + ".dat"), plot.data));
    OPU_RETURN_IF_ERROR(write_text(dir / (plot.name + ".gp"), plot.script));
  }
  if (gnuplot.empty()) return false;
  if (!gnuplot_available(gnuplot)) {
    study_logger()->warn(
        "gnuplot ('{}') not found: no SVG plots. The data (.dat) and scripts (.gp) are in {}; "
        "install gnuplot-nox (scripts/bootstrap.sh) and run `gnuplot NAME.gp` there",
        gnuplot, dir.string());
    return false;
  }
  bool all = true;
  for (const Plot& plot : plots) {
    if (!plot.drawable) continue;
    const std::string command =
        "cd '" + dir.string() + "' && '" + gnuplot + "' '" + plot.name + ".gp' 2>&1";
    if (std::system(command.c_str()) != 0) {
      study_logger()->warn("gnuplot failed on {}/{}.gp", dir.string(), plot.name);
      all = false;
    }
  }
  return all;
}

}  // namespace

Result<ReportOutcome> write_report(const StudySpec& spec, const std::vector<Point>& points,
                                   const std::map<std::string, Json>& records,
                                   const std::string& out_dir, const std::string& gnuplot) {
  ReportOutcome outcome;
  std::vector<PointRuns> all;
  std::string runs_jsonl;
  for (const Point& point : points) {
    PointRuns runs{&point, {}, 0};
    for (std::uint64_t seed : spec.seeds) {
      const auto found = records.find(run_key(point.key, seed));
      if (found == records.end()) {
        ++outcome.missing;
        continue;
      }
      runs_jsonl += found->second.dump() + "\n";
      if (found->second.value("status", "") == "ok") {
        runs.ok.push_back(&found->second);
      } else {
        ++runs.failed;
      }
    }
    outcome.failed += runs.failed;
    all.push_back(std::move(runs));
  }
  const std::filesystem::path dir(out_dir);
  OPU_RETURN_IF_ERROR(write_text(dir / "runs.jsonl", runs_jsonl));
  const std::vector<std::string> alignment_points = feedback_points(all);
  OPU_RETURN_IF_ERROR(write_text(dir / "summary.csv", summary_csv(all, alignment_points)));

  std::vector<Plot> plots;
  for (const SweepAxis& axis : spec.sweeps) {
    plots.push_back(accuracy_plot(axis, all));
    for (const std::string& p : alignment_points) plots.push_back(alignment_plot(axis, p, all));
  }
  plots.push_back(snr_plot(spec.sweeps, all));
  Result<bool> plotted = write_plots(plots, dir / "plots", gnuplot);
  if (!plotted.ok()) return plotted.status();
  outcome.plotted = *plotted;
  return outcome;
}

}  // namespace opu::trainer::study

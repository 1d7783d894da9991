// The final files of a sweep, rebuilt from the ledger in canonical (point, seed) order: runs.jsonl,
// summary.csv (mean and spread per point, no wall-clock figures), and plots/ (gnuplot .dat + .gp,
// rendered to SVG when gnuplot is available). The same ledger contents give the same files,
// whatever order the runs finished in.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "opu_sim/status.h"
#include "spec.h"

namespace opu::trainer::study {

struct ReportOutcome {
  std::int64_t failed = 0;   // runs recorded as failed
  std::int64_t missing = 0;  // runs not in the ledger yet
  bool plotted = false;      // gnuplot rendered every plot
};

/// `records` by run_key(). `gnuplot` is the executable (empty: do not render).
Result<ReportOutcome> write_report(const StudySpec& spec, const std::vector<Point>& points,
                                   const std::map<std::string, nlohmann::json>& records,
                                   const std::string& out_dir, const std::string& gnuplot);

}  // namespace opu::trainer::study

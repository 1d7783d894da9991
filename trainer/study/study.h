// Runs a sweep: every (point, seed) not yet in the ledger, one worker per device URI, each run
// measuring its feedback's SNR and then training in-process with opu-train's run_training().
// Then rebuilds the final files (report.h) from the ledger.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "opu_sim/status.h"
#include "spec.h"

namespace opu::trainer::study {

struct RunSettings {
  std::string out_dir;                   // ledger.jsonl, runs.jsonl, summary.csv, plots/, metrics/
  std::optional<std::int64_t> max_runs;  // stop after starting this many runs (>= 0; unset: all)
  bool retry_failed = false;             // rerun the runs the ledger holds as failed
  std::string gnuplot = "gnuplot";       // executable; empty = write .dat/.gp only
};

struct StudyOutcome {
  std::int64_t runs = 0;    // (point, seed) pairs of the sweep
  std::int64_t reused = 0;  // found in the ledger
  std::int64_t ran = 0;     // run by this call
  std::int64_t failed = 0;  // failed runs in the final files
  bool complete = false;    // every run is in the ledger
  bool plotted = false;     // gnuplot made the SVGs
};

/// Validates the spec, runs what the ledger lacks, writes the final files. Errors: a bad spec
/// (INVALID_ARGUMENT), an unusable output directory or data set. A failing run is not an error:
/// it is recorded with status "failed" and its message, and the sweep goes on.
Result<StudyOutcome> run_study(const StudySpec& spec, const RunSettings& settings);

/// The shape of the feedback every run projects: n_in = the data set's classes, n_out = the widest
/// feedback point. Loads the data set once (also checks it is there).
struct FeedbackShape {
  std::int64_t n_classes = 0;
  std::int64_t d_max = 0;
};
Result<FeedbackShape> feedback_shape(const app::Options& options);

/// A run ready to train: its opu-train options (for a matched control, with the SNR measured on
/// its device) and the SNR figures of its feedback (JSON, infinite values as null): "measured"
/// and, for devices on sim:// URIs, "predicted" with its shot/read/quantisation parts and the
/// comparison with an ideal-camera, fine-bit-plane reference of the same medium.
struct PreparedRun {
  app::Options options;
  nlohmann::json snr;
};
Result<PreparedRun> prepare_run(const StudySpec& spec, const Point& point, std::uint64_t seed,
                                const std::string& worker_uri, const FeedbackShape& shape);

}  // namespace opu::trainer::study

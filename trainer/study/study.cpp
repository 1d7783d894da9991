#include "study.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "app.h"
#include "device_factory.h"
#include "ledger.h"
#include "log.h"
#include "opu_sim/sim_device.h"
#include "report.h"
#include "trainer/datasets.h"
#include "trainer/feedback.h"
#include "trainer/projection_quality.h"

namespace opu::trainer::study {
namespace {

// The error-like vectors of every SNR measurement come from this seed, not from the run's: all
// seeds of a point then report the same SNR, and the figure depends on the point alone.
constexpr std::uint64_t kMeasurementSeed = 20240607;
// Reference projections: an ideal camera and 16 bit-planes per sign, i.e. B·e up to 2^-16 of
// max|e| — the exact projection of the same medium, reference phase and mask.
constexpr int kReferenceBitplanes = 16;

nlohmann::json finite_or_null(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

sim::LinearOptions linear_options(const app::Options& o) {
  sim::LinearOptions linear;
  linear.encoding = o.encoding == "bitplanes" ? sim::Encoding::kBitplanes : sim::Encoding::kTernary;
  linear.threshold = o.threshold;
  linear.bitplanes = *o.bitplanes;  // set by finalize()
  return linear;
}

// The same medium seen through an ideal camera: the camera's own settings are dropped, the rest
// (seed, sizes, drift, holography) kept.
Result<std::string> reference_uri(const std::string& uri) {
  Result<std::map<std::string, std::string>> params = sim_params(uri);
  if (!params.ok()) return params.status();
  for (const char* camera_setting : {"shot_noise", "read_noise", "dark_offset_counts"}) {
    params->erase(camera_setting);
  }
  (*params)["camera"] = "ideal";
  return sim_uri(*params);
}

// Camera-model prediction and reference comparison for a sim:// device, added to `snr`.
Status add_sim_figures(const std::string& uri, sim::Device& device, const Eigen::MatrixXf& values,
                       const SnrMeasurement& measured, const sim::LinearOptions& linear,
                       const FeedbackShape& shape, nlohmann::json& snr) {
  Result<std::map<std::string, std::string>> params = sim_params(uri);
  if (!params.ok()) return params.status();
  Result<sim::SimConfig> config = sim::SimConfig::from_params(*params);
  if (!config.ok()) return config.status();
  Result<SnrPrediction> predicted =
      predict_snr(device, values, measured, linear, config->holography,
                  CameraNoiseModel::from_config(config->camera), measured.repeats);
  if (!predicted.ok()) return predicted.status();
  snr["predicted"] = finite_or_null(predicted->snr);
  snr["predicted_noise_variance"] = predicted->noise_variance;
  snr["predicted_shot_variance"] = predicted->shot_variance;
  snr["predicted_read_variance"] = predicted->read_variance;
  snr["predicted_quantisation_variance"] = predicted->quantisation_variance;

  Result<std::string> ref_uri = reference_uri(uri);
  if (!ref_uri.ok()) return ref_uri.status();
  Result<std::unique_ptr<sim::Device>> reference = app::open_feedback_device(*ref_uri);
  if (!reference.ok()) return reference.status();
  sim::LinearOptions exact;
  exact.encoding = sim::Encoding::kBitplanes;
  exact.bitplanes = kReferenceBitplanes;
  Result<sim::Projections> ref = device_projector(**reference, shape.d_max, exact)(values);
  if (!ref.ok()) return ref.status().with_context("reference projection");
  Result<ProjectionComparison> compared = compare_projections(measured, ref->values);
  if (!compared.ok()) return compared.status();
  snr["correlation"] = compared->correlation;
  snr["relative_bias"] = compared->relative_bias;
  snr["relative_error"] = compared->relative_error;
  snr["relative_noise"] = compared->relative_noise;
  snr["total"] = finite_or_null(compared->snr_total);
  return {};
}

Result<nlohmann::json> measure_device(const StudySpec& spec, const app::Options& options,
                                      const FeedbackShape& shape) {
  // A device of its own: the training run then sees the same device state (clock, noise stream)
  // whether or not it was measured first.
  Result<std::unique_ptr<sim::Device>> device = app::open_feedback_device(options.feedback);
  if (!device.ok()) return device.status();
  const sim::LinearOptions linear = linear_options(options);
  const Eigen::MatrixXf values =
      error_like_vectors(shape.n_classes, spec.snr_batch, kMeasurementSeed);
  Result<SnrMeasurement> measured =
      measure_snr(device_projector(**device, shape.d_max, linear), values, spec.snr_repeats);
  if (!measured.ok()) return measured.status();
  nlohmann::json snr = {{"measured", finite_or_null(measured->snr)},
                        {"signal_variance", measured->signal_variance},
                        {"noise_variance", measured->noise_variance},
                        {"live_pixels", measured->live_pixels}};
  if (spec.snr_prediction && is_sim_uri(options.feedback)) {
    OPU_RETURN_IF_ERROR(
        add_sim_figures(options.feedback, **device, values, *measured, linear, shape, snr)
            .with_context("SNR prediction"));
  }
  return snr;
}

Result<nlohmann::json> measure_digital(const StudySpec& spec, const app::Options& options,
                                       const FeedbackShape& shape) {
  if (options.feedback != "digital-noisy") return nlohmann::json{{"measured", nullptr}};
  DigitalFeedback feedback(shape.n_classes, shape.d_max, options.seed,
                           FeedbackDistribution::kGaussian, *options.feedback_snr);
  const Eigen::MatrixXf values =
      error_like_vectors(shape.n_classes, spec.snr_batch, kMeasurementSeed);
  Result<SnrMeasurement> measured =
      measure_snr(feedback_projector(feedback), values, spec.snr_repeats);
  if (!measured.ok()) return measured.status();
  return nlohmann::json{{"measured", finite_or_null(measured->snr)},
                        {"target", *options.feedback_snr},
                        {"signal_variance", measured->signal_variance},
                        {"noise_variance", measured->noise_variance}};
}

// What opu-train's metrics file says about each epoch: test accuracy and alignment per point.
void add_histories(const std::string& metrics_path, nlohmann::json& record) {
  std::ifstream in(metrics_path);
  nlohmann::json accuracy = nlohmann::json::array();
  nlohmann::json alignment = nlohmann::json::object();
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("type", "") != "epoch") continue;
    accuracy.push_back(j.value("test_accuracy", nlohmann::json(nullptr)));
    for (const auto& [point, a] : j.at("alignment").items()) {
      alignment[point].push_back(a.at("mean"));
    }
  }
  record["test_accuracy_history"] = accuracy;
  record["alignment_history"] = alignment;
}

std::string file_slug(const std::string& key) {
  std::string slug = key;
  for (char& c : slug) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  }
  return slug;
}

// One (point, seed): measure, train, and the ledger record. Never fails: a failure is recorded.
nlohmann::json execute_run(const StudySpec& spec, const RunSettings& settings, const Point& point,
                           std::uint64_t seed, const std::string& worker_uri,
                           const FeedbackShape& shape) {
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json record = {{"key", run_key(point.key, seed)},
                           {"point", point.key},
                           {"axis", point.axis},
                           {"value", point.value},
                           {"kind", point_kind_name(point.kind)},
                           {"seed", seed},
                           {"fingerprint", fingerprint(spec)}};
  auto finish = [&](const Status& status) {
    record["status"] = status.ok() ? "ok" : "failed";
    record["error"] = status.ok() ? nlohmann::json(nullptr) : nlohmann::json(status.to_string());
    record["wall_s"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return record;
  };
  Result<PreparedRun> prepared = prepare_run(spec, point, seed, worker_uri, shape);
  if (!prepared.ok()) return finish(prepared.status());
  app::Options options = prepared->options;
  record["feedback"] = options.feedback;
  if (options.feedback == "digital-noisy") record["feedback_snr"] = *options.feedback_snr;
  record["snr"] = prepared->snr;
  options.metrics = (std::filesystem::path(settings.out_dir) / "metrics" /
                     (file_slug(point.key) + "-seed" + std::to_string(seed) + ".jsonl"))
                        .string();
  std::ostream discard(nullptr);  // the per-epoch text is in the metrics file
  Result<nlohmann::json> summary = app::run_training(options, discard, discard, false);
  add_histories(options.metrics, record);
  if (!summary.ok()) return finish(summary.status());
  for (const char* field : {"test_accuracy", "best_test_accuracy", "final_loss", "train_accuracy",
                            "alignment", "frames", "device_time_s", "epochs"}) {
    record[field] = summary->value(field, nlohmann::json(nullptr));
  }
  return finish({});
}

struct PendingRun {
  const Point* point;
  std::uint64_t seed;
};

std::string progress_line(const nlohmann::json& r, std::int64_t done, std::int64_t total) {
  std::string line = "[" + std::to_string(done) + "/" + std::to_string(total) + "] " +
                     r.at("point").get<std::string>() + " seed " +
                     std::to_string(r.at("seed").get<std::uint64_t>()) + ": ";
  if (r.at("status") != "ok") return line + "FAILED: " + r.at("error").get<std::string>();
  char buffer[160];
  const nlohmann::json snr =
      r.contains("snr") ? r.at("snr").value("measured", nlohmann::json()) : nlohmann::json();
  std::snprintf(buffer, sizeof(buffer), "test %.2f%% (best %.2f%%), snr %s, %.1f s",
                100.0 * r.at("test_accuracy").get<double>(),
                100.0 * r.at("best_test_accuracy").get<double>(),
                snr.is_number() ? std::to_string(snr.get<double>()).c_str() : "inf",
                r.at("wall_s").get<double>());
  return line + buffer;
}

}  // namespace

Result<FeedbackShape> feedback_shape(const app::Options& o) {
  FeedbackShape shape;
  shape.d_max = *std::max_element(o.hidden->begin(), o.hidden->end());
  if (o.model == "mlp") {
    Result<ImageDataset> data = load_idx_folder(o.data.empty() ? kFashionMnistDir : o.data);
    if (!data.ok()) return data.status();
    shape.n_classes = data->train.n_classes;
  } else {
    // The shipped copy when --data is not given; NOT_FOUND lists every place searched.
    Result<std::string> dir = o.data.empty() ? find_data("planetoid") : Result<std::string>(o.data);
    if (!dir.ok()) return dir.status();
    Result<GraphDataset> data = load_planetoid(*dir, o.dataset);
    if (!data.ok()) return data.status();
    shape.n_classes = data->nodes.n_classes;
  }
  return shape;
}

Result<PreparedRun> prepare_run(const StudySpec& spec, const Point& point, std::uint64_t seed,
                                const std::string& worker_uri, const FeedbackShape& shape) {
  PreparedRun run;
  double matched_snr = 1.0;
  if (point.kind == PointKind::kMatchedDigital) {
    // Measure this point's device first: the control's noise is matched to it.
    const Point device_point{point.key, point.axis, point.value, PointKind::kDevice};
    Result<app::Options> device_options = run_options(spec, device_point, seed, worker_uri, 1.0);
    if (!device_options.ok()) return device_options.status();
    Result<nlohmann::json> device_snr = measure_device(spec, *device_options, shape);
    if (!device_snr.ok()) return device_snr.status();
    const nlohmann::json& measured = device_snr->at("measured");
    matched_snr = measured.is_number() ? measured.get<double>() : 0.0;  // 0: noiseless device
    if (measured.is_number() && !(matched_snr > 0.0)) {
      return failed_precondition("matched control: the device's measured SNR is " +
                                 std::to_string(matched_snr) +
                                 " (its repeated projections share no signal), want > 0 to match");
    }
  }
  Result<app::Options> options = run_options(spec, point, seed, worker_uri, matched_snr);
  if (point.kind == PointKind::kMatchedDigital && matched_snr == 0.0) {
    // A noiseless device is matched by the exact B.
    options =
        run_options(spec, {point.key, "", "", PointKind::kExactDigital}, seed, worker_uri, 1.0);
  }
  if (!options.ok()) return options.status();
  run.options = *options;
  Result<nlohmann::json> snr = point.kind == PointKind::kDevice
                                   ? measure_device(spec, run.options, shape)
                                   : measure_digital(spec, run.options, shape);
  if (!snr.ok()) return snr.status().with_context("measuring the feedback's SNR");
  run.snr = std::move(*snr);
  return run;
}

Result<StudyOutcome> run_study(const StudySpec& spec, const RunSettings& settings) {
  OPU_RETURN_IF_ERROR(validate(spec));
  if (settings.max_runs && !kMaxRunsRange.contains(static_cast<double>(*settings.max_runs))) {
    return invalid_argument("--max-runs: " +
                            out_of_range_text(std::to_string(*settings.max_runs), kMaxRunsRange));
  }
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(settings.out_dir) / "metrics", error);
  if (error) {
    return failed_precondition("--out " + settings.out_dir + ": cannot create (" + error.message() +
                               ")");
  }
  Result<app::Options> first =
      run_options(spec, expand_points(spec).front(), spec.seeds.front(), spec.devices.front(), 1);
  if (!first.ok()) return first.status();
  Result<FeedbackShape> shape = feedback_shape(*first);
  if (!shape.ok()) return shape.status();
  Result<std::unique_ptr<Ledger>> ledger = Ledger::open(
      (std::filesystem::path(settings.out_dir) / "ledger.jsonl").string(), fingerprint(spec));
  if (!ledger.ok()) return ledger.status();

  const std::vector<Point> points = expand_points(spec);
  StudyOutcome outcome;
  std::vector<PendingRun> pending;
  for (const Point& point : points) {
    for (std::uint64_t seed : spec.seeds) {
      ++outcome.runs;
      auto found = (*ledger)->records().find(run_key(point.key, seed));
      const bool retry = settings.retry_failed && found != (*ledger)->records().end() &&
                         found->second.value("status", "") != "ok";
      if (found != (*ledger)->records().end() && !retry) {
        ++outcome.reused;
      } else {
        pending.push_back({&point, seed});
      }
    }
  }
  if (settings.max_runs && static_cast<std::int64_t>(pending.size()) > *settings.max_runs) {
    pending.resize(static_cast<std::size_t>(*settings.max_runs));
  }
  study_logger()->info(
      "{} runs ({} points x {} seeds): {} in the ledger, {} to run on {} worker(s)", outcome.runs,
      points.size(), spec.seeds.size(), outcome.reused, pending.size(), spec.devices.size());

  // Workers take the next pending run in canonical order; the ledger serialises their records.
  std::atomic<std::size_t> next{0};
  std::atomic<std::int64_t> finished{0};
  std::atomic<std::int64_t> ledger_errors{0};
  auto work = [&](const std::string& worker_uri) {
    for (std::size_t i = next++; i < pending.size(); i = next++) {
      const nlohmann::json record =
          execute_run(spec, settings, *pending[i].point, pending[i].seed, worker_uri, *shape);
      if (!(*ledger)->append(record).ok()) ++ledger_errors;
      study_logger()->info("{}", progress_line(record, outcome.reused + ++finished, outcome.runs));
    }
  };
  std::vector<std::thread> workers;
  for (std::size_t w = 1; w < spec.devices.size(); ++w) workers.emplace_back(work, spec.devices[w]);
  work(spec.devices.front());
  for (std::thread& t : workers) t.join();
  if (ledger_errors > 0)
    return data_loss("ledger: " + std::to_string(ledger_errors.load()) +
                     " records could not be written");
  outcome.ran = finished;

  Result<ReportOutcome> report =
      write_report(spec, points, (*ledger)->records(), settings.out_dir, settings.gnuplot);
  if (!report.ok()) return report.status();
  outcome.failed = report->failed;
  outcome.complete = report->missing == 0;
  outcome.plotted = report->plotted;
  return outcome;
}

}  // namespace opu::trainer::study

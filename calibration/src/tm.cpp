// tm: transmission-matrix recovery from intensities only, by numerical interferometry
// (docs/design.md §5). See docs/calibration.md, "tm", for the design and why each step is there.
#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "calibration/procedures.h"
#include "internal.h"

namespace opu::calibration {
namespace {

// The camera's variance model in counts²: shot noise (signal / gain), read noise and the 1/12 of
// rounding. A noiseless camera (inverse gain 0) keeps only the rounding term.
struct VarianceModel {
  double inverse_gain = 0.0;  // 1 / (electrons per count)
  double read2 = 0.0;         // read-noise variance, counts²
  double variance(double signal) const {
    return std::max(signal, 0.0) * inverse_gain + read2 + 1.0 / 12.0;
  }
};

// One measured frame of the design: which frame of the batch, and what it measures.
struct AnchorFrame {
  int low = 0;   // point index k (0 = origin)
  int high = 0;  // point index l > k: the frame lights shells k..l-1, |A_l - A_k|²
};

// Per-column dot products of two N x 2n matrices holding [real | imaginary] halves.
Eigen::ArrayXd column_dots(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b, std::int64_t n) {
  const Eigen::ArrayXf left = (a.leftCols(n).array() * b.leftCols(n).array()).colwise().sum();
  const Eigen::ArrayXf right = (a.rightCols(n).array() * b.rightCols(n).array()).colwise().sum();
  Eigen::ArrayXd out = left.cast<double>() + right.cast<double>();
  return out;
}

// Scales each column pair (p, p + n) of `m` by factor(p).
void scale_columns(Eigen::MatrixXf& m, const Eigen::ArrayXd& factor, std::int64_t n) {
  const Eigen::VectorXf f = factor.cast<float>().matrix();
  m.leftCols(n) *= f.asDiagonal();
  m.rightCols(n) *= f.asDiagonal();
}

// m += x with each column pair (p, p + n) of x scaled by factor(p), without a scaled copy of x:
// the same products and sums as scale_columns() on a copy followed by +=.
void add_scaled_columns(Eigen::MatrixXf& m, const Eigen::MatrixXf& x, const Eigen::ArrayXd& factor,
                        std::int64_t n) {
  const Eigen::VectorXf f = factor.cast<float>().matrix();
  m.leftCols(n).noalias() += x.leftCols(n) * f.asDiagonal();
  m.rightCols(n).noalias() += x.rightCols(n) * f.asDiagonal();
}

// Weighted Gauss-Newton over every raw frame: minimises Σ W (Y - |U V|²)² for all rows at once,
// where V = [Re | Im] (N x 2 n_out) holds the rows of the matrix as columns. Each pass fixes the
// weights from the current prediction (iteratively reweighted), solves the damped normal equations
// (JᵀWJ + λ) δ = JᵀW r with Jacobi-preconditioned conjugate gradients, matrix-free (every step is
// two products with the 0/1 design U), and accepts δ per row only if the row's objective falls
// (Levenberg-Marquardt damping per row).
class GaussNewton {
 public:
  GaussNewton(const Eigen::MatrixXf& design, const Eigen::MatrixXf& measured,
              const Eigen::MatrixXf& usable, VarianceModel model)
      : u_(design), y_(measured), usable_(usable), model_(model), n_(measured.cols()) {}

  /// Runs `passes` passes of at most `cg_steps` CG steps each on v (N x 2 n_out), in place.
  void run(Eigen::MatrixXf& v, std::int64_t passes, std::int64_t cg_steps,
           const Progress& progress) {
    Eigen::ArrayXd lambda = Eigen::ArrayXd::Constant(n_, -1.0);
    for (std::int64_t pass = 0; pass < passes; ++pass) {
      Eigen::MatrixXf fields = u_ * v;  // F x 2n: [Re E | Im E]
      const Eigen::ArrayXXf er = fields.leftCols(n_).array();
      const Eigen::ArrayXXf ei = fields.rightCols(n_).array();
      const Eigen::ArrayXXf predicted = er.square() + ei.square();
      const Eigen::ArrayXXf weights = usable_.array() / predicted.unaryExpr([this](float p) {
        return static_cast<float>(model_.variance(p));
      });
      const Eigen::ArrayXXf residual = y_.array() - predicted;
      const Eigen::ArrayXd objective = (weights * residual.square()).colwise().sum().cast<double>();

      // Right-hand side JᵀW r and the diagonal of JᵀWJ (u is 0/1, so u² = u).
      Eigen::MatrixXf scratch(u_.rows(), 2 * n_);
      scratch.leftCols(n_) = (2.0F * weights * residual * er).matrix();
      scratch.rightCols(n_) = (2.0F * weights * residual * ei).matrix();
      Eigen::MatrixXf rhs(v.rows(), 2 * n_);
      rhs.noalias() = u_.transpose() * scratch;
      scratch.leftCols(n_) = (4.0F * weights * er.square()).matrix();
      scratch.rightCols(n_) = (4.0F * weights * ei.square()).matrix();
      Eigen::MatrixXf diagonal(v.rows(), 2 * n_);
      diagonal.noalias() = u_.transpose() * scratch;
      const Eigen::ArrayXd diagonal_mean =
          (diagonal.leftCols(n_).colwise().sum() + diagonal.rightCols(n_).colwise().sum())
              .cast<double>()
              .array() /
          static_cast<double>(2 * v.rows());
      for (std::int64_t p = 0; p < n_; ++p) {
        if (lambda(p) < 0) lambda(p) = 1e-3 * diagonal_mean(p);
      }

      // Preconditioned CG, one independent system per row (column of v), vectorised. Its F x 2n
      // and N x 2n work matrices are allocated once per pass: fresh ones in every step cost page
      // faults on hundreds of MB per step (a third of the run's time at 100 x 4,000).
      Eigen::MatrixXf ud(u_.rows(), 2 * n_);
      Eigen::ArrayXXf jd(u_.rows(), n_);
      Eigen::MatrixXf s(u_.rows(), 2 * n_);
      auto apply = [&](const Eigen::MatrixXf& d, Eigen::MatrixXf& out) {
        ud.noalias() = u_ * d;
        jd = 2.0F * (er * ud.leftCols(n_).array() + ei * ud.rightCols(n_).array());
        s.leftCols(n_) = (2.0F * weights * jd * er).matrix();
        s.rightCols(n_) = (2.0F * weights * jd * ei).matrix();
        out.noalias() = u_.transpose() * s;
        add_scaled_columns(out, d, lambda, n_);
      };
      Eigen::MatrixXf preconditioner = diagonal;
      for (std::int64_t p = 0; p < n_; ++p) {
        preconditioner.col(p).array() += static_cast<float>(lambda(p));
        preconditioner.col(p + n_).array() += static_cast<float>(lambda(p));
      }
      preconditioner = preconditioner.cwiseInverse();
      Eigen::MatrixXf step = Eigen::MatrixXf::Zero(v.rows(), 2 * n_);
      Eigen::MatrixXf r = rhs;
      Eigen::MatrixXf z = r.cwiseProduct(preconditioner);
      Eigen::MatrixXf direction = z;
      Eigen::MatrixXf ad(v.rows(), 2 * n_);
      Eigen::ArrayXd rz = column_dots(r, z, n_);
      const Eigen::ArrayXd rz0 = rz;
      for (std::int64_t k = 0; k < cg_steps; ++k) {
        apply(direction, ad);
        const Eigen::ArrayXd curvature = column_dots(direction, ad, n_);
        const Eigen::ArrayXd alpha =
            (curvature > 0.0).select(rz / curvature.max(1e-300), Eigen::ArrayXd::Zero(n_));
        add_scaled_columns(step, direction, alpha, n_);
        add_scaled_columns(r, ad, -alpha, n_);
        z = r.cwiseProduct(preconditioner);
        const Eigen::ArrayXd rz_next = column_dots(r, z, n_);
        const Eigen::ArrayXd beta = (rz > 0.0).select(rz_next / rz.max(1e-300), 0.0);
        scale_columns(direction, beta, n_);
        direction += z;
        rz = rz_next;
        if ((rz <= 1e-12 * rz0).all()) break;
      }

      // Accept per row where the (fixed-weight) objective falls.
      const Eigen::MatrixXf candidate = v + step;
      fields.noalias() = u_ * candidate;
      const Eigen::ArrayXXf predicted_next =
          fields.leftCols(n_).array().square() + fields.rightCols(n_).array().square();
      const Eigen::ArrayXd objective_next =
          (weights * (y_.array() - predicted_next).square()).colwise().sum().cast<double>();
      std::int64_t accepted = 0;
      for (std::int64_t p = 0; p < n_; ++p) {
        if (objective_next(p) < objective(p)) {
          v.col(p) = candidate.col(p);
          v.col(p + n_) = candidate.col(p + n_);
          lambda(p) = std::max(lambda(p) / 3.0, 1e-9 * diagonal_mean(p));
          ++accepted;
        } else {
          lambda(p) *= 4.0;
        }
      }
      detail::logger()->debug(
          "tm: Gauss-Newton pass {}: objective {:.4g} -> {:.4g}, {} of {} rows "
          "accepted",
          pass + 1, objective.sum(), objective_next.sum(), accepted, n_);
      if (progress) progress("tm: Gauss-Newton refinement", pass + 1, passes);
    }
  }

 private:
  const Eigen::MatrixXf& u_;       // F x N, 0/1
  const Eigen::MatrixXf& y_;       // F x n_out, counts above dark
  const Eigen::MatrixXf& usable_;  // F x n_out, 0 where the reading is clipped
  VarianceModel model_;
  std::int64_t n_;
};

// Pearson correlation of |U V|² against the usable measured readings.
double fit_correlation(const Eigen::MatrixXf& u, const Eigen::MatrixXf& v, const Eigen::MatrixXf& y,
                       const Eigen::MatrixXf& usable) {
  const std::int64_t n = y.cols();
  Eigen::MatrixXf fields(u.rows(), 2 * n);
  fields.noalias() = u * v;
  const Eigen::ArrayXXf predicted =
      fields.leftCols(n).array().square() + fields.rightCols(n).array().square();
  std::vector<double> a;
  std::vector<double> b;
  for (std::int64_t p = 0; p < n; ++p) {
    for (std::int64_t f = 0; f < y.rows(); ++f) {
      if (usable(f, p) == 0.0F) continue;
      a.push_back(predicted(f, p));
      b.push_back(y(f, p));
    }
  }
  if (a.size() < 2) return 0.0;
  return pearson(Eigen::Map<const Eigen::ArrayXd>(a.data(), static_cast<std::int64_t>(a.size())),
                 Eigen::Map<const Eigen::ArrayXd>(b.data(), static_cast<std::int64_t>(b.size())));
}

}  // namespace

Result<TmSection> recover_tm(sim::Device& device, const TmOptions& o, const Progress& progress) {
  const auto wall_start = std::chrono::steady_clock::now();
  FrameTaker taker(device, progress);
  const sim::DeviceInfo& info = taker.info();
  const std::int64_t n = o.n_in;
  const std::int64_t n_out = o.n_out;
  const std::int64_t shells = o.anchors;
  if (n < 2 || n_out < 1) {
    return invalid_argument("tm: n_in " + std::to_string(n) + ", n_out " + std::to_string(n_out) +
                            ", want n_in >= 2 and n_out >= 1");
  }
  if (o.column_offset < 0 || o.column_offset + n > info.max_n_in) {
    return out_of_range("tm: mirrors [" + std::to_string(o.column_offset) + ", " +
                        std::to_string(o.column_offset + n) + ") beyond device max_n_in " +
                        std::to_string(info.max_n_in));
  }
  if (n_out > info.max_n_out) {
    return out_of_range("tm: n_out " + std::to_string(n_out) + " above device max_n_out " +
                        std::to_string(info.max_n_out));
  }
  if (shells < 2 || shells > n) {
    return invalid_argument("tm: anchors is " + std::to_string(shells) + ", want 2..n_in (" +
                            std::to_string(n) + ")");
  }
  if (o.anchor_repeats < 1 || o.dark_frames < 1 || o.gn_iterations < 0 || o.cg_iterations < 1) {
    return invalid_argument(
        "tm: anchor_repeats, dark_frames and cg_iterations must be >= 1, "
        "gn_iterations >= 0");
  }
  if (!(o.fill > 0.0 && o.fill < 1.0)) {
    return invalid_argument("tm: fill is " + std::to_string(o.fill) + ", want a value in (0, 1)");
  }
  const std::int64_t largest_shell = (n + shells - 1) / shells;
  const std::int64_t signals =
      o.signals_per_shell > 0 ? o.signals_per_shell : 2 * largest_shell + 10;
  if (signals < largest_shell) {
    return failed_precondition(
        "tm: signals_per_shell " + std::to_string(signals) + " is below the shell size " +
        std::to_string(largest_shell) + ": too few frames to fit " + std::to_string(largest_shell) +
        " unknowns per row and shell (want >= " + std::to_string(2 * largest_shell) + ")");
  }
  const std::int64_t mirrors = o.column_offset + n;
  const double full = taker.full_scale();
  auto on_mirrors = [&](const BitMatrix& block) {
    BitMatrix frames = BitMatrix::Zero(mirrors, block.cols());
    frames.bottomRows(n) = block;
    return frames;
  };

  // 1. Dark level per pixel (every mirror off).
  double exposure = o.exposure_us;
  const double default_exposure = info.exposure_us > 0 ? info.exposure_us : 1000.0;
  Result<Counts> dark_frames =
      taker.take(BitMatrix::Zero(mirrors, o.dark_frames), n_out,
                 exposure > 0 ? exposure : default_exposure, "tm: dark frames");
  if (!dark_frames.ok()) return dark_frames.status();
  const Eigen::VectorXf dark = dark_frames->values.rowwise().mean();
  const double dark_level = dark.mean();

  // 2. Exposure: a full-block frame at `fill` of full scale on average. Speckle is exponential:
  // at 25% e^-4 = 1.8% of full-block readings clip (they are masked), while the dim signal-only
  // frames (~1/8 of the block) still span ~8 counts; at 15% their rounding dominates
  // (docs/calibration.md has the measured comparison).
  if (exposure <= 0) {
    exposure = default_exposure;
    const double max_exposure = info.max_exposure_us > 0 ? info.max_exposure_us : 1e9;
    for (int attempt = 0; attempt < 8; ++attempt) {
      Result<Counts> probe =
          taker.take(on_mirrors(BitMatrix::Ones(n, 4)), n_out, exposure, "tm: exposure probe");
      if (!probe.ok()) return probe.status();
      const double saturated = static_cast<double>(probe->saturated.count()) /
                               static_cast<double>(probe->saturated.size());
      const double mean = (probe->values.colwise() - dark).cast<double>().mean();
      double next = exposure;
      if (saturated > 0.01) {
        next = exposure / 4.0;
      } else if (mean < 0.5) {
        next = exposure * 16.0;
      } else {
        next = exposure * o.fill * (full - dark_level) / mean;
      }
      next = std::clamp(next, 1e-3, max_exposure);
      const bool done = saturated <= 0.01 && mean >= 0.5;
      exposure = next;
      if (done) break;
    }
  }
  detail::logger()->info("tm: exposure {:.1f} us, dark level {:.2f} counts", exposure, dark_level);

  // 3. Shells: a random partition of the block; anchor k lights shells 0..k-1 (a_0 = origin,
  // a_K = the whole block). Every difference of two anchors is again binary, so every pairwise
  // distance between the K+1 anchor points can be measured.
  PatternRng rng(o.seed);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  for (std::int64_t i = n - 1; i > 0; --i) {
    std::swap(order[static_cast<std::size_t>(i)],
              order[static_cast<std::size_t>(rng.below(i + 1))]);
  }
  std::vector<std::vector<std::int64_t>> shell(static_cast<std::size_t>(shells));
  for (std::int64_t s = 0; s < shells; ++s) {
    for (std::int64_t i = s * n / shells; i < (s + 1) * n / shells; ++i) {
      shell[static_cast<std::size_t>(s)].push_back(order[static_cast<std::size_t>(i)]);
    }
  }
  auto light_shells = [&](BitMatrix& frames, std::int64_t column, std::int64_t from,
                          std::int64_t to) {
    for (std::int64_t s = from; s < to; ++s) {
      for (const std::int64_t c : shell[static_cast<std::size_t>(s)]) frames(c, column) = 1;
    }
  };

  // 4. The design: anchor-pair frames (repeated), then K+1 frames per signal.
  std::vector<AnchorFrame> pairs;
  for (int k = 0; k <= shells; ++k) {
    for (int l = k + 1; l <= shells; ++l) pairs.push_back({k, l});
  }
  const auto n_pairs = static_cast<std::int64_t>(pairs.size());
  const std::int64_t anchor_frames = n_pairs * o.anchor_repeats;
  const std::int64_t total_signals = shells * signals;
  const std::int64_t random_frames = o.random_frames >= 0 ? o.random_frames : n;
  const std::int64_t frames_total = anchor_frames + total_signals * (shells + 1) + random_frames;
  BitMatrix design = BitMatrix::Zero(n, frames_total);
  for (std::int64_t rep = 0; rep < o.anchor_repeats; ++rep) {
    for (std::int64_t q = 0; q < n_pairs; ++q) {
      light_shells(design, rep * n_pairs + q, pairs[static_cast<std::size_t>(q)].low,
                   pairs[static_cast<std::size_t>(q)].high);
    }
  }
  // z_m: the signal's own bits within its shell (shell-local coordinates).
  std::vector<BitMatrix> signal_bits(static_cast<std::size_t>(shells));
  for (std::int64_t j = 0; j < shells; ++j) {
    const auto& members = shell[static_cast<std::size_t>(j)];
    BitMatrix& z = signal_bits[static_cast<std::size_t>(j)];
    z = rng.bernoulli(static_cast<std::int64_t>(members.size()), signals, 0.5);
    for (std::int64_t m = 0; m < signals; ++m) {
      const std::int64_t base = anchor_frames + (j * signals + m) * (shells + 1);
      for (std::int64_t k = 0; k <= shells; ++k) {
        const std::int64_t column = base + k;
        if (k <= j) {
          // x = a_j ∪ z contains a_k: x \ a_k = shells k..j-1 ∪ z, distance to A_k.
          light_shells(design, column, k, j);
          for (std::size_t c = 0; c < members.size(); ++c) {
            if (z(static_cast<std::int64_t>(c), m) != 0) design(members[c], column) = 1;
          }
        } else {
          // a_k contains x: a_k \ x = (shell j \ z) ∪ shells j+1..k-1, distance to A_k.
          light_shells(design, column, j + 1, k);
          for (std::size_t c = 0; c < members.size(); ++c) {
            if (z(static_cast<std::int64_t>(c), m) == 0) design(members[c], column) = 1;
          }
        }
      }
    }
  }
  // Random frames over the whole block, used only by the Gauss-Newton refinement. Every
  // interferometric frame is a distance to one of K+1 anchor points; where a row's anchor points
  // are nearly collinear, a signal and its mirror image across that line have the same distances,
  // and no number of such frames tells them apart. Random inputs do (they are what a user sends).
  if (random_frames > 0) {
    design.rightCols(random_frames) = rng.bernoulli(n, random_frames, 0.5);
  }
  Result<Counts> taken = taker.take(on_mirrors(design), n_out, exposure, "tm: frames");
  if (!taken.ok()) return taken.status();
  const double saturated_fraction =
      static_cast<double>(taken->saturated.count()) / static_cast<double>(taken->saturated.size());
  if (saturated_fraction > 0.2) {
    return failed_precondition("tm: " + std::to_string(100.0 * saturated_fraction) +
                               "% of readings are saturated at exposure " +
                               std::to_string(exposure) +
                               " us: clipped readings carry no distance; lower the exposure "
                               "(or leave it to auto)");
  }
  // F x n_out: counts above dark, and which readings are usable (not clipped).
  const Eigen::MatrixXf y = (taken->values.colwise() - dark).transpose();
  const Eigen::MatrixXf usable = (!taken->saturated.array()).cast<float>().matrix().transpose();

  // 5. The variance model: from a noise calibration, or from the repeated anchor frames.
  VarianceModel model;
  if (o.gain_e_per_count > 0) {
    model.inverse_gain = 1.0 / o.gain_e_per_count;
    model.read2 = o.read_noise_counts > 0 ? o.read_noise_counts * o.read_noise_counts : 0.0;
  } else if (o.anchor_repeats >= 4) {
    std::vector<double> xs;
    std::vector<double> vs;
    std::vector<double> ws;
    for (std::int64_t q = 0; q < n_pairs; ++q) {
      for (std::int64_t p = 0; p < n_out; ++p) {
        double sum = 0;
        double sum2 = 0;
        bool clipped = false;
        for (std::int64_t rep = 0; rep < o.anchor_repeats; ++rep) {
          const std::int64_t f = rep * n_pairs + q;
          clipped = clipped || usable(f, p) == 0.0F;
          sum += y(f, p);
          sum2 += static_cast<double>(y(f, p)) * y(f, p);
        }
        const auto r = static_cast<double>(o.anchor_repeats);
        const double mean = sum / r;
        if (clipped || mean < 5.0) continue;
        xs.push_back(mean);
        vs.push_back((sum2 - r * mean * mean) / (r - 1.0) - 1.0 / 12.0);
        ws.push_back(1.0 / ((mean + 1.0) * (mean + 1.0)));
      }
    }
    if (xs.size() >= 20) {
      const detail::LineFit line = detail::fit_line(xs, vs, ws);
      model.inverse_gain = std::max(line.b, 0.0);
      model.read2 = std::max(line.a, 0.0);
    }
    if (o.read_noise_counts >= 0) model.read2 = o.read_noise_counts * o.read_noise_counts;
  }
  detail::logger()->info("tm: variance model: gain {:.2f} e-/count, read noise {:.3f} counts",
                         model.inverse_gain > 0 ? 1.0 / model.inverse_gain : 0.0,
                         std::sqrt(model.read2));

  // 6. Per row: anchor positions by classical MDS of the averaged pair distances, then weighted
  // multilateration of every signal, then a weighted least-squares solve per shell.
  Eigen::MatrixXcd estimate = Eigen::MatrixXcd::Zero(n_out, n);
  const std::int64_t points = shells + 1;
  for (std::int64_t p = 0; p < n_out; ++p) {
    Eigen::MatrixXd squared = Eigen::MatrixXd::Zero(points, points);
    for (std::int64_t q = 0; q < n_pairs; ++q) {
      double sum = 0;
      for (std::int64_t rep = 0; rep < o.anchor_repeats; ++rep) sum += y(rep * n_pairs + q, p);
      const AnchorFrame& pair = pairs[static_cast<std::size_t>(q)];
      squared(pair.low, pair.high) = squared(pair.high, pair.low) =
          std::max(sum / static_cast<double>(o.anchor_repeats), 0.0);
    }
    const Eigen::MatrixXd centering = Eigen::MatrixXd::Identity(points, points) -
                                      Eigen::MatrixXd::Constant(points, points, 1.0 / points);
    const Eigen::MatrixXd gram = -0.5 * centering * squared * centering;
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(gram);
    std::vector<std::complex<double>> anchor(static_cast<std::size_t>(points));
    const double l1 = std::sqrt(std::max(eigen.eigenvalues()(points - 1), 0.0));
    const double l2 = std::sqrt(std::max(eigen.eigenvalues()(points - 2), 0.0));
    for (std::int64_t k = 0; k < points; ++k) {
      anchor[static_cast<std::size_t>(k)] = {eigen.eigenvectors()(k, points - 1) * l1,
                                             eigen.eigenvectors()(k, points - 2) * l2};
    }
    const std::complex<double> origin = anchor[0];
    for (auto& a : anchor) a -= origin;

    for (std::int64_t j = 0; j < shells; ++j) {
      const auto& members = shell[static_cast<std::size_t>(j)];
      const auto size = static_cast<std::int64_t>(members.size());
      Eigen::VectorXd precision = Eigen::VectorXd::Zero(signals);
      Eigen::VectorXcd field = Eigen::VectorXcd::Zero(signals);
      for (std::int64_t m = 0; m < signals; ++m) {
        const std::int64_t base = anchor_frames + (j * signals + m) * (shells + 1);
        // |y - A_k|² = d_k  ->  d_k - |A_k|² = c - 2 Re(A_k) y_r - 2 Im(A_k) y_i, with c = |y|²
        // left free (an intercept): no equation is privileged, and errors in |A_k|² common to
        // all equations are absorbed.
        Eigen::Matrix3d normal = Eigen::Matrix3d::Zero();
        Eigen::Vector3d rhs = Eigen::Vector3d::Zero();
        int equations = 0;
        for (std::int64_t k = 0; k <= shells; ++k) {
          const std::int64_t f = base + k;
          if (usable(f, p) == 0.0F) continue;  // a clipped reading is only a lower bound
          const double d = y(f, p);
          const double weight = 1.0 / model.variance(d);
          const std::complex<double> a = anchor[static_cast<std::size_t>(k)];
          const Eigen::Vector3d row(1.0, -2.0 * a.real(), -2.0 * a.imag());
          normal.noalias() += weight * row * row.transpose();
          rhs += weight * (d - std::norm(a)) * row;
          ++equations;
        }
        if (equations < 3) continue;
        const Eigen::LDLT<Eigen::Matrix3d> solver(normal);
        if (solver.info() != Eigen::Success || !(solver.vectorD().array() > 1e-12).all()) continue;
        const Eigen::Vector3d solution = solver.solve(rhs);
        const Eigen::Matrix3d covariance = solver.solve(Eigen::Matrix3d::Identity());
        const double variance = 0.5 * (covariance(1, 1) + covariance(2, 2));
        if (!(variance > 0) || !std::isfinite(solution.sum())) continue;
        precision(m) = 1.0 / variance;
        field(m) =
            std::complex<double>(solution(1), solution(2)) - anchor[static_cast<std::size_t>(j)];
      }
      // Σ prec z zᵀ r = Σ prec z w: the shell's columns of this row, each signal weighted by the
      // precision its multilateration achieved (bad geometry or clipped distances count less).
      const BitMatrix& z = signal_bits[static_cast<std::size_t>(j)];
      const Eigen::MatrixXd zd = z.cast<double>();
      Eigen::MatrixXd normal = zd * precision.asDiagonal() * zd.transpose();
      const Eigen::VectorXcd rhs =
          zd * (precision.cast<std::complex<double>>().cwiseProduct(field));
      normal.diagonal().array() += 1e-9 * (normal.trace() / static_cast<double>(size) + 1e-30);
      const Eigen::LDLT<Eigen::MatrixXd> solver(normal);
      const Eigen::VectorXcd solution = solver.solve(rhs);
      for (std::int64_t c = 0; c < size; ++c) {
        estimate(p, members[static_cast<std::size_t>(c)]) = solution(c);
      }
    }
    if (progress && (p + 1) % 256 == 0) progress("tm: multilateration", p + 1, n_out);
  }

  // 7. Weighted Gauss-Newton on all raw frames, from the interferometric estimate.
  const Eigen::MatrixXf u = design.cast<float>().transpose();  // F x N
  Eigen::MatrixXf v(n, 2 * n_out);
  v.leftCols(n_out) = estimate.real().transpose().cast<float>();
  v.rightCols(n_out) = estimate.imag().transpose().cast<float>();
  TmSection section;
  section.init_correlation = fit_correlation(u, v, y, usable);
  if (o.gn_iterations > 0) {
    GaussNewton refine(u, y, usable, model);
    refine.run(v, o.gn_iterations, o.cg_iterations, progress);
  }
  section.fit_correlation = fit_correlation(u, v, y, usable);

  section.n_in = n;
  section.n_out = n_out;
  section.column_offset = o.column_offset;
  section.exposure_us = exposure;
  section.matrix.resize(n_out, n);
  section.matrix.real() = v.leftCols(n_out).transpose();
  section.matrix.imag() = v.rightCols(n_out).transpose();
  section.dark_counts = dark;
  section.anchors = shells;
  section.signals_per_shell = signals;
  section.gn_iterations = o.gn_iterations;
  section.seed = o.seed;
  section.frames = taker.frames();
  section.device_time_s = taker.device_time_s();
  section.wall_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  detail::logger()->info("tm: {} frames ({} device s), fit correlation {:.4f} -> {:.4f}",
                         section.frames, section.device_time_s, section.init_correlation,
                         section.fit_correlation);
  return section;
}

}  // namespace opu::calibration

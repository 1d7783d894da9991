// Layers with explicit forward and backward passes (docs/design.md §4).
//
// Conventions: float32, one sample per column (a batch is features x batch). A layer keeps only its
// parameters and what backward cannot recompute cheaply (a dropout mask); the Model owns the
// activations and hands each layer its input x, its output y and dL/dy. backward() overwrites the
// parameter gradients (when asked to) and writes dL/dx only when the caller needs it: DFA never
// asks for the input gradient at the bottom of a block, which is where it saves its time.
//
// Thread safety: none; a layer belongs to one model used by one thread.
#pragma once

#include <Eigen/Core>
#include <Eigen/SparseCore>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace opu::trainer {

/// A trainable tensor and its gradient.
struct Param {
  std::string name;  // unique within a model: "layer0.linear.weight"
  Eigen::MatrixXf value;
  Eigen::MatrixXf grad;  // same shape as value, written by backward()
  bool decay = true;     // weight decay applies (weights yes, biases no)
};

/// What a forward pass depends on besides its input.
struct ForwardContext {
  bool training = false;
  std::uint64_t step = 0;  // global training step: seeds the dropout masks
};

/// Resizes `m` when its shape differs (Eigen is built with EIGEN_NO_AUTOMATIC_RESIZING).
inline void ensure_shape(Eigen::MatrixXf& m, Eigen::Index rows, Eigen::Index cols) {
  if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
}

class Layer {
 public:
  virtual ~Layer() = default;
  Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  /// Short kind name for messages and checkpoints ("linear", "relu", ...).
  virtual std::string kind() const = 0;
  /// Rows of the output for `input_size` rows of input (checks the input size; throws on mismatch).
  virtual Eigen::Index output_size(Eigen::Index input_size) const = 0;
  /// y = layer(x). `y` is resized as needed.
  virtual void forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
                       const ForwardContext& context) = 0;
  /// Given x, y of the last forward and dy = dL/dy: parameter gradients when `param_grads`, and
  /// dx = dL/dx when `dx` is not null.
  virtual void backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                        const Eigen::Ref<const Eigen::MatrixXf>& y,
                        const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                        bool param_grads) = 0;
  /// Trainable parameters (empty for activations).
  virtual std::vector<Param*> params() { return {}; }
};

/// How weights are initialised.
enum class Init {
  kTorchDefault,  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, like nn.Linear
  kGlorot,        // U(-sqrt(6/(fan_in+fan_out)), +...) for the weight, zero bias (Kipf & Welling)
};

/// y = W x + b.
class Linear final : public Layer {
 public:
  /// Weights from (seed, name): a pure function, like every random tensor of the trainer.
  Linear(std::string name, Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed,
         Init init = Init::kTorchDefault);
  std::string kind() const override { return "linear"; }
  Eigen::Index output_size(Eigen::Index input_size) const override;
  void forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
               const ForwardContext& context) override;
  void backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                const Eigen::Ref<const Eigen::MatrixXf>& y,
                const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                bool param_grads) override;
  std::vector<Param*> params() override { return {&weight_, &bias_}; }
  Param& weight() { return weight_; }
  Param& bias() { return bias_; }

 private:
  Param weight_;  // n_out x n_in
  Param bias_;    // n_out x 1
};

enum class ActivationKind { kRelu, kTanh, kSigmoid };
std::string activation_name(ActivationKind kind);

/// Element-wise activation; its derivative is computed from the output y (no extra cache).
class Activation final : public Layer {
 public:
  explicit Activation(ActivationKind kind) : kind_(kind) {}
  std::string kind() const override { return activation_name(kind_); }
  Eigen::Index output_size(Eigen::Index input_size) const override { return input_size; }
  void forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
               const ForwardContext& context) override;
  void backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                const Eigen::Ref<const Eigen::MatrixXf>& y,
                const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                bool param_grads) override;

 private:
  ActivationKind kind_;
};

/// Inverted dropout: in training, each element is kept with probability 1 - p and scaled by
/// 1 / (1 - p); identity in evaluation. The mask is a pure function of (seed, step, element), so a
/// resumed run draws the same masks.
class Dropout final : public Layer {
 public:
  Dropout(std::string name, float p, std::uint64_t seed);
  std::string kind() const override { return "dropout"; }
  Eigen::Index output_size(Eigen::Index input_size) const override { return input_size; }
  void forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
               const ForwardContext& context) override;
  void backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                const Eigen::Ref<const Eigen::MatrixXf>& y,
                const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                bool param_grads) override;

 private:
  float p_;
  std::uint64_t seed_;
  bool active_ = false;   // the last forward was in training mode with p > 0
  Eigen::MatrixXf mask_;  // 0 or 1/(1-p), the shape of the last input
};

/// Sparse graph convolution over all nodes at once (one node per column):
/// Y = W X Â + b, with Â the (normalised) adjacency, nodes x nodes. Computed as (W X) Â: the dense
/// product shrinks the feature dimension before the sparse one, and backward needs no cache:
/// G = dY Âᵀ, dW = G Xᵀ, dX = Wᵀ G.
class GraphConv final : public Layer {
 public:
  GraphConv(std::string name, std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency,
            Eigen::Index n_in, Eigen::Index n_out, std::uint64_t seed, Init init = Init::kGlorot);
  std::string kind() const override { return "graph_conv"; }
  Eigen::Index output_size(Eigen::Index input_size) const override;
  void forward(const Eigen::Ref<const Eigen::MatrixXf>& x, Eigen::MatrixXf& y,
               const ForwardContext& context) override;
  void backward(const Eigen::Ref<const Eigen::MatrixXf>& x,
                const Eigen::Ref<const Eigen::MatrixXf>& y,
                const Eigen::Ref<const Eigen::MatrixXf>& dy, Eigen::MatrixXf* dx,
                bool param_grads) override;
  std::vector<Param*> params() override { return {&weight_, &bias_}; }
  Param& weight() { return weight_; }
  Param& bias() { return bias_; }

 private:
  std::shared_ptr<const Eigen::SparseMatrix<float>> adjacency_;
  Eigen::SparseMatrix<float> adjacency_t_;
  Param weight_;
  Param bias_;
  Eigen::MatrixXf projected_;  // W X, reused between calls to save allocations
  Eigen::MatrixXf spread_;     // dY Âᵀ
};

}  // namespace opu::trainer

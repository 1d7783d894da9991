#!/usr/bin/python3
"""An independent numpy re-implementation of the paper's DFA example, to cross-check opu-train.

It follows TinyDFA's MNIST example (docs/design.md §4) written from scratch: 784-256-256-10 ReLU,
PyTorch's default nn.Linear initialisation (weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
SGD with PyTorch's momentum (v = mu v + g; w -= lr v), batch 128, softmax cross-entropy averaged
over the batch, one feedback matrix B ~ U[-1, 1) of 10 x 256 whose projection e B / sqrt(256)
reaches both hidden layers after their ReLU (delta_l = (e B / 16) * relu'(a_l)); only the top
layer sees its true gradient. The data and random streams differ from opu-train's, so it agrees
in distribution (mean over seeds), not bit for bit.

Not part of the build or the tests (numpy is not a project dependency):
    apt-get install python3-numpy
    scripts/tinydfa_numpy.py --method dfa --seed 1 --normalize 0.2860 0.3530

docs/results.md records what it prints next to opu-train's figures.
"""
import argparse
import gzip

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/"


def read_idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load(data_dir, split, mean, std):
    images = read_idx(f"{data_dir}/{split}-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    labels = read_idx(f"{data_dir}/{split}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return (images.astype(np.float32) / 255 - mean) / std, labels


def linear(rng, n_in, n_out):
    bound = 1 / np.sqrt(n_in)
    return [rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32),
            rng.uniform(-bound, bound, n_out).astype(np.float32)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["bp", "dfa", "shallow"], default="dfa")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--normalize", type=float, nargs=2, default=[0.2860, 0.3530],
                        metavar=("MEAN", "STD"), help="Fashion-MNIST's own statistics by default")
    parser.add_argument("--data", default=FASHION_MNIST)
    args = parser.parse_args()

    x_train, y_train = load(args.data, "train", *args.normalize)
    x_test, y_test = load(args.data, "t10k", *args.normalize)
    rng = np.random.default_rng(args.seed)
    params = linear(rng, 784, 256) + linear(rng, 256, 256) + linear(rng, 256, 10)
    velocity = [None] * len(params)
    feedback = rng.random((10, 256), dtype=np.float32) * 2 - 1

    def forward(x):
        a1 = x @ params[0] + params[1]
        h1 = np.maximum(a1, 0)
        a2 = h1 @ params[2] + params[3]
        h2 = np.maximum(a2, 0)
        return a1, h1, a2, h2, h2 @ params[4] + params[5]

    learning = range(4, 6) if args.method == "shallow" else range(6)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        loss_sum = 0.0
        for start in range(0, len(order), 128):
            batch = order[start:start + 128]
            x, y, n = x_train[batch], y_train[batch], len(batch)
            a1, h1, a2, h2, logits = forward(x)
            shifted = logits - logits.max(1, keepdims=True)
            p = np.exp(shifted)
            total = p.sum(1, keepdims=True)
            loss_sum += (np.log(total[:, 0]) - shifted[np.arange(n), y]).sum()
            p /= total
            e = p
            e[np.arange(n), y] -= 1
            e /= n
            if args.method == "bp":
                d2 = (e @ params[4].T) * (a2 > 0)
                d1 = (d2 @ params[2].T) * (a1 > 0)
            else:
                projection = e @ feedback / np.sqrt(256.0)
                d2 = projection * (a2 > 0)
                d1 = projection * (a1 > 0)
            grads = [x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ e, e.sum(0)]
            for k in learning:
                velocity[k] = grads[k] if velocity[k] is None else 0.9 * velocity[k] + grads[k]
                params[k] -= args.lr * velocity[k]
        accuracy = (forward(x_test)[4].argmax(1) == y_test).mean()
        print(f"{args.method} seed {args.seed} epoch {epoch} train_loss "
              f"{loss_sum / len(order):.4f} test {accuracy * 100:.2f}", flush=True)


if __name__ == "__main__":
    main()

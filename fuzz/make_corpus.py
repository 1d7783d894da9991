#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/: valid inputs of every kind, and edge cases.

Run from anywhere (it rewrites the seeds, the same bytes every time):
  python3 fuzz/make_corpus.py
Needs protoc (protobuf-compiler) for the server's requests: protoc --encode serialises each
request from its text format, so the seeds are exactly what a client would send. Deterministic:
rerunning it rewrites the same bytes.
"""
import base64
import gzip
import io
import json
import pathlib
import struct
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def encode(message, text):
    return subprocess.run(
        ["protoc", "--encode=opu.v1." + message, "-I", str(ROOT / "proto"), "opu/v1/opu.proto"],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def octal(data):
    return "".join("\\%03o" % b for b in data)


def floats(values):
    return octal(struct.pack("<%df" % len(values), *values))


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# Control byte (fuzz/server_fuzz.cpp): bits 0-1 the RPC (0 GetInfo, 1 Transform, 2 TransformStream,
# 3 LinearTransform), bit 2 ideal camera, bit 3 12-bit ADC, bit 4 --serve-linear false.
GET_INFO, TRANSFORM, STREAM, LINEAR = 0, 1, 2, 3
IDEAL, BITS12, NO_LINEAR = 4, 8, 16


def transform(n_in, n_out, batch, inputs, extra=""):
    return encode("TransformRequest", 'n_in: %d n_out: %d batch: %d inputs: "%s" request_id: 42 %s'
                  % (n_in, n_out, batch, octal(inputs), extra))


def linear(n_in, n_out, batch, values, extra):
    return encode("LinearTransformRequest", 'n_in: %d n_out: %d batch: %d values: "%s" request_id: 7 %s'
                  % (n_in, n_out, batch, floats(values), extra))


def server():
    frames = bytes(range(0x11, 0x11 + 20))  # 2 frames of 80 mirrors
    seeds = {
        "get_info": bytes([GET_INFO]),
        "transform": bytes([TRANSFORM]) + transform(80, 24, 2, frames),
        "transform_ideal_12bit": bytes([TRANSFORM | IDEAL | BITS12]) + transform(80, 24, 2, frames),
        "transform_13_mirrors": bytes([TRANSFORM]) + transform(13, 5, 1, b"\xff\x1f", "exposure_us: 250"),
        "transform_max_batch": bytes([TRANSFORM]) + transform(80, 24, 4, frames * 2),
        "transform_padding_bits_set": bytes([TRANSFORM]) + transform(13, 5, 1, b"\xff\xff"),
        "transform_short_inputs": bytes([TRANSFORM]) + transform(80, 24, 2, frames[:19]),
        "transform_batch_above_max": bytes([TRANSFORM]) + transform(80, 24, 5, frames * 2 + frames[:10]),
        "transform_n_in_above_max": bytes([TRANSFORM]) + transform(81, 24, 1, bytes(11)),
        "transform_zero_sizes": bytes([TRANSFORM]) + transform(0, 0, 0, b""),
        "transform_negative_batch": bytes([TRANSFORM]) + transform(8, 1, -1, b"\x01"),
        "transform_exposure_nan": bytes([TRANSFORM]) + transform(8, 1, 1, b"\x01", "exposure_us: nan"),
        "transform_exposure_huge": bytes([TRANSFORM]) + transform(8, 1, 1, b"\x01", "exposure_us: 1e300"),
        "linear_ternary": bytes([LINEAR]) + linear(
            4, 24, 2, [0.5, -1.0, 0.25, 0.0, 3.0, 2.0, -2.0, 0.01], "encoding: TERNARY threshold: 0.1"),
        "linear_bitplanes": bytes([LINEAR | BITS12]) + linear(
            3, 8, 1, [1.0, -0.5, 0.125], "encoding: BITPLANES bitplanes: 4 repeats: 2 reference_repeats: 16"),
        "linear_stochastic_shared": bytes([LINEAR | IDEAL]) + linear(
            2, 24, 3, [1, 0, 1, 0, 0, -1],
            "encoding: STOCHASTIC bitplanes: 2 dither_seed: 3 share_frames: true reference_max_age_s: 1.0 "
            "exposure_us: 300"),
        "linear_frames_only_device": bytes([LINEAR | NO_LINEAR]) + linear(1, 1, 1, [1.0], "encoding: TERNARY"),
        "linear_nan_value": bytes([LINEAR]) + linear(2, 4, 1, [1.0, float("nan")], "encoding: TERNARY"),
        "linear_encoding_unset": bytes([LINEAR]) + linear(1, 4, 1, [1.0], ""),
        "linear_encoding_unknown": bytes([LINEAR]) + linear(1, 4, 1, [1.0], "encoding: 9"),
        "linear_bitplanes_17": bytes([LINEAR]) + linear(1, 4, 1, [1.0], "encoding: BITPLANES bitplanes: 17"),
        "linear_repeats_65": bytes([LINEAR]) + linear(1, 4, 1, [1.0], "encoding: TERNARY repeats: 65"),
        "linear_reference_repeats_2000": bytes([LINEAR]) + linear(
            1, 4, 1, [1.0], "encoding: TERNARY reference_repeats: 2000"),
        "linear_threshold_1_5": bytes([LINEAR]) + linear(1, 4, 1, [1.0], "encoding: TERNARY threshold: 1.5"),
        "linear_too_many_features": bytes([LINEAR]) + linear(80, 4, 1, [0.5] * 80, "encoding: TERNARY"),
        "linear_negative_age": bytes([LINEAR]) + linear(
            1, 4, 1, [1.0], "encoding: TERNARY reference_max_age_s: -1"),
        "linear_values_short": bytes([LINEAR]) + encode(
            "LinearTransformRequest", 'n_in: 2 n_out: 4 batch: 1 values: "\\000\\000" encoding: TERNARY'),
    }
    good = transform(80, 24, 2, frames)
    bad = transform(80, 24, 2, frames[:3])
    seeds["stream_two"] = bytes([STREAM]) + varint(len(good)) + good + varint(len(good)) + good
    seeds["stream_then_bad"] = bytes([STREAM]) + varint(len(good)) + good + varint(len(bad)) + bad
    seeds["stream_truncated_frame"] = bytes([STREAM]) + varint(len(good) + 5) + good
    seeds["stream_empty"] = bytes([STREAM])
    for name, data in seeds.items():
        write("server", name, data)


def idx_bytes(dims, data):
    header = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + bytes(data)


def gz(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(data)
    return out.getvalue()


def idx():
    images = idx_bytes([3, 4, 4], [(7 * i) % 256 for i in range(48)])
    labels = idx_bytes([3], [0, 9, 4])
    seeds = {
        "images_3x4x4": images,
        "labels_3": labels,
        "images_3x4x4.gz": gz(images),
        "labels_3.gz": gz(labels),
        "features_2x5": idx_bytes([2, 5], range(10)),
        "four_dims": idx_bytes([1, 2, 2, 2], range(8)),
        "truncated_data": images[:-1],
        "trailing_byte": images + b"\x00",
        "truncated_header": images[:9],
        "zero_dimension": idx_bytes([3, 0], []),
        "int32_type": bytes([0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 5]),
        "five_dims": bytes([0, 0, 8, 5]) + b"\x00\x00\x00\x01" * 5 + b"\x07",
        "gzip_truncated": gz(images)[:-6],
        "gzip_two_members": gz(images[:20]) + gz(images[20:]),
    }
    for name, data in seeds.items():
        write("idx", name, data)


def texts(target, seeds):
    for name, text in seeds.items():
        write(target, name, text.encode())


def device_uri():
    texts("device_uri", {
        "sim_default": "sim://",
        "sim_ideal": "sim://?seed=7&n_in=64&n_out=32&camera=ideal",
        "sim_realistic_12bit": "sim://?camera=realistic&adc_bits=12&exposure_us=200&drift_tau_s=0.5&n_in=40&n_out=20",
        "sim_streamed": "sim:///?n_in=10&n_out=3&medium=streamed&noise_seed=5",
        "sim_noiseless": "sim://?n_in=8&n_out=4&medium=dense&read_noise=off&shot_noise=off&dark_offset_counts=0",
        "sim_camera_model": "sim://?n_in=16&n_out=16&photons_per_us=0.5&gain_e_per_count=2&read_noise_e=3"
                            "&exact_shot_noise=true&readout_us=0&overhead_us=0",
        "sim_linear_settings": "sim://?n_in=32&n_out=8&reference_blocks=4&dark_pixel_fraction=0.1"
                               "&target_fill=0.5&reference_repeats=16&max_batch=2&threads=2",
        "sim_largest": "sim://?n_in=2147483648&n_out=2147483648&medium=structured&fft_planning=measure",
        "sim_long_exposure": "sim://?adc_bits=1&n_in=3&n_out=1&exposure_us=1e9&max_exposure_us=1e9",
        "sim_zero_n_in": "sim://?n_in=0",
        "sim_unknown": "sim://?frob=1",
        "sim_host": "sim://host/path",
        "sim_not_pair": "sim://?seed",
        "sim_empty_pairs": "sim://?&&seed=1&",
        "sim_bad_bool": "sim://?realtime=maybe",
        "sim_bad_number": "sim://?exposure_us=inf",
        "grpc_one": "grpc://127.0.0.1:50051",
        "grpc_replicas": "grpc://h1:1,h2:2?deadline_ms=100&retries=3&backoff_ms=10&max_message_mb=4",
        "grpcs_name": "grpcs://opu.lab:443?server_name=opu.lab",
        "grpc_ipv6": "grpc://[::1]:50051/",
        "grpc_no_port": "grpc://host",
        "grpc_port_zero": "grpc://host:0",
        "grpc_ca_plaintext": "grpc://h:1?ca=cert.pem",
        "grpc_missing_token": "grpc://h:1?token=no-such-token-file",
        "grpc_empty_address": "grpc://h:1,?retries=1",
        "grpc_unclosed_ipv6": "grpc://[::1:5",
        "grpc_path": "grpc://h:1/v1/device",
        "grpc_zero_retries": "grpc://h:1?retries=0",
        "unknown_scheme": "unknown://x",
        "empty": "",
    })


def serve_config():
    texts("serve_config", {
        "readme_example": '{"listen": "0.0.0.0:50051", "seed": 7, "camera": "ideal", "adc_bits": 12, '
                          '"token_file": "/etc/opu/token"}',
        "server_settings": '{"listen": "127.0.0.1:0", "max-message-mb": 16, "max_inflight": 8, '
                           '"serve_linear": false, "log_level": "debug", "summary_interval_s": 0, '
                           '"shutdown_grace_s": 2.5, "n_in": 256, "n_out": 64, "drift-tau-s": 0.25}',
        "calibration": '{"calibration": "cal.json", "seed": 3, "max_batch": 512}',
        "smallest_message": '{"max_message_mb": 0.004}',
        "tls_without_key": '{"tls_cert": "cert.pem"}',
        "sim_bool_as_seed": '{"seed": true}',
        "fractional_n_in": '{"n_in": 1.5}',
        "many_inflight": '{"max_inflight": 1e7}',
        "not_object": '[]',
        "nested": '{"nested": {"a": 1}}',
        "null_value": '{"seed": null}',
        "negative_grace": '{"shutdown_grace_s": -1}',
        "unterminated": '{"listen": ',
        "empty": '',
    })


def calibration_file():
    def b64(values):
        return base64.b64encode(struct.pack("<%df" % len(values), *values)).decode()

    device = {"uri": "sim://?seed=7&n_in=64&n_out=32", "model": "opu-sim dense 64x32", "simulated": True,
              "max_n_in": 64, "max_n_out": 32, "adc_bits": 8}
    noise = {"gain_e_per_count": 40.2, "gain_stderr": 0.3, "read_noise_e": 10.1, "read_noise_stderr": 0.2,
             "read_noise_counts": 0.25, "read_noise_ptc_e": 9.5, "dark_level_counts": 2.0,
             "dark_level_stderr": 0.01, "dark_spread_counts": 0.0, "saturation_counts": 255,
             "saturation_e": 10120, "exposures_us": [100, 200, 400], "points_used": 96,
             "fit_reduced_chi2": 1.1, "frames": 300, "device_time_s": 0.15}
    exposure = {"exposure_us": 321.5, "percentile": 99.9, "target_fraction": 0.8, "achieved_fraction": 0.79,
                "saturated_fraction": 0.0, "density": 0.5, "n_in": 64, "n_out": 32, "dark_level_counts": 2.0,
                "masked_pixels": [3, 17], "frames": 40, "device_time_s": 0.02}
    tm = {"n_in": 2, "n_out": 2, "column_offset": 0, "exposure_us": 321.5,
          "units": "sqrt(counts above dark at exposure_us); up to a per-row phase and conjugation",
          "matrix_layout": "row-major n_out x n_in, re then im",
          "matrix_re": b64([0.5, -1.25, 2.0, 0.0]), "matrix_im": b64([0.0, 0.75, -0.5, 1.0]),
          "dark_counts": b64([2.0, 2.5]), "anchors": 4, "signals_per_shell": 8, "gn_iterations": 3,
          "init_correlation": 0.9, "fit_correlation": 0.99, "seed": 18446744073709551615,
          "frames": 64, "device_time_s": 0.03, "wall_time_s": 0.5}
    verify = {"correlation": 0.98, "correlation_ceiling": 0.99, "relative_error": 0.05,
              "conjugated_rows": 0.5, "truth_scale": 1.01, "relative_error_rescaled": 0.04,
              "held_out": 32, "density": 0.5, "seed": 9, "frames": 32, "device_time_s": 0.016}
    drift = {"lag_s": [0, 1, 2], "correlation": [1.0, 0.7, 0.4], "decorrelation_time_s": 1.6,
             "threshold": 0.9, "recalibrate_after_s": 0.4, "noise_ceiling": 0.99, "interval_s": 1,
             "duration_s": 2, "frames": 6, "device_time_s": 2.0}

    def doc(**sections):
        return json.dumps({"format": "opu-calibration", "version": 1, **sections}, indent=2) + "\n"

    texts("calibration_file", {
        "every_section": doc(device=device, noise=noise, exposure=exposure, tm=tm, verify=verify, drift=drift),
        "exposure_only": doc(exposure=exposure),
        "empty_document": doc(),
        "newer_version": json.dumps({"format": "opu-calibration", "version": 2}),
        "wrong_format": json.dumps({"format": "other", "version": 1}),
        "tm_bad_base64": doc(tm={**tm, "matrix_re": "AAA*AAAAAAAAAAAAAAAAAAAA"}),
        "tm_short_matrix": doc(tm={**tm, "matrix_im": b64([0.0, 1.0])}),
        "tm_nan": doc(tm={**tm, "dark_counts": b64([float("nan"), 1.0])}),
        "tm_too_large": doc(tm={**tm, "n_in": 1 << 24, "n_out": 1 << 24}),
        "masked_pixel_beyond": doc(exposure={**exposure, "masked_pixels": [32]}),
        "masked_unsorted": doc(exposure={**exposure, "masked_pixels": [17, 3, 17]}),
        "drift_lengths_differ": doc(drift={**drift, "correlation": [1.0]}),
        "negative_seed": doc(verify={**verify, "seed": -1}),
        "fraction_as_integer": doc(device={**device, "max_n_in": 64.5}),
        "not_object": "[1, 2]",
        "not_json": "{\"format\": ",
    })


def train_config():
    texts("train_config", {
        "mlp_device": json.dumps({"model": "mlp", "method": "dfa", "epochs": 2, "batch": 64, "lr": 0.01,
                                  "hidden": [256, 256], "feedback": "sim://?camera=realistic&n_out=256",
                                  "encoding": "stochastic", "bitplanes": 2, "repeats": 4,
                                  "reference-repeats": 256, "reference_max_age": 0, "share-frames": True}),
        "gcn_bp": json.dumps({"model": "gcn", "dataset": "cora", "method": "bp", "weight_decay": 5e-4,
                              "dropout": 0.5, "input-dropout": 0.5, "optimizer": "adam"}),
        "noisy_digital": json.dumps({"feedback": "digital-noisy", "feedback-snr": 10, "seed": 3,
                                     "normalize": [0.286, 0.353], "activation": "tanh", "loss": "mse"}),
        "literal_scheme": json.dumps({"encoding": "ternary", "threshold": 0.1, "share_frames": False,
                                      "repeats": 1, "reference-repeats": 0, "align-every": 0}),
        "paths": json.dumps({"data": "/tmp/data", "metrics": "m.jsonl", "checkpoint": "ck", "resume": True,
                             "calibration": "cal.json", "threads": 2, "log-level": "info"}),
        "huge_epochs": '{"epochs": 1e300}',
        "fractional_batch": '{"batch": 2.5}',
        "negative_seed": '{"seed": -1}',
        "null_lr": '{"lr": null}',
        "string_number": '{"epochs": "3"}',
        "bad_hidden": '{"hidden": [-1, 0]}',
        "unknown": '{"frob": 1}',
        "resume_without_checkpoint": '{"resume": true}',
        "not_object": '[]',
        "not_json": '{"epochs": }',
    })


def study_spec():
    texts("study_spec", {
        "readme_mlp": "device sim://?n_out=64\nsweep adc_bits=2,4,8\nsweep full_well_e=300,1000\n"
                      "sweep snr=0.3,1,3\nseeds 1,2\ncontrols exact,matched\n"
                      'config {"epochs": 1, "hidden": [16]}\ntrain lr=0.05\n',
        "gcn": 'config {"model": "gcn", "epochs": 3}\nsweep read_noise_e=10,100,1000\nseeds 1,2,3\n',
        "remote_feedback": "device grpc://h:50051\ndevice grpc://h:50052\nsweep threshold=0.05,0.1,0.2\n",
        "ranges": "sweep adc_bits=1:12\nsweep snr=0.5:2:0.5\nsweep bitplanes=1:4\n",
        "encodings": "sweep encoding=ternary,bitplanes,stochastic\ntrain repeats=2\n",
        "device_on_remote": "device grpc://h:1\nsweep adc_bits=2,4\n",
        "repeated_value": "sweep adc_bits=2,2\n",
        "empty_range": "sweep adc_bits=8:2\n",
        "bad_train": "train epochs\nsweep adc_bits=2\n",
        "bp_method": 'config {"method": "bp"}\ncontrols exact\n',
        "nothing": "seeds 1\n",
    })


def planetoid():
    texts("planetoid", {
        "small_graph": "0\t0 2\n1\t1\n-1\t\n1\t0 1 2\n%%\n0 1\n1 2\n2 3\n%%\n1\n1\n0\n3\n",
        "crlf": "0\t0\r\n1\t1\r\n%%\n0 1\r\n%%\n1\r\n2\r\n",
        "duplicate_edges": "0\t0\n1\t1\n2\t0 1\n%%\n0 1\n0 1\n1 2\n%%\n1\n2\n3\n",
        "edge_out_of_range": "0\t0\n1\t1\n%%\n0 5\n%%\n1\n1\n",
        "self_loop": "0\t0\n1\t1\n%%\n1 1\n%%\n1\n1\n",
        "split_short": "0\t0\n1\t1\n%%\n0 1\n%%\n1\n",
        "unlabelled_in_split": "0\t0\n-1\t1\n1\t0\n%%\n0 1\n%%\n1\n3\n1\n",
        "malformed_content": "zero\t0\n%%\n%%\n1\n",
        "one_class": "0\t0\n0\t1\n%%\n%%\n1\n1\n",
        "bad_split_value": "0\t0\n1\t1\n%%\n%%\n1\n4\n",
        "no_edges_file": "0\t0\n1\t1\n",
    })


if __name__ == "__main__":
    server()
    idx()
    device_uri()
    serve_config()
    calibration_file()
    train_config()
    study_spec()
    planetoid()

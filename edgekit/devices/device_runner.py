"""Runs on the DEVICE (a Linux board with Python, or the emulated test device): times one model
with the LiteRT interpreter or ONNX Runtime and prints one JSON line. Standard library + numpy +
the runtime only; it is pushed next to the model by ``edgekit.devices.adb_bench``.

    python3 device_runner.py --model m.tflite --threads 2 --warmup 5 --runs 50
"""

import argparse
import json
import platform
import sys
import time


def _random_input(shape, dtype, rng):
    import numpy as np

    shape = [d if isinstance(d, int) and d > 0 else 1 for d in shape]  # dynamic dims -> 1
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 8, shape).astype(dtype)


def _litert(path, threads, rng):
    try:
        from ai_edge_litert.interpreter import Interpreter
        version = "ai-edge-litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter  # older boards
        version = "tflite-runtime"
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], _random_input(d["shape"].tolist(), d["dtype"], rng))
    return "litert-interpreter", version, interp.invoke


def _onnxruntime(path, threads, rng):
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    config = json.loads(sess.get_modelmeta().custom_metadata_map.get("onnxruntime_session_config", "{}"))
    if config:  # what the model's metadata asks apps to set (int8-weight: fold int8 weights at load)
        for key, value in config.items():
            opts.add_session_config_entry(key, value)
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    feeds = {i.name: _random_input(i.shape, types[i.type], rng) for i in sess.get_inputs()}
    return "onnxruntime", "onnxruntime " + ort.__version__, lambda: sess.run(None, feeds)


RUNTIMES = {".tflite": _litert, ".onnx": _onnxruntime}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)
    suffix = "." + args.model.rsplit(".", 1)[-1].lower()
    try:
        import numpy as np

        make = RUNTIMES[suffix]
        runtime, version, run = make(args.model, args.threads, np.random.default_rng(0))
    except KeyError:
        return _fail(f"no runtime for {suffix} files; use .tflite or .onnx")
    except ImportError as exc:
        return _fail(f"the device's Python lacks a runtime for {suffix}: {exc} "
                     "(install ai-edge-litert or onnxruntime, and numpy, on the device)")
    for _ in range(args.warmup):
        run()
    samples = []
    for _ in range(args.runs):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    print(json.dumps({"runtime": runtime, "runtime_version": version, "samples_ms": samples,
                      "warmup": args.warmup, "threads": args.threads, "python": platform.python_version(),
                      "machine": platform.machine()}))
    return 0


def _fail(message):
    print(json.dumps({"error": message}))
    return 2


if __name__ == "__main__":
    sys.exit(main())

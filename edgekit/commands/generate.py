"""`edgekit generate BUNDLE|CHECKPOINT --prompt TEXT`: stream bytes through the step graph."""

from __future__ import annotations

import argparse
import codecs
import sys

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json
from edgekit.commands.validate import float_in, int_in, non_negative_int, positive_int


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a bundle with a step artifact (runs in ONNX Runtime / LiteRT) or a checkpoint (PyTorch)")
    p.add_argument("--prompt", required=True, help="text to start from (UTF-8)")
    p.add_argument("--max-bytes", type=int_in(0, 1_000_000), default=200, help="bytes to generate after the prompt (default 200)")
    p.add_argument("--format", help="which step artifact of a bundle: onnx, tflite, ... (default: the first that runs)")
    p.add_argument("--temperature", type=float_in(0, 100), default=0.0, help="0 = greedy (default); e.g. 0.8 samples")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample only from the k most likely bytes (0 = all)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=positive_int, default=2, help="runtime threads (default 2)")
    add_json_flag(p)


@command("generate", "stream bytes from a byte-level LM through its step artifact (or PyTorch)", configure)
def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgekit import open_step_session
    from edgekit.progress import status

    session = open_step_session(args.model, args.format, args.threads)
    prompt = args.prompt.encode()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = bytearray()
    if not args.json:
        sys.stdout.write(args.prompt)
    for byte in session.generate(prompt, args.max_bytes, temperature=args.temperature, top_k=args.top_k,
                                 seed=args.seed):
        out.append(byte)
        if not args.json:
            sys.stdout.write(decoder.decode(bytes([byte])))
            sys.stdout.flush()
    ms = float(np.median(session.step_ms)) if session.step_ms else 0.0
    if args.json:
        print_json({"prompt": args.prompt, "text": out.decode("utf-8", errors="replace"), "bytes": len(out),
                    "runtime": session.runtime, "artifact": session.artifact, "median_step_ms": ms})
    else:
        sys.stdout.write(decoder.decode(b"", final=True) + "\n")
        status(f"{len(out)} bytes via {session.artifact} ({session.runtime}): median {ms:.3f} ms per step")
    return 0

"""`edgekit generate BUNDLE|CHECKPOINT --prompt TEXT`: stream bytes through the step graph."""

from __future__ import annotations

import argparse
import codecs
import sys

from edgekit.commands.base import command
from edgekit.commands.output import add_json_flag, print_json


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a bundle with a step artifact (runs in ONNX Runtime / LiteRT) or a checkpoint (PyTorch)")
    p.add_argument("--prompt", required=True, help="text to start from (UTF-8)")
    p.add_argument("--max-bytes", type=int, default=200, help="bytes to generate after the prompt (default 200)")
    p.add_argument("--format", help="which step artifact of a bundle: onnx, tflite, ... (default: the first that runs)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); e.g. 0.8 samples")
    p.add_argument("--top-k", type=int, default=0, help="sample only from the k most likely bytes (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    add_json_flag(p)


@command("generate", "stream bytes from a byte-level LM through its step artifact (or PyTorch)", configure)
def run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgekit.errors import EdgekitError
    from edgekit.generate import generate, open_step_session
    from edgekit.progress import status

    if args.max_bytes < 0:
        raise EdgekitError(f"--max-bytes must be at least 0, got {args.max_bytes}")
    session = open_step_session(args.model, args.format, args.threads)
    prompt = args.prompt.encode()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = bytearray()
    if not args.json:
        sys.stdout.write(args.prompt)
    for byte in generate(session, prompt, args.max_bytes, temperature=args.temperature, top_k=args.top_k,
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

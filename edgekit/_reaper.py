"""Watches an edgekit process from outside: when it dies inside ``quiet()`` (a native library called
``_exit``/``abort``, or it was killed), says so on the original stderr and removes its staging folders.

Run by ``edgekit/quiet.py`` as ``python -I _reaper.py`` with a pipe on stdin. Each line is JSON:
``{"armed": true, "target": ..., "format": ..., "remove": [[path, is_lock], ...]}`` or ``{"armed": false}``.
End of input while armed means the process ended mid-write. Standard library only, nothing imported
from edgekit, so it starts in milliseconds.
"""

import json
import os
import shutil
import sys


def reason(state: dict) -> str:
    target, fmt = state.get("target"), state.get("format") or "a"
    who = f"the {fmt} converter" if state.get("format") else "a converter"
    where = f" while writing {target}" if target else ""
    try:
        st = os.statvfs(os.path.dirname(target) or ".") if target else None
    except OSError:
        st = None
    if st is not None and st.f_bavail * st.f_frsize < 1 << 20:
        free = st.f_bavail * st.f_frsize // 1024
        return f"no space left on device{where} ({free} kB free); {who}'s native code ended the process"
    return f"edgekit ended{where}: {who}'s native code exited or aborted, or the process was killed"


def main() -> None:
    state: dict = {"armed": False}
    for line in sys.stdin:
        try:
            state = json.loads(line)
        except ValueError:
            continue
    if not state.get("armed"):
        return
    try:
        sys.stderr.write(f"edgekit: error: {reason(state)}\n")
        sys.stderr.flush()
    finally:
        for path, is_lock in state.get("remove", []):
            if is_lock:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            else:
                shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()

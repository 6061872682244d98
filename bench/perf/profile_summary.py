"""Summarise a py-spy raw (collapsed-stack) profile: the hottest functions, self and inclusive.

    py-spy record -f raw -o prof.txt --pid PID -d 10
    python bench/perf/profile_summary.py prof.txt [--filter tierline] [--top 25]

Inclusive % counts a function once per sample it is on the stack; self % counts the leaf
frame. `--filter` keeps functions whose file path contains the string (e.g. `tierline/`).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _key(frame: str) -> str:
    m = _FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    for marker in ("site-packages/", "/src/", "lib/python3.11/"):
        if marker in f:
            f = f.split(marker, 1)[1]
            break
    return f"{f}:{m.group('func')}"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    incl: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_key(f) for f in stack.split(";") if f]
        for k in set(frames):
            incl[k] += count
        if frames:
            self_[frames[-1]] += count
    return total, incl, self_


def render(path: Path, filt: str | None, top: int) -> str:
    total, incl, self_ = summarise(path)
    if total == 0:
        return f"{path}: no samples\n"
    keep: Callable[[str], bool] = (lambda k: filt in k) if filt else (lambda k: True)
    out = [f"{path}: {total} samples", "", "inclusive %  self %  function"]
    rows = sorted((k for k in incl if keep(k)), key=lambda k: -incl[k])[:top]
    for k in rows:
        out.append(f"{100 * incl[k] / total:10.1f}  {100 * self_[k] / total:6.1f}  {k}")
    out += ["", "top self time (all code):"]
    for k, v in self_.most_common(top):
        out.append(f"{100 * v / total:6.1f}  {k}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile", type=Path)
    ap.add_argument("--filter", default=None)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    print(render(a.profile, a.filter, a.top), end="")


if __name__ == "__main__":
    main()

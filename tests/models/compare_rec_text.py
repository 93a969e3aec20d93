"""Do two PP-OCR rec .morsel files read the same text? (README, int8).

Runs `morsel run` on the rec fixture lines (target/models/ocr/rec_inputs.npz,
made by make_ocr_inputs.py) for a reference model and one or more others,
decodes each line greedily (CTC, as tests/quantize.rs does) and prints, per
other model, how many lines read the same as the reference and which differ.

    .venv/bin/python tests/models/compare_rec_text.py [--eval] REF.morsel OTHER.morsel ...

With --eval, the lines are the 40 printed ones of rec_eval.npz instead.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import OCR, OCR_DICT, need

REPO = Path(__file__).resolve().parents[2]
MORSEL = REPO / "target/release/morsel"


def texts(model: Path, x: Path, chars: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([str(MORSEL), "run", str(model), "--input", f"x={x}", "-d", out],
                       check=True, stdout=subprocess.DEVNULL)
        (npy,) = Path(out).glob("*.npy")
        probs = np.load(npy)
    lines = []
    for p in probs:
        idx, prev, s = p.argmax(-1), 0, []
        for k in idx:
            if k != 0 and k != prev:
                s.append(chars[k] if k < len(chars) else " ")
            prev = k
        lines.append("".join(s).strip())
    return lines


def main() -> int:
    args = sys.argv[1:]
    lines = OCR / "rec_inputs.npz"
    if args[:1] == ["--eval"]:
        args, lines = args[1:], OCR / "rec_eval.npz"
    if len(args) < 2:
        print(__doc__)
        return 2
    need(lines, OCR_DICT, MORSEL)
    chars = ["<blank>"] + OCR_DICT.read_text(encoding="utf-8").split("\n") + [" "]
    with tempfile.TemporaryDirectory() as d:
        x = Path(d) / "x.npy"
        np.save(x, np.load(lines)["x"])
        ref = texts(Path(args[0]), x, chars)
        for other in args[1:]:
            got = texts(Path(other), x, chars)
            same = sum(a == b for a, b in zip(ref, got))
            print(f"{other}: the same text as {args[0]} on {same} of {len(ref)} lines ({lines.name})")
            for a, b in zip(ref, got):
                if a != b:
                    print(f"  {a!r} vs {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

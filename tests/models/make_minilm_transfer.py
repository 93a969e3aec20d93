"""MiniLM distillation data (issue 6): unlabeled English sentences, tokenised.

The text is CPython's own English prose, which ships with every Python: the
language reference topics in the standard library's `pydoc_data/topics.py`
(what `help('if')` prints) and the docstrings of the standard library's
modules, classes and functions (read with `ast`, nothing is imported). The
sentences are split out, filtered (6 to 40 words, starts with a capital,
ends with . ! or ?, no code punctuation, at least 90% letters and spaces),
deduplicated, shuffled with a fixed seed, and the first 10,400 written to
tests/models/transfer_sentences.txt, which is committed: that file, not the
interpreter at hand, is the data (it was made with CPython 3.11.7; another
version gives other sentences).

  --extract   rebuild tests/models/transfer_sentences.txt from this Python
  (default)   tokenise it with MiniLM's tokenizer.json, padded/truncated to
              40 tokens (the median sentence has 18), and write to
              target/models/minilm/:
                heldout.npz    the first 400 sentences (never trained on)
                transfer.npz   the next 10,000 (distillation data)
              input_ids, attention_mask, token_type_ids, int64 [N, 40]

Run after build_minilm_onnx.py:  .venv/bin/python tests/models/make_minilm_transfer.py
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

from _common import HERE, MINILM, encode, need, tokenizer

SENTENCES = HERE / "transfer_sentences.txt"
HELDOUT, TRANSFER = 400, 10000
LEN = 40
KEEP = HELDOUT + TRANSFER  # sentences written by --extract (of the ~10,700 found)


def split(text: str, base_indent: int):
    """Sentences of the prose paragraphs of `text` (more deeply indented
    paragraphs are code or literal blocks)."""
    for p in re.split(r"\n\s*\n", text):
        lines = [ln for ln in p.split("\n") if ln.strip()]
        if not lines:
            continue
        if min(len(ln) - len(ln.lstrip()) for ln in lines) > base_indent:
            continue
        s = re.sub(r"\s+", " ", " ".join(ln.strip() for ln in lines)).strip()
        yield from re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(])", s)


def good(s: str) -> bool:
    w = s.split()
    return (6 <= len(w) <= 40 and s[0].isupper() and s[-1] in ".!?"
            and not re.search(r"[*=<>{}\[\]|\\`@#$%^~]|::|__|>>>|\.\.\.", s)
            and sum(c.isalpha() or c == " " for c in s) / len(s) >= 0.9)


def extract() -> list[str]:
    import pydoc_data.topics as topics

    texts = [topics.topics[k] for k in sorted(topics.topics)]
    lib = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip")
    for f in sorted(lib.rglob("*.py")):
        if any(part in skip or part.startswith("test") for part in f.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    seen, out = set(), []
    for t in texts:
        for s in split(t, 3):
            if good(s) and s not in seen:
                seen.add(s)
                out.append(s)
    random.Random(0).shuffle(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--extract", action="store_true")
    args = ap.parse_args()
    if args.extract:
        found = extract()
        out = found[:KEEP]
        head = (f"# {len(out)} (of {len(found)}) English sentences from CPython {sys.version.split()[0]}'s standard library "
                f"(pydoc_data/topics.py and docstrings; PSF license), made by tests/models/make_minilm_transfer.py --extract\n")
        SENTENCES.write_text(head + "\n".join(out) + "\n", encoding="utf-8")
        print(f"{len(out)} sentences -> {SENTENCES}")
        return 0
    need(MINILM / "tokenizer.json")
    lines = SENTENCES.read_text(encoding="utf-8").splitlines()
    sentences = [s for s in lines if s and not s.startswith("#")]
    assert len(sentences) >= HELDOUT + TRANSFER, len(sentences)
    tok = tokenizer(LEN)
    for name, part in (("heldout", sentences[:HELDOUT]), ("transfer", sentences[HELDOUT:HELDOUT + TRANSFER])):
        feeds = encode(tok, part)
        np.savez(MINILM / f"{name}.npz", **feeds)
        n = feeds["attention_mask"].sum(1)
        print(f"{name}.npz: {len(part)} sentences, tokens per row min {n.min()} median {int(np.median(n))} "
              f"max {n.max()} (of {LEN}; {int((n == LEN).sum())} truncated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

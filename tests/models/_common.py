"""Shared paths and helpers for the tests/models/*.py fixture scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("MORSEL_MODELS_DIR", ROOT / "target" / "models"))
MINILM = MODELS / "minilm"
OCR = MODELS / "ocr"
HERE = Path(__file__).resolve().parent

MINILM_ONNX = MINILM / "model.onnx"
OCR_DET = OCR / "ch_PP-OCRv4_det_infer.onnx"
OCR_REC = OCR / "ch_PP-OCRv4_rec_infer.onnx"
OCR_CLS = OCR / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
OCR_DICT = OCR / "ppocr_keys_v1.txt"

SEQ_LEN = 128  # fixed padded length of the MiniLM fixtures


def need(*paths: Path) -> None:
    """Exit with a one-line hint when an input fixture is missing."""
    for p in paths:
        if not p.exists():
            sys.exit(f"error: {p} is missing: run tests/models/README.md's steps in order "
                     f"(bash tests/models/fetch.sh first)")


def tokenizer(fixed_len: int | None = SEQ_LEN):
    """HF `tokenizers` WordPiece tokenizer from the model's own tokenizer.json.

    fixed_len=None: pad each batch to its longest sentence (dynamic shapes);
    otherwise pad/truncate to exactly fixed_len (what tokenizer.json ships: 128).
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    if fixed_len is None:
        tok.no_truncation()
        tok.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
    else:
        tok.enable_truncation(max_length=fixed_len)
        tok.enable_padding(length=fixed_len, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    return tok


def encode(tok, sentences: list[str]) -> dict[str, np.ndarray]:
    encs = tok.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
    }


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def read_sentences() -> list[str]:
    lines = (HERE / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]

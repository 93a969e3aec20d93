"""MiniLM fixture inputs and ONNX Runtime reference outputs.

Reads tests/models/sentences.txt, tokenises it with the model's tokenizer.json
(HF `tokenizers`, padded/truncated to 128), runs target/models/minilm/model.onnx
through ONNX Runtime (ORT_ENABLE_ALL, 1 thread) and writes to target/models/minilm/:

  inputs.npz                     input_ids, attention_mask, token_type_ids  int64 [N, 128]
  ref_last_hidden_state.npy      f32 [N, 128, 384]
  ref_sentence_embedding.npy     f32 [N, 384]
  inputs_b1.npz                  the first sentence alone, [1, 128] (the speed benchmark input)
  ref_b1_last_hidden_state.npy, ref_b1_sentence_embedding.npy
  sentences.txt                  the N sentences, row order

Run after build_minilm_onnx.py:  .venv/bin/python tests/models/make_minilm_reference.py
"""

from __future__ import annotations

import sys

import numpy as np

from _common import MINILM, MINILM_ONNX, SEQ_LEN, encode, need, ort_session, read_sentences, tokenizer


def main() -> int:
    need(MINILM_ONNX, MINILM / "tokenizer.json")
    sentences = read_sentences()
    assert len(sentences) >= 24, len(sentences)
    tok = tokenizer(SEQ_LEN)
    feeds = encode(tok, sentences)
    lengths = feeds["attention_mask"].sum(1)
    full = tokenizer(None)
    raw_len = [len(full.encode(s).ids) for s in sentences]
    sess = ort_session(MINILM_ONNX, threads=1)
    hid, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)

    b1 = {k: v[:1].copy() for k, v in feeds.items()}
    hid1, emb1 = sess.run(["last_hidden_state", "sentence_embedding"], b1)
    d = max(float(np.abs(hid1 - hid[:1]).max()), float(np.abs(emb1 - emb[:1]).max()))

    np.savez(MINILM / "inputs.npz", **feeds)
    np.save(MINILM / "ref_last_hidden_state.npy", hid)
    np.save(MINILM / "ref_sentence_embedding.npy", emb)
    np.savez(MINILM / "inputs_b1.npz", **b1)
    np.save(MINILM / "ref_b1_last_hidden_state.npy", hid1)
    np.save(MINILM / "ref_b1_sentence_embedding.npy", emb1)
    (MINILM / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")

    print(f"{len(sentences)} sentences -> inputs.npz {feeds['input_ids'].shape}; real tokens per row "
          f"min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()} "
          f"(untruncated max {max(raw_len)})")
    print(f"ref_last_hidden_state {hid.shape} |x| max {np.abs(hid).max():.3f}; "
          f"ref_sentence_embedding {emb.shape}, norms {np.linalg.norm(emb, axis=1).min():.6f}.."
          f"{np.linalg.norm(emb, axis=1).max():.6f}")
    print(f"batch-1 run vs row 0 of the batch: max|diff| {d:.3e}")
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1)
    for i in range(min(6, len(sentences))):
        j = int(sim[i].argmax())
        print(f"  nearest to {sentences[i]!r}: {sentences[j]!r} ({sim[i, j]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

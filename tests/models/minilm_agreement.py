"""How close MiniLM variants are to the original on held-out sentences.

    morsel run target/models/minilm/model.onnx -i target/models/minilm/heldout.npz -d ref/
    morsel run variant.morsel -i target/models/minilm/heldout.npz -d variant/
    .venv/bin/python tests/models/minilm_agreement.py target/models/minilm/heldout.npz ref/ variant/ ...

Prints, per variant directory, the mean cosine of last_hidden_state to the
reference's over real tokens and over padding (attention_mask 0), and the
mean and min row cosine of sentence_embedding.
"""
import sys

import numpy as np


def cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def main():
    heldout, ref, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
    mask = np.load(heldout)["attention_mask"].astype(bool)
    t_hidden = np.load(f"{ref}/last_hidden_state.npy")
    t_emb = np.load(f"{ref}/sentence_embedding.npy")
    for d in variants:
        h = cos(np.load(f"{d}/last_hidden_state.npy"), t_hidden)
        e = cos(np.load(f"{d}/sentence_embedding.npy"), t_emb)
        print(
            f"{d}: last_hidden_state real tokens {h[mask].mean():.4f}, padding {h[~mask].mean():.4f}; "
            f"sentence_embedding mean {e.mean():.4f}, min {e.min():.4f}"
        )


if __name__ == "__main__":
    main()

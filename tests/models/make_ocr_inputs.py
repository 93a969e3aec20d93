"""PP-OCR fixture inputs and ONNX Runtime reference outputs, made offline.

Renders text lines two ways: printed text in Pillow's default font (a bundled
FreeType font since Pillow 10.1), and handwritten-digit strings composed from
scikit-learn's `load_digits` 8x8 images (scaled up, dark on light). Then
preprocesses them as PaddleOCR does and runs the three models with ONNX Runtime
(ORT_ENABLE_ALL, 1 thread). Writes to target/models/ocr/:

  det_inputs.npz  x f32 [1,3,640,640]  a white page with several lines; ImageNet mean/std
  rec_inputs.npz  x f32 [N,3,48,320]   one line each, height 48, aspect kept, (v/255-0.5)/0.5,
                                      right-padded with 0 (PaddleOCR's resize_norm_img)
  cls_inputs.npz  x f32 [M,3,48,192]   the same, 192 wide; y int64: 0 upright, 1 rotated 180
  ref_det.npy [1,1,640,640], ref_rec.npy [N,40,6625], ref_cls.npy [M,2]
  rec_labels.txt  the text of each rec line;  det_page.png, rec_lines.png to look at

and prints the op types, opset, inputs and outputs of each graph, ORT's CTC
greedy decoding of the rec lines, the cls accuracy and the det box count.

Run after tests/models/fetch.sh:  .venv/bin/python tests/models/make_ocr_inputs.py
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import onnx

from _common import OCR, OCR_CLS, OCR_DET, OCR_DICT, OCR_REC, need, ort_session

REC_W, CLS_W, H = 320, 192, 48
DET = 640
rng = np.random.default_rng(3)

PRINTED = [
    "Hello World",
    "The quick brown fox",
    "jumps over the lazy dog",
    "Invoice No. 20481",
    "Total: 42.50 EUR",
    "Open 9:00-17:30",
    "Platform 4",
    "Morsel runtime",
    "ONNX model 2024",
    "Tel 0131 496 0757",
    "Fresh bread daily",
    "EXIT",
    "Page 12 of 30",
    "www.example.org",
    "Keep left",
    "Batch 7A-113",
    "Coffee & Tea",
    "No parking",
]
DIGIT_LINES = ["3141592", "2718", "90210", "1234567890", "8675309", "42"]
# A second, larger set of printed lines for the int8 agreement check
# (tests/quantize.rs: the issue asks for >= 20 rendered lines; PRINTED has
# 18). Written before any int8 model read them, and kept whatever it reads.
# Font sizes come from their own generator, so the fixtures above keep
# their bytes.
EVAL_LINES = [
    "Departures", "Gate B12", "Flight LH 2041", "Boarding 14:35", "Seat 23C",
    "Arrivals Hall", "Lost property", "Ticket office", "Mind the gap", "Way out",
    "Pharmacy", "Open 24 hours", "Car park level 3", "Max height 2.1 m", "Pay here",
    "Room 101", "Second floor", "Lift out of order", "Staff only", "Fire exit",
    "Apples 1.99/kg", "Milk 2 L", "Sale -30%", "Best before 12/07", "Receipt #4417",
    "Thank you!", "Cash or card?", "VAT 20%", "Subtotal 18.40", "Change 1.60",
    "Chapter 7", "Table of contents", "Figure 3.2", "See page 58", "Index",
    "Dear Sir or Madam", "Yours sincerely", "Main Street 15", "ZIP 10115", "Call 555-0199",
]


def printed_line(text: str, size: int = 40) -> np.ndarray:
    """Black-on-white text line (uint8 gray), tight box plus a small margin."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    l, t, r, b = font.getbbox(text)
    m = size // 5
    img = Image.new("L", (r - l + 2 * m, b - t + 2 * m), 255)
    ImageDraw.Draw(img).text((m - l, m - t), text, fill=20, font=font)
    return np.asarray(img)


_DIGITS = None


def digit_line(text: str, cell: int = 32) -> np.ndarray:
    """A string of load_digits glyphs (8x8, 0..16), each upscaled to `cell` px, dark on light."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS = {k: d.images[d.target == k] for k in range(10)}
    assert cell % 8 == 0, cell
    gap, m = cell // 8, cell // 4
    out = np.full((cell + 2 * m, m * 2 + len(text) * (cell + gap)), 255, np.uint8)
    for i, ch in enumerate(text):
        imgs = _DIGITS[int(ch)]
        g = imgs[rng.integers(len(imgs))]
        g = np.kron(g, np.ones((cell // 8, cell // 8)))  # nearest-neighbour upscale
        g = _smooth(g)
        x0 = m + i * (cell + gap)
        out[m:m + cell, x0:x0 + cell] = np.clip(255 - g * (235 / 16), 0, 255).astype(np.uint8)
    return out


def _smooth(g: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(g, sigma=1.2)


def resize_gray(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def norm_line(img: np.ndarray, width: int) -> np.ndarray:
    """PaddleOCR resize_norm_img: height 48, width by aspect (capped), (v/255-0.5)/0.5, zero pad right."""
    h, w = img.shape
    rw = min(width, max(1, int(np.ceil(H * w / h))))
    r = resize_gray(img, H, rw).astype(np.float32) / 255.0
    r = (r - 0.5) / 0.5
    out = np.zeros((3, H, width), np.float32)
    out[:, :, :rw] = r[None]
    return out


def det_page(lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """White 640x640 page with the lines pasted at random left offsets, top to bottom."""
    page = np.full((DET, DET), 255, np.uint8)
    y, n = 24, 0
    for img in lines:
        h, w = img.shape
        if w > DET - 40:
            s = (DET - 40) / w
            img = resize_gray(img, max(8, int(h * s)), DET - 40)
            h, w = img.shape
        if y + h > DET - 16:
            break
        x = int(rng.integers(16, DET - w - 16 + 1))
        page[y:y + h, x:x + w] = np.minimum(page[y:y + h, x:x + w], img)
        y += h + int(rng.integers(14, 40))
        n += 1
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    x = (page[None].astype(np.float32) / 255.0 - mean) / std  # gray page: same value in R, G, B
    return page, x[None].astype(np.float32), n


def ctc_greedy(probs: np.ndarray, chars: list[str]) -> tuple[str, float]:
    idx = probs.argmax(-1)
    conf = probs.max(-1)
    out, cs, prev = [], [], -1
    for t, k in enumerate(idx):
        if k != prev and k != 0:
            out.append(chars[k])
            cs.append(conf[t])
        prev = k
    return "".join(out), float(np.mean(cs)) if cs else 0.0


def describe(path) -> None:
    m = onnx.load(str(path))
    ops = Counter(n.op_type for n in m.graph.node)

    def shp(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    opset = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
    print(f"{path.name}: ir_version {m.ir_version}, opset {opset}, {len(m.graph.node)} nodes, "
          f"{len(m.graph.initializer)} initializers, "
          f"{sum(int(np.prod(t.dims)) for t in m.graph.initializer):,} weights")
    for v in m.graph.input:
        print(f"  input  {v.name} {shp(v)}")
    for v in m.graph.output:
        print(f"  output {v.name} {shp(v)}")
    print("  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))))
    # attributes that matter to an implementer
    for op in ("Resize", "Clip", "HardSigmoid", "ConvTranspose", "AveragePool", "MaxPool", "Softmax", "ReduceMean"):
        attrs = Counter()
        for n in m.graph.node:
            if n.op_type == op:
                a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
                a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in a.items()}
                attrs[(str(sorted(a.items())), len(n.input))] += 1
        for (a, nin), c in attrs.items():
            print(f"    {op} x{c}: {nin} inputs, {a}")


def main() -> int:
    need(OCR_DET, OCR_REC, OCR_CLS, OCR_DICT)
    for p in (OCR_DET, OCR_REC, OCR_CLS):
        describe(p)
    print()

    chars = ["<blank>"] + OCR_DICT.read_text(encoding="utf-8").split("\n") + [" "]

    labels = PRINTED + DIGIT_LINES
    imgs = [printed_line(t) for t in PRINTED] + [digit_line(t) for t in DIGIT_LINES]
    rec_x = np.stack([norm_line(im, REC_W) for im in imgs])

    # cls: every other line upright, the rest rotated 180 degrees
    cls_imgs, cls_y = [], []
    for i, im in enumerate(imgs):
        rot = i % 2 == 1
        cls_imgs.append(im[::-1, ::-1] if rot else im)
        cls_y.append(int(rot))
    cls_x = np.stack([norm_line(im, CLS_W) for im in cls_imgs])
    cls_y = np.array(cls_y, np.int64)

    page_lines = [printed_line(t, size=int(rng.integers(24, 40))) for t in PRINTED[:9]]
    page_lines.insert(3, digit_line(DIGIT_LINES[0], cell=24))
    page, det_x, n_lines = det_page(page_lines)

    det = ort_session(OCR_DET)
    rec = ort_session(OCR_REC)
    cls = ort_session(OCR_CLS)
    ref_det = det.run(None, {"x": det_x})[0]
    ref_rec = rec.run(None, {"x": rec_x})[0]
    ref_cls = cls.run(None, {"x": cls_x})[0]

    np.savez(OCR / "det_inputs.npz", x=det_x)
    np.savez(OCR / "rec_inputs.npz", x=rec_x)
    np.savez(OCR / "cls_inputs.npz", x=cls_x, y=cls_y)
    np.save(OCR / "ref_det.npy", ref_det)
    np.save(OCR / "ref_rec.npy", ref_rec)
    np.save(OCR / "ref_cls.npy", ref_cls)
    (OCR / "rec_labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    from PIL import Image

    Image.fromarray(page).save(OCR / "det_page.png")
    strip = np.concatenate([(np.clip(x[0], -1, 1) * 127.5 + 127.5).astype(np.uint8) for x in rec_x[:12]], 0)
    Image.fromarray(strip).save(OCR / "rec_lines.png")

    print(f"det: x {det_x.shape} -> {ref_det.shape}, page with {n_lines} lines")
    from scipy.ndimage import label

    _, nboxes = label(ref_det[0, 0] > 0.3)
    print(f"  probability map: max {ref_det.max():.3f}, {100 * (ref_det > 0.3).mean():.2f}% of pixels > 0.3, "
          f"{nboxes} connected regions (text lines drawn: {n_lines})")

    print(f"rec: x {rec_x.shape} -> {ref_rec.shape} (classes: blank + {len(chars) - 2} dictionary chars + space)")
    exact = 0
    for t, p in zip(labels, ref_rec):
        got, conf = ctc_greedy(p, chars)
        same = got.strip() == t  # a leading space comes from the blank left margin
        exact += same
        print(f"  {t!r:28} -> {got!r:28} conf {conf:.3f}{'' if same else '   (differs)'}")
    print(f"  {exact}/{len(labels)} lines read exactly (ignoring leading/trailing spaces); "
          f"the load_digits lines are 8x8 handwriting, so misreads there are expected")

    pred = ref_cls.argmax(1)
    print(f"cls: x {cls_x.shape} -> {ref_cls.shape}, labels ['0', '180']: "
          f"accuracy {float((pred == cls_y).mean()):.3f} ({int((pred == cls_y).sum())}/{len(cls_y)}); "
          f"printed lines {int((pred == cls_y)[:len(PRINTED)].sum())}/{len(PRINTED)}, "
          f"digit lines {int((pred == cls_y)[len(PRINTED):].sum())}/{len(DIGIT_LINES)}")

    # The int8 agreement set: printed lines at random sizes, one per line.
    sizes = np.random.default_rng(11).integers(28, 49, len(EVAL_LINES))
    eval_x = np.stack([norm_line(printed_line(t, size=int(z)), REC_W) for t, z in zip(EVAL_LINES, sizes)])
    np.savez(OCR / "rec_eval.npz", x=eval_x)
    (OCR / "rec_eval_labels.txt").write_text("\n".join(EVAL_LINES) + "\n", encoding="utf-8")
    ref_eval = rec.run(None, {"x": eval_x})[0]
    exact = sum(ctc_greedy(p, chars)[0].strip() == t for t, p in zip(EVAL_LINES, ref_eval))
    print(f"rec_eval: x {eval_x.shape}, {exact}/{len(EVAL_LINES)} printed lines read exactly by ORT")
    print(f"wrote {OCR}/{{det,rec,cls}}_inputs.npz, ref_{{det,rec,cls}}.npy, rec_labels.txt, det_page.png, rec_lines.png, "
          f"rec_eval.npz, rec_eval_labels.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! The `morsel` binary as users run it: in a shell pipeline, and on a real
//! model whose random timing inputs do not fit it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn morsel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_morsel"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("morsel-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn inspect_into_a_closed_pipe_ends_quietly() {
    // `morsel inspect m | head -1`: the reader goes away before the writer
    // is done. Rust ignores SIGPIPE, so every println! would panic (exit
    // 101, a backtrace on stderr); main() restores the default action.
    let dir = scratch("pipe");
    let m = dir.join("digits.morsel");
    let onnx = repo().join("examples/digits/digits_cnn.onnx");
    let out = morsel()
        .arg("convert")
        .arg(&onnx)
        .arg("-o")
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = morsel()
        .arg("inspect")
        .arg(&m)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // close the read end before anything is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{:?}: {stderr}",
            out.status
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn compress_without_data_still_writes_the_file_when_random_inputs_do_not_run() {
    // PP-OCR rec's symbolic width of 1 is too narrow for its 2×2 pool: the
    // timing run fails, which must not cost the user the compressed file.
    let models = std::env::var_os("MORSEL_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/models"));
    let rec = models.join("ocr/ch_PP-OCRv4_rec_infer.onnx");
    assert!(
        rec.exists(),
        "{} is missing: run `make models` (tests/models/README.md)",
        rec.display()
    );
    let dir = scratch("rec");
    let out_file = dir.join("rec.int8.morsel");
    let compress = |extra: &[&str]| {
        morsel()
            .args(["compress"])
            .arg(&rec)
            .arg("-o")
            .arg(&out_file)
            .args(["--quantize", "int8", "--latency-runs", "2"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = compress(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("latency not measured") && stderr.contains("AveragePool"),
        "{stderr}"
    );
    assert!(out_file.exists());
    // With a width that fits, it is timed.
    let out = compress(&["--dim", "p2o.DynamicDimension.1=320"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("latency not measured"), "{stderr}");
    assert!(stdout.contains("x=[1, 3, 48, 320]"), "{stdout}");
    // A name the inputs do not have is an error naming the ones they have.
    let out = compress(&["--dim", "width=320"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--dim 'width'") && stderr.contains("p2o.DynamicDimension.1"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prune_heads_on_a_model_without_attention_is_an_error_that_says_so() {
    let dir = scratch("heads");
    let out_file = dir.join("out.morsel");
    let out = morsel()
        .args(["compress", "--prune-heads", "0.5", "-o"])
        .arg(&out_file)
        .arg(repo().join("examples/digits/digits_cnn.onnx"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--prune-heads") && stderr.contains("no MatMul of a Softmax"),
        "{stderr}"
    );
    assert!(!out_file.exists(), "no file is written");
}

/// `morsel compress digits_cnn.onnx --prune 0.9 --distill digits_train.npz
/// --epochs 1 EXTRA… -o out`.
fn repair_digits(extra: &[&str], out: &PathBuf) -> std::process::Output {
    morsel()
        .args(["compress", "--prune", "0.9", "--epochs", "1"])
        .arg(repo().join("examples/digits/digits_cnn.onnx"))
        .arg("--distill")
        .arg(repo().join("examples/digits/digits_train.npz"))
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// `--distill … --match LAYER`: the repaired file keeps the model's own
/// outputs (the matched layer was an output only while training); a name
/// that is not in the model stops before anything is written.
#[test]
fn distill_with_a_matched_layer() {
    let dir = scratch("match");
    let out_file = dir.join("repaired.morsel");
    let run = |layer: &str, out: &PathBuf| repair_digits(&["--match", layer], out);
    let out = run("node_Conv_9", &out_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let inspect = morsel().arg("inspect").arg(&out_file).output().unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    let outputs = text
        .split("outputs:")
        .nth(1)
        .and_then(|s| s.split("nodes:").next())
        .unwrap_or_default();
    assert_eq!(outputs.trim().lines().count(), 1, "{text}");
    assert!(outputs.contains("logits"), "{text}");

    let missing = dir.join("never.morsel");
    let out = run("no_such_layer", &missing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--match no_such_layer: the teacher has no value or node of that name"),
        "{stderr}"
    );
    assert!(!missing.exists());
}

/// `--qat`: the repair trains through int8's rounding, and says so in the
/// file's recipe; without `--quantize int8` it stops before training.
#[test]
fn int8_aware_repair() {
    let dir = scratch("qat");
    let run =
        |quantize: &[&str], out: &PathBuf| repair_digits(&[&["--qat"], quantize].concat(), out);
    let out_file = dir.join("qat.morsel");
    let out = run(&["--quantize", "int8"], &out_file);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("1 epochs, int8-aware)"), "{stdout}");
    let inspect = morsel().arg("inspect").arg(&out_file).output().unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("int8-aware"), "{text}");
    assert!(text.contains("quantize-int8-dynamic"), "{text}");

    for quantize in [&[][..], &["--quantize", "int8-static"][..]] {
        let never = dir.join("never.morsel");
        let out = run(quantize, &never);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("--qat trains through the rounding of --quantize int8"),
            "{stderr}"
        );
        assert!(!never.exists());
    }
}

/// `--loss-mask`: a name that is no input of the model, and an input that
/// fits no output, stop before training with the reason.
#[test]
fn a_loss_mask_must_be_an_input_that_fits_an_output() {
    let dir = scratch("mask");
    let never = dir.join("never.morsel");
    for (name, want) in [
        (
            "attention_mask",
            "--loss-mask attention_mask: the model has no input of that name (its inputs: x)",
        ),
        (
            "x",
            "--loss-mask x: no output is shaped [1, 8, 8, C] per sample, so it would mask nothing",
        ),
    ] {
        let out = repair_digits(&["--loss-mask", name], &never);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(want), "{stderr}");
        assert!(!never.exists());
    }
}

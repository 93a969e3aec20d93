#!/usr/bin/env bash
# Student mode on digits: the 7,210-parameter MLP (make_student.py) trained
# on the digits training split by distillation from the CNN (KL at T=2)
# and on the labels alone (--alpha 1), same epochs, same seeds; test-split
# accuracy per seed and the mean.
#
#   bash examples/digits/student_vs_labels.sh [EPOCHS LR SEEDS]
#   (defaults 60 1e-2 10; build first: cargo build --release -p morsel-compress)
set -euo pipefail
cd "$(dirname "$0")/../.."
morsel=${MORSEL:-target/release/morsel}
epochs=${1:-60} lr=${2:-1e-2} seeds=${3:-10}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # seed, extra flags → test accuracy in %
    "$morsel" distill --teacher examples/digits/digits_cnn.onnx \
        --student examples/digits/digits_student_mlp.onnx examples/digits/digits_train.npz \
        -o "$out/s.morsel" --data examples/digits/digits_test.npz \
        --epochs "$epochs" --lr "$lr" --seed "$1" --json "${@:2}" |
        python3 -c 'import json,sys; print("%.2f" % (100 * json.load(sys.stdin)["accuracy"]["student_after"]))'
}
echo "epochs $epochs, lr $lr: test accuracy % (450 images; one image = 0.22)"
printf '%-6s %-8s %-8s\n' seed labels "KL T=2"
sum_l=0 sum_k=0 ahead=0
for s in $(seq 1 "$seeds"); do
    l=$(run "$s" --alpha 1)
    k=$(run "$s" --alpha 0 --temperature 2)
    printf '%-6s %-8s %-8s\n' "$s" "$l" "$k"
    sum_l=$(python3 -c "print($sum_l + $l)") sum_k=$(python3 -c "print($sum_k + $k)")
    ahead=$(python3 -c "print($ahead + ($k > $l))")
done
python3 -c "print('mean   %.3f    %.3f   (KL ahead in $ahead of $seeds seeds)' % ($sum_l / $seeds, $sum_k / $seeds))"

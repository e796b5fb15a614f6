#!/bin/bash
# The moves of README "Measured" on `make demo`'s own competition, after `make demo` (it leaves the two
# experiments, the blends and data/demo/): resnet + distillation, + checkpoint averaging, with SAM, with mixup,
# all at the demo resnet's budget (5 folds, 12 epochs, 32 px, two folds at a time), then full-data models of
# both experiments blended instead of / beside the folds. Each row: OOF in-sample, honest, leaderboard, seconds.
# About 15 minutes on 2 CPU cores. Pseudo-labels are kit demo's own last rows.
set -u
cd "$(dirname "$0")/.."
export MPLBACKEND=Agg KIT_HEADLESS=1
K=.venv/bin/kit
TEACHER=$(.venv/bin/python -c "
import pandas as pd
day = pd.read_csv('runs/demo/day.csv').set_index('submission')
print(day.loc[['demo.csv', 'demo-stack.csv'], 'honest_accuracy'].idxmax().removesuffix('.csv'))")
echo "teacher (the blend with the better honest score): $TEACHER"
row() {
  $K blend --comp demo --exps "$1" --name "$2" ${3:-} | grep "blend OOF"
  $K score "submissions/$2.csv" --comp demo
}
for spec in "distill:-p distill=submissions/$TEACHER.blend.json" "avg:-p save_top=3 -p average_top=3" \
            "sam:-p sam=sam" "mixup:-p mixup=0.2 -p mixup_off_epochs=2"; do
  name=${spec%%:*}; args=${spec#*:}
  s=$(date +%s)
  $K run-folds --comp demo --exp "demo-resnet-$name" --model test_resnet --img-size 32 --epochs 12 --lr 0.003 \
     --jobs 2 $args > /dev/null || exit 1
  echo "== resnet + $name: $(( $(date +%s) - s )) s"
  row "demo-resnet-$name" "moves-$name"
done
for e in demo-effnet demo-resnet; do
  s=$(date +%s); $K fit-full --comp demo --exp "$e" > /dev/null || exit 1
  echo "== full-data $e: $(( $(date +%s) - s )) s"
done
for m in full both; do
  echo "== Caruana, --models $m"; row demo-effnet,demo-resnet "moves-caruana-$m" "--models $m"
  echo "== stacking, --models $m"; row demo-effnet,demo-resnet "moves-stack-$m" "--models $m --method stack"
done

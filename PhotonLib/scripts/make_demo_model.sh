#!/usr/bin/env bash
# The phantom demo model in one command: make the phantoms, train both stages, evaluate.
#   bash PhotonLib/scripts/make_demo_model.sh [OUT] [PHOTON]
# OUT (default runs/demo-build) receives phantoms/, warmup/, stage2/, results.json (fresh
# conspicuous phantoms) and results-realistic.json (fresh phantoms of the generator's default
# profile); PHOTON is the photon command (default: photon on PATH). The recipes are
# PhotonLib/configs/phantom-demo*.yaml; the result is OUT/stage2/final, the model photonlib ships
# as pretrained/photon-demo. The test seeds (6000, 6001) were used by no training or recipe choice.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT=${1:-runs/demo-build}
PHOTON=${2:-photon}
CONFIGS="$ROOT/PhotonLib/configs"
mkdir -p "$OUT"
started=$SECONDS
stamp() { echo "== $1 ($((SECONDS - started)) s)"; }

stamp "phantoms"
"$PHOTON" phantoms make "$OUT/phantoms/train" --n 1000 --seed 0 --lesion-profile conspicuous
"$PHOTON" phantoms make "$OUT/phantoms/test" --n 200 --seed 6000 --lesion-profile conspicuous
"$PHOTON" phantoms make "$OUT/phantoms/test-realistic" --n 200 --seed 6001

stamp "stage 0: vision warm-up"
"$PHOTON" train --config "$CONFIGS/phantom-demo-warmup.yaml" \
    data.path="$OUT/phantoms/train/phantoms.jsonl" data.cache_dir="$OUT/volume-cache" output_dir="$OUT/warmup"

stamp "stage 2: questions, ITS + SGP"
"$PHOTON" train --config "$CONFIGS/phantom-demo.yaml" model.init="$OUT/warmup/final" \
    data.path="$OUT/phantoms/train/phantoms.jsonl" data.cache_dir="$OUT/volume-cache" output_dir="$OUT/stage2"

stamp "evaluation on the test phantoms"
"$PHOTON" eval --model "$OUT/stage2/final" --data "phantoms:$OUT/phantoms/test/phantoms.jsonl" --out "$OUT/results.json"
"$PHOTON" eval --model "$OUT/stage2/final" --data "phantoms:$OUT/phantoms/test-realistic/phantoms.jsonl" --out "$OUT/results-realistic.json"
stamp "done: $OUT/stage2/final"

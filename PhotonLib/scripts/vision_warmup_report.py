"""How well does a vision warm-up (``photon train`` stage 0) see lesions on held-out phantoms?

Loads the warmed model folder and the lesion head the warm-up leaves in its output folder, scores
every merged token of every held-out volume, and prints:

* token AUC: lesion tokens (from the label maps, as the warm-up labels them) against all others;
  a tower that only learns where organs are reaches about 0.9 without seeing any lesion;
* existence AUC: each volume's highest token score, volumes with a lesion against volumes
  without: what an existence question needs (0.5 is chance).

    python PhotonLib/scripts/vision_warmup_report.py runs/phantom-demo-warmup phantoms/test

Needs scikit-learn (installed with photonlib's test extras).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from photonlib.data import load_dataset
from photonlib.model import PhotonForConditionalGeneration, PhotonProcessor
from photonlib.training.loop import WARMUP_HEAD_FILE, TrainingExample
from photonlib.training.vision_warmup import VisionWarmup, token_lesion_labels, warmup_batch, warmup_volumes
from photonlib.volume import prepare_volume, read_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the warm-up's output_dir (holds final/ and the lesion head)")
    parser.add_argument("data", type=Path, help="a `photon phantoms make` folder")
    parser.add_argument("--lesion-fraction", type=float, default=0.05)
    arguments = parser.parse_args()

    model = PhotonForConditionalGeneration.from_pretrained(arguments.run / "final").eval()
    processor = PhotonProcessor.from_pretrained(arguments.run / "final")
    warmup = VisionWarmup(model)
    warmup.head.load_state_dict(torch.load(arguments.run / WARMUP_HEAD_FILE))
    report = load_dataset("phantoms", arguments.data)
    examples = [TrainingExample.from_sample(sample) for sample in report.samples]
    volumes = warmup_volumes(examples)
    token_grid = model.config.token_grid(processor.preprocess.model_grid)
    scores, labels = [], []
    with torch.no_grad():
        for entry in volumes:
            array = prepare_volume(read_volume(entry.volume), processor.preprocess).array
            scores.append(warmup(**warmup_batch(processor, [array])).lesion[0].numpy())
            labels.append(token_lesion_labels(entry, processor.preprocess, token_grid, arguments.lesion_fraction))
    scores, labels = np.stack(scores), np.stack(labels)
    has_lesion = np.array([entry.lesion_label is not None for entry in volumes])
    print(
        json.dumps(
            {
                "volumes": len(volumes),
                "with_lesion": int(has_lesion.sum()),
                "tokens_per_volume": int(labels.shape[1]),
                "lesion_tokens_per_lesion_volume": float(labels[has_lesion].sum(axis=1).mean()),
                "token_auc": round(float(roc_auc_score(labels.reshape(-1), scores.reshape(-1))), 4),
                "existence_auc": round(float(roc_auc_score(has_lesion, scores.max(axis=1))), 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

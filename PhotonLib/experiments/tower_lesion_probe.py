"""Can a from-scratch demo-size vision tower learn to see phantom lesions at all?

Trained end to end from scratch (no vision warm-up), a demo-size Photon answers existence
questions at chance. This probe takes the language model out of the question: it trains only the
demo preset's vision tower (patch embedding, blocks, merger) plus one linear head that scores
each merged token, on phantoms generated in memory, and reports how well the tower finds the
lesion on held-out phantoms:

* ``--objective volume``: one bit per volume (is there a lesion?), the score of the volume is
  its highest token score (multiple-instance learning: all the supervision an existence
  question gives);
* ``--objective tokens``: every token labelled from the phantom's label map (does this token
  hold lesion voxels?), the dense supervision a label map gives.

It prints the training loss, the token AUC (lesion tokens against all others: a tower that only
learns where organs are reaches about 0.9 without seeing any lesion) and the existence AUC (the
highest token score of volumes with a lesion against volumes without: what an existence question
needs; 0.5 is chance).

    python PhotonLib/experiments/tower_lesion_probe.py --profile conspicuous --patch 7 --objective tokens

With conspicuous lesions and 200 held-out phantoms, per-token labels on 7^3 patches find the
lesions (1,000 training phantoms, tower learning rate 1e-3, patch embedding 1e-4, batch 8:
existence accuracy 0.82 at 1,400 steps), while one bit per volume on 14^3 patches stays near
chance (0.47-0.57): the reason the demo preset has 7^3 patches and a vision warm-up. All the
figures: docs/research/demo-model.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from photonlib.data.phantoms import LESION_LABEL, LESION_ORGAN_WEIGHTS, LESION_ORGANS, make_case
from photonlib.model import PhotonConfig, PhotonForConditionalGeneration, PhotonProcessor
from photonlib.model.tokenizer import token_id_settings, train_compact_tokenizer
from photonlib.volume import PreprocessConfig, prepare_volume
from photonlib.volume.image import Volume

# The demo's preprocessing: the ``small`` grid (56 x 112 x 112 over 364 mm) with a soft-tissue window.
PREPROCESS = dataclasses.replace(PreprocessConfig.preset("small"), ct_window_hu=(-200.0, 300.0))
# The label map goes through the same resampling, intensities untouched: a lesion fraction per voxel.
MASK_PREPROCESS = dataclasses.replace(PreprocessConfig.preset("small"), intensity="none")
LESION_FRACTION = 0.05  # a model voxel counts as lesion when at least this share of it is lesion


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="realistic", help="phantom lesion profile: realistic or conspicuous")
    parser.add_argument(
        "--patch", type=int, default=14, help="patch edge in voxels (14: 64 tokens of 91 mm; 7: 512 of 45 mm)"
    )
    parser.add_argument("--objective", choices=("volume", "tokens"), default="tokens")
    parser.add_argument("--tower-depth", type=int, default=None, help="vision blocks (demo preset: 2)")
    parser.add_argument(
        "--tower-width", type=int, default=None, help="vision hidden size, 32 per head, MLP twice as wide (demo: 64)"
    )
    parser.add_argument("--train-cases", type=int, default=1000)
    parser.add_argument("--test-cases", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="tower blocks, merger and head")
    parser.add_argument("--patch-embedding-learning-rate", type=float, default=1e-4)
    parser.add_argument("--report-every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="processes generating phantoms")
    return parser.parse_args()


def prepared_case(
    seed: int, index: int, profile: str, token_cells: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(model-grid volume as float16, lesion label per token, has a lesion) of one phantom.
    Every other case has a lesion, in an organ drawn with the generator's organ weights."""
    organ = None
    if index % 2:
        organ = LESION_ORGANS[np.random.default_rng([seed, index]).choice(len(LESION_ORGANS), p=LESION_ORGAN_WEIGHTS)]
    case = make_case(seed, index, "small", organ, profile=profile)
    volume = prepare_volume(Volume(case.hu.astype(np.float32), case.geometry, "phantom"), PREPROCESS).array
    lesion = (case.labels == LESION_LABEL).astype(np.float32)
    fraction = prepare_volume(Volume(lesion, case.geometry, "phantom"), MASK_PREPROCESS).array
    t, h, w = token_cells
    d, r, c = (n // cells for n, cells in zip(fraction.shape, token_cells))
    token_labels = (fraction.reshape(t, d, h, r, w, c).max(axis=(1, 3, 5)) >= LESION_FRACTION).reshape(-1)
    return volume.astype(np.float16), token_labels, organ is not None


def phantom_set(seed: int, count: int, profile: str, token_cells, workers: int):
    with ProcessPoolExecutor(workers) as pool:
        cases = list(pool.map(prepared_case, [seed] * count, range(count), [profile] * count, [token_cells] * count))
    volumes, token_labels, has_lesion = zip(*cases)
    return np.stack(volumes), np.stack(token_labels), np.array(has_lesion)


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties count half)."""
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float(
        (ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives))
    )


def main() -> None:
    arguments = parse_arguments()
    torch.manual_seed(0)
    tokenizer = train_compact_tokenizer(["Is there a lesion?", "Yes", "No"], 300)
    settings = token_id_settings(tokenizer)
    patch = {"patch_size": arguments.patch, "temporal_patch_size": arguments.patch}
    if arguments.tower_depth is not None:
        # Every second block attends across the whole volume, as the demo's block 1 does.
        patch.update(depth=arguments.tower_depth, fullatt_block_indexes=list(range(1, arguments.tower_depth, 2)))
    if arguments.tower_width is not None:
        width = arguments.tower_width
        patch.update(hidden_size=width, num_heads=max(1, width // 32), intermediate_size=2 * width)
    config = PhotonConfig.from_preset("demo", text=settings.pop("text"), pruning_mode="none", vision=patch, **settings)
    tower = PhotonForConditionalGeneration(config).model
    processor = PhotonProcessor(tokenizer, PREPROCESS, config.patch_size_dhw, config.spatial_merge_size)
    token_cells = config.token_grid(PREPROCESS.model_grid)

    started = time.perf_counter()
    train = phantom_set(0, arguments.train_cases, arguments.profile, token_cells, arguments.workers)
    test = phantom_set(1000, arguments.test_cases, arguments.profile, token_cells, arguments.workers)
    print(f"{arguments.train_cases} + {arguments.test_cases} '{arguments.profile}' phantoms, {int(np.prod(token_cells))} tokens "
          f"each, made in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

    head = torch.nn.Linear(config.vision_config.out_hidden_size, 1)
    patch_embedding = [tower.visual.patch_embed.proj.weight]
    others = [p for name, p in tower.visual.named_parameters() if not name.startswith("patch_embed")]
    optimizer = torch.optim.AdamW(
        [
            {"params": patch_embedding, "lr": arguments.patch_embedding_learning_rate},
            {"params": others + list(head.parameters()), "lr": arguments.learning_rate},
        ],
        weight_decay=0.0,
    )
    # Lesion tokens are about 1 in 100: weigh them up so "never a lesion" is not the easy optimum.
    positive_weight = torch.tensor(float(train[1].size / max(1, train[1].sum())) / 4)

    def token_scores(volumes: np.ndarray) -> torch.Tensor:
        scores = []
        for volume in volumes:
            patches, grid = processor.volume_patches(volume.astype(np.float32))
            scores.append(head(tower.encode_volumes(patches, torch.tensor([grid]))[0]).squeeze(-1))
        return torch.stack(scores)

    generator = torch.Generator().manual_seed(0)
    losses, started = [], time.perf_counter()
    for step in range(1, arguments.steps + 1):
        batch = torch.randperm(len(train[0]), generator=generator)[: arguments.batch_size].numpy()
        scores = token_scores(train[0][batch])
        if arguments.objective == "tokens":
            targets = torch.from_numpy(train[1][batch].astype(np.float32))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets, pos_weight=positive_weight)
        else:
            targets = torch.from_numpy(train[2][batch].astype(np.float32))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scores.max(dim=1).values, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % arguments.report_every == 0:
            with torch.no_grad():
                held_out = torch.cat([token_scores(test[0][i : i + 25]) for i in range(0, len(test[0]), 25)]).numpy()
            lesion_tokens = test[1].astype(bool)
            highest = held_out.max(axis=1)
            print(
                f"step {step}: loss {np.mean(losses[-arguments.report_every :]):.3f}, "
                f"token AUC {auc(held_out[lesion_tokens], held_out[~lesion_tokens]):.3f}, "
                f"existence AUC {auc(highest[test[2]], highest[~test[2]]):.3f}, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()

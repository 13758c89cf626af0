"""Synthetic CT phantoms with known lesions, their label maps, and questions about them.

``make_phantoms(out, n, seed)`` (and ``photon phantoms make``) writes::

    out/volumes/case_0000.nii.gz        CT-like volume in HU (int16)
    out/masks/case_0000_labels.nii.gz   label map in the same geometry (uint8, see LABELS)
    out/phantoms.jsonl                  questions, plain JSONL format (photonlib.data.read_jsonl)
    out/manifest.json                   generator version, seed, n, parameters, every case's facts

Every case is a pure function of ``(seed, case index, lesion plan)``: the same seed gives
byte-identical files. Anatomy is drawn in patient millimetres (LPS) and sampled on the case's
own grid, so volume and label map agree whatever the geometry:

* grid: axial, LPS or RAS index directions, about a third of the cases slightly oblique
  (2-6 degrees), anisotropic spacing, random origin. The spacing is about three times coarser
  than clinical CT (``small``: 96 x 96 x 48 voxels of 3.2-3.7 mm x 4.5-6 mm) so that a case
  takes a few hundredths of a second; it is still finer than the model grid (the ``small``
  preprocessing preset sees 364 mm over 112 voxels, 3.25 mm, and 56 slices, 6.5 mm).
* anatomy: body (fat and soft tissue), heart, lungs over domed hemidiaphragms, liver,
  spleen, kidneys, aorta and spine, with random sizes and positions; non-contrast or portal
  venous phase (organ HU follow); Gaussian noise of 5-12 HU.
* lesion (in a planned share of the cases): one ellipsoid lying wholly inside its organ
  (liver, spleen, a kidney, or a lung nodule), longest diameter 15-45 mm (smaller maxima in
  the smaller organs), 30-80 HU hypo- or hyperdense vs its organ (lung nodules are solid
  soft tissue, so their contrast vs lung is about +850 HU). Its organ, diameter, axes,
  centre (LPS mm), HU and contrast are recorded. That is the ``realistic`` lesion profile (the
  default); ``conspicuous`` makes them 30-60 mm and 150-300 HU, for models too small to learn
  subtle lesions (see ``LESION_PROFILES``).

Questions (3D-RAD task families, short templated answers):

* Existence Detection (closed Yes/No): "Is there a lesion in the liver?". Yes and No are
  balanced over the dataset (within one): lesion cases are asked about their own organ until
  half the questions are Yes, the rest about another organ (drawn with the same organ
  weights, so the organ named gives nothing away); with a lesion probability under 0.5 some
  lesion-free cases get no existence question.
* Lesion Localization (closed, 4 organs): "In which organ is the lesion?"
* Medical Computation / Diameter (open): "What is the diameter of the lesion in millimetres?"
  -> "About 24 mm."
* Image Observation / Lesion description (open): "Describe the lesion." -> "A 24 mm
  hypodense lesion in the liver."
* Anomaly Detection (open, every case): "Is there any abnormality in this scan?" or "What
  abnormality is present?" -> "No abnormality." or "A lesion in the right kidney."

Each JSONL record's ``extra`` holds ``case``, ``mask_path`` (relative to the dataset folder),
``lesion_label`` (None without a lesion) and ``lesion`` (the recorded facts), so evaluation
can measure grounding (the share of lesion voxels covered by kept tokens).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photonlib.answers import CHOICE_LETTERS
from photonlib.errors import ConfigurationError, UsageError
from photonlib.geometry import VolumeGeometry

GENERATOR_VERSION = "1"

LABELS = {
    "body": 1,
    "right lung": 2,
    "left lung": 3,
    "liver": 4,
    "spleen": 5,
    "right kidney": 6,
    "left kidney": 7,
    "aorta": 8,
    "spine": 9,
    "lesion": 10,
}
LESION_LABEL = LABELS["lesion"]

#: Organs a lesion can be in, and how often.
LESION_ORGANS = ("liver", "spleen", "right kidney", "left kidney", "right lung", "left lung")
LESION_ORGAN_WEIGHTS = (0.35, 0.15, 0.15, 0.15, 0.10, 0.10)
MAX_DIAMETER_MM = {
    "liver": 45.0,
    "spleen": 35.0,
    "right kidney": 30.0,
    "left kidney": 30.0,
    "right lung": 30.0,
    "left lung": 30.0,
}
MIN_DIAMETER_MM = 15.0


@dataclass(frozen=True)
class LesionProfile:
    """How large and how contrasted lesions are.

    ``diameter_mm`` is the longest-diameter range in the liver; the smaller organs' maxima scale
    with it (``MAX_DIAMETER_MM``). ``contrast_hu`` is the range of |lesion - organ| HU in solid
    organs; lung nodules are always solid soft tissue in aerated lung, whatever the profile.
    """

    name: str
    diameter_mm: tuple[float, float]
    contrast_hu: tuple[int, int]

    def max_diameter_mm(self, organ: str) -> float:
        return MAX_DIAMETER_MM[organ] * self.diameter_mm[1] / MAX_DIAMETER_MM["liver"]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "diameter_mm": list(self.diameter_mm), "contrast_hu": list(self.contrast_hu)}


LESION_PROFILES = {
    # Lesions a radiologist sees at once on a CT, but that fill under 4 % of a 91 mm model token.
    "realistic": LesionProfile("realistic", (MIN_DIAMETER_MM, MAX_DIAMETER_MM["liver"]), (30, 80)),
    # Larger and brighter (cyst- or calcification-like): what a tiny model trained from scratch on
    # a CPU can learn to see (docs/training.md).
    "conspicuous": LesionProfile("conspicuous", (30.0, 60.0), (150, 300)),
}


def lesion_profile(name: str) -> LesionProfile:
    try:
        return LESION_PROFILES[name]
    except KeyError:
        raise ConfigurationError(f"unknown lesion profile {name!r}; known: {', '.join(LESION_PROFILES)}") from None


EXISTENCE_TASK = "Existence Detection"
ORGAN_TASK = "Lesion Localization"
MEASUREMENT_TASK = "Medical Computation"
DESCRIPTION_TASK = "Image Observation"
ANOMALY_TASK = "Anomaly Detection"
ANOMALY_QUESTIONS = ("Is there any abnormality in this scan?", "What abnormality is present?")
NO_ABNORMALITY = "No abnormality."


@dataclass(frozen=True)
class PhantomSize:
    """Grid of a phantom: voxel counts (i = j in-plane, k slices) and spacing ranges in mm."""

    name: str
    in_plane_voxels: int
    slices: int
    in_plane_spacing_mm: tuple[float, float]
    slice_spacing_mm: tuple[float, float]


SIZES = {
    "small": PhantomSize("small", 96, 48, (3.2, 3.7), (4.5, 6.0)),
    # For tests: 8x fewer voxels; lesions stay at least two voxels across.
    "tiny": PhantomSize("tiny", 48, 24, (6.4, 7.4), (9.0, 12.0)),
}


@dataclass
class PhantomCase:
    """One generated case in memory: HU volume, label map (both KJI), geometry and facts."""

    case_id: str
    hu: np.ndarray  # int16, KJI
    labels: np.ndarray  # uint8, KJI
    geometry: VolumeGeometry
    facts: dict[str, Any]

    @property
    def lesion(self) -> dict[str, Any] | None:
        return self.facts["lesion"]


@dataclass(frozen=True)
class CasePlan:
    """What the dataset-level plan fixes for a case (so Yes/No stay balanced)."""

    index: int
    lesion_organ: str | None  # None: no lesion
    existence: str | None  # "own" (ask the lesion's organ), "other" (another organ) or None


@dataclass
class PhantomDataset:
    """Where ``make_phantoms`` wrote its output, and what it made."""

    folder: Path
    jsonl: Path
    manifest: Path
    cases: int
    cases_with_lesion: int
    questions: int
    seconds: float

    def summary(self) -> str:
        return (
            f"wrote {self.cases} phantom cases ({self.cases_with_lesion} with a lesion) and {self.questions} "
            f"questions to {self.jsonl} in {self.seconds:.1f} s"
        )


# ----------------------------------------------------------------------------- plan
def _check_parameters(n: int, size: str, lesion_probability: float) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigurationError(f"the number of cases must be a positive integer, got {n!r}")
    if size not in SIZES:
        raise ConfigurationError(f"unknown phantom size {size!r}; known: {', '.join(SIZES)}")
    if not (isinstance(lesion_probability, (int, float)) and 0.0 <= float(lesion_probability) <= 1.0):
        raise ConfigurationError(f"the lesion probability must be between 0 and 1, got {lesion_probability!r}")


def _seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigurationError(f"the seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=key)


def plan_cases(n: int, seed: int, lesion_probability: float = 0.5) -> list[CasePlan]:
    """Which cases get a lesion (exactly round(n * p) of them), in which organ, and which
    existence question each case is asked so that Yes and No are balanced."""
    _check_parameters(n, "small", lesion_probability)
    rng = np.random.default_rng(_seed_sequence(seed, 0))
    lesion_count = int(math.floor(n * float(lesion_probability) + 0.5))
    lesion_cases = [int(i) for i in rng.permutation(n)[:lesion_count]]
    organs = rng.choice(len(LESION_ORGANS), size=lesion_count, p=LESION_ORGAN_WEIGHTS)
    organ_of = {case: LESION_ORGANS[int(organ)] for case, organ in zip(lesion_cases, organs)}
    yes_count = min(lesion_count, n // 2)
    existence: dict[int, str] = {case: "own" for case in lesion_cases[:yes_count]}
    existence.update({case: "other" for case in lesion_cases[yes_count:]})
    clean_cases = [case for case in rng.permutation(n).tolist() if case not in organ_of]
    # With half or more of the cases holding a lesion every case is asked (No count = n - Yes
    # count, within one of it); with fewer, only as many lesion-free cases as there are Yes.
    clean_asked = clean_cases if lesion_count >= n // 2 else clean_cases[:yes_count]
    existence.update({case: "other" for case in clean_asked})
    return [CasePlan(i, organ_of.get(i), existence.get(i)) for i in range(n)]


# ----------------------------------------------------------------------------- one case
def _grid(size: PhantomSize, rng: np.random.Generator) -> VolumeGeometry:
    """Random axial grid: LPS or RAS index axes, sometimes slightly oblique, random origin."""
    in_plane = round(float(rng.uniform(*size.in_plane_spacing_mm)), 2)
    slice_spacing = round(float(rng.uniform(*size.slice_spacing_mm)), 2)
    spacing = np.array([in_plane, in_plane, slice_spacing])
    direction = np.diag([1.0, 1.0, 1.0]) if rng.random() < 0.5 else np.diag([-1.0, -1.0, 1.0])
    if rng.random() < 0.35:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = math.radians(float(rng.uniform(2.0, 6.0)))
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
        direction = rotation @ direction
    size_ijk = np.array([size.in_plane_voxels, size.in_plane_voxels, size.slices])
    centre = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-400, 100)])
    origin = centre - direction @ (spacing * (size_ijk - 1) / 2)
    return VolumeGeometry(tuple(int(v) for v in size_ijk), tuple(spacing), tuple(np.round(origin, 3)), direction)


def _voxel_positions(geometry: VolumeGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS x, y, z (float32, KJI shape) of every voxel centre, by broadcasting."""
    matrix = geometry.ijk_to_lps.astype(np.float32)
    size_i, size_j, size_k = geometry.size
    i = np.arange(size_i, dtype=np.float32)[None, None, :]
    j = np.arange(size_j, dtype=np.float32)[None, :, None]
    k = np.arange(size_k, dtype=np.float32)[:, None, None]
    return tuple(matrix[axis, 0] * i + matrix[axis, 1] * j + matrix[axis, 2] * k + matrix[axis, 3] for axis in range(3))


def _inside_ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (z - centre[2]) / radii[2]
    ) ** 2 <= 1.0


def _inside_ellipse(x, y, centre, radii) -> np.ndarray:
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1.0


def _integer(rng: np.random.Generator, low: float, high: float) -> int:
    return int(round(float(rng.uniform(low, high))))


def _anatomy(
    x, y, z, grid_centre: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, Any]], str]:
    """Paint the noise-free HU image and the label map; return organ facts and the phase."""
    u = rng.uniform
    # Patient frame: the patient's centre line and the right hemidiaphragm's level, in LPS mm,
    # placed relative to the grid's centre so that chest base and kidneys are in the field.
    px, py = grid_centre[0] + u(-15, 15), grid_centre[1] + u(-15, 15)
    dome_level = grid_centre[2] + u(10, 30)
    contrast_phase = rng.random() < 0.5
    phase = "portal venous" if contrast_phase else "non-contrast"

    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    labels = np.zeros(x.shape, dtype=np.uint8)
    organs: dict[str, dict[str, Any]] = {}

    def paint(name: str, mask: np.ndarray, value: int, label: int, **facts: Any) -> None:
        hu[mask] = value
        labels[mask] = label
        if name:
            organs[name] = {"label": label, "hu": value, **facts}

    body_radii = (u(125, 160), u(85, 112))
    fat = u(8, 25)
    inner_radii = (body_radii[0] - fat, body_radii[1] - 0.8 * fat)
    cavity_radii = (inner_radii[0] - 10, inner_radii[1] - 10)  # inside the ribs and muscles
    body = _inside_ellipse(x, y, (px, py), body_radii)
    paint("", body, _integer(rng, -110, -85), LABELS["body"])
    hu[_inside_ellipse(x, y, (px, py), inner_radii)] = _integer(rng, 35, 55)  # muscle and viscera
    cavity = _inside_ellipse(x, y, (px, py), cavity_radii)

    def dome(side_x: float, side_y: float, level: float, height: float, radii: tuple[float, float]) -> np.ndarray:
        bulge = 1.0 - ((x - side_x) / radii[0]) ** 2 - ((y - side_y) / radii[1]) ** 2
        return level + height * np.clip(bulge, 0.0, None)

    right_dome = dome(px - 65, py, dome_level, u(15, 25), (60, 80))
    left_level = dome_level - u(0, 15)
    left_dome = dome(px + 65, py, left_level, u(10, 20), (60, 80))
    for side, sign, dome_z in (("right lung", -1, right_dome), ("left lung", 1, left_dome)):
        centre = (px + sign * u(60, 75), py + u(0, 10), dome_level + u(60, 80))
        radii = (u(45, 55) if sign < 0 else u(42, 52), u(60, 75), u(90, 110))
        mask = _inside_ellipsoid(x, y, z, centre, radii) & (z > dome_z) & cavity
        paint(side, mask, _integer(rng, -880, -820), LABELS[side], centre_lps_mm=centre, radii_mm=radii)
    heart = _inside_ellipsoid(
        x, y, z, (px + u(5, 20), py - u(15, 30), dome_level + u(40, 55)), (u(45, 55), u(40, 50), u(45, 55))
    )
    heart &= (z > np.minimum(right_dome, left_dome)) & cavity
    hu[heart] = _integer(rng, 100, 140) if contrast_phase else _integer(rng, 35, 45)
    labels[heart] = LABELS["body"]

    def solid(name, centre, radii, non_contrast, portal, cap=None) -> None:
        mask = _inside_ellipsoid(x, y, z, centre, radii) & cavity
        if cap is not None:
            mask &= z < cap
        value = _integer(rng, *(portal if contrast_phase else non_contrast))
        paint(name, mask, value, LABELS[name], centre_lps_mm=centre, radii_mm=radii)

    solid(
        "liver",
        (px - u(50, 70), py - u(0, 15), dome_level - u(45, 60)),
        (u(60, 75), u(55, 70), u(45, 60)),
        (50, 65),
        (95, 120),
        right_dome,
    )
    solid(
        "spleen",
        (px + u(70, 85), py + u(15, 35), left_level - u(35, 50)),
        (u(21, 28), u(32, 42), u(35, 45)),
        (40, 52),
        (100, 125),
        left_dome,
    )
    spine_radius = u(14, 19)
    spine_centre = (px + u(-3, 3), py + inner_radii[1] - u(35, 45))
    kidney_y = spine_centre[1] - u(0, 10)
    kidney_z = dome_level - u(90, 110)
    for name, sign, drop in (("right kidney", -1, u(0, 10)), ("left kidney", 1, 0.0)):
        centre = (px + sign * u(50, 65), kidney_y, kidney_z - drop)
        solid(name, centre, (u(23, 28), u(19, 23), u(42, 52)), (28, 38), (140, 190))
    aorta_radius = u(10, 14)
    aorta_centre = (px + u(12, 22), spine_centre[1] - spine_radius - u(8, 15) - aorta_radius)
    value = _integer(rng, 150, 220) if contrast_phase else _integer(rng, 35, 50)
    paint(
        "aorta",
        _inside_ellipse(x, y, aorta_centre, (aorta_radius, aorta_radius)) & body,
        value,
        LABELS["aorta"],
        centre_lps_mm=aorta_centre,
        radius_mm=aorta_radius,
    )
    spine = _inside_ellipse(x, y, spine_centre, (spine_radius, spine_radius)) & body
    paint("spine", spine, _integer(rng, 250, 450), LABELS["spine"], centre_lps_mm=spine_centre, radius_mm=spine_radius)
    for facts in organs.values():
        for key in ("centre_lps_mm", "radii_mm"):
            if key in facts:
                facts[key] = [round(float(v), 1) for v in facts[key]]
        for key in ("radius_mm",):
            if key in facts:
                facts[key] = round(float(facts[key]), 1)
    return hu, labels, organs, phase


def _dilated(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by its face neighbours (the mask must not touch its array's border)."""
    grown = mask.copy()
    for axis in range(3):
        grown |= np.roll(mask, 1, axis=axis) | np.roll(mask, -1, axis=axis)
    return grown


def _place_lesion(
    x, y, z, labels, geometry, organ: str, organs, rng, min_diameter: float, max_diameter: float
) -> dict[str, Any] | None:
    """Pick an ellipsoid inside ``organ`` with a rim of organ voxels all round it (and inside the
    grid), paint its label and return its facts; None when the organ, as cut by the field of
    view, has no room for one."""
    organ_facts = organs[organ]
    organ_label = organ_facts["label"]
    organ_centre = np.array(organ_facts["centre_lps_mm"])
    organ_radii = np.array(organ_facts["radii_mm"])
    linear_inverse = np.abs(np.linalg.inv(geometry.ijk_to_lps[:3, :3]))
    size = np.array(geometry.size)
    diameter = float(rng.uniform(min_diameter, max(min_diameter, max_diameter)))
    for _attempt in range(12):
        radii = diameter / 2 * np.concatenate([[1.0], rng.uniform(0.8, 1.0, size=2)])
        radii = rng.permutation(radii)
        for _try in range(25):
            direction = rng.normal(size=3)
            offset = direction / np.linalg.norm(direction) * rng.random() ** (1 / 3)
            centre = organ_centre + offset * np.clip(organ_radii - radii, 0.0, None)
            centre_ijk = geometry.lps_to_index(centre)
            half = linear_inverse @ radii + 1.0
            low = np.floor(centre_ijk - half).astype(int)
            high = np.ceil(centre_ijk + half).astype(int) + 1
            if np.any(low < 1) or np.any(high > size - 1):
                continue
            box = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
            inside = _inside_ellipsoid(x[box], y[box], z[box], centre, radii)
            count = int(inside.sum())
            # The lesion and its face neighbours must all be organ: a rim of organ all round.
            if count == 0 or np.any(labels[box][_dilated(inside)] != organ_label):
                continue
            labels[box][inside] = LESION_LABEL
            return {
                "organ": organ,
                "label": LESION_LABEL,
                "diameter_mm": round(float(2 * radii.max()), 1),
                "axes_mm": [round(float(2 * r), 1) for r in radii],
                "centre_lps_mm": [round(float(c), 2) for c in centre],
                "voxels": count,
            }
        diameter = max(min_diameter, diameter * 0.9)
    return None


def make_case(
    seed: int,
    index: int,
    size: str = "small",
    lesion_organ: str | None = None,
    case_id: str | None = None,
    profile: str = "realistic",
) -> PhantomCase:
    """Generate one case in memory (deterministic in ``seed``, ``index`` and ``profile``)."""
    lesions = lesion_profile(profile)
    if size not in SIZES:
        raise ConfigurationError(f"unknown phantom size {size!r}; known: {', '.join(SIZES)}")
    if lesion_organ is not None and lesion_organ not in LESION_ORGANS:
        raise ConfigurationError(f"a lesion can be in {', '.join(LESION_ORGANS)}, not {lesion_organ!r}")
    grid_size = SIZES[size]
    rng = np.random.default_rng(_seed_sequence(seed, 1, index))
    geometry = _grid(grid_size, rng)
    x, y, z = _voxel_positions(geometry)
    hu, labels, organs, phase = _anatomy(x, y, z, geometry.center_lps, rng)
    lesion = None
    if lesion_organ is not None:
        min_diameter = max(lesions.diameter_mm[0], 2.0 * max(geometry.spacing))
        # An organ mostly outside the field of view (or too small for the profile's lesions) may
        # have no room: the liver always has.
        for organ in dict.fromkeys([lesion_organ, "liver"]):
            max_diameter = lesions.max_diameter_mm(organ)
            lesion = _place_lesion(x, y, z, labels, geometry, organ, organs, rng, min_diameter, max_diameter)
            if lesion is not None:
                lesion_organ = organ
                break
        else:
            raise RuntimeError(f"case {index}: no room for a lesion in the {lesion_organ} or the liver")
        organ_hu = organs[lesion_organ]["hu"]
        if lesion_organ.endswith("lung"):
            lesion_hu = _integer(rng, -10, 60)  # a solid nodule: soft tissue in aerated lung
        else:
            lesion_hu = organ_hu + int(rng.choice([-1, 1])) * _integer(rng, *lesions.contrast_hu)
        hu[labels == LESION_LABEL] = lesion_hu
        lesion.update(
            organ_hu=organ_hu,
            lesion_hu=lesion_hu,
            contrast_hu=lesion_hu - organ_hu,
            density="hypodense" if lesion_hu < organ_hu else "hyperdense",
        )
    noise_sigma = round(float(rng.uniform(5.0, 12.0)), 2)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_sigma)
    volume = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    case_id = case_id or f"case_{index:04d}"
    facts = {
        "case": case_id,
        "index": index,
        "geometry": geometry.to_dict(),
        "orientation": geometry.orientation_code,
        "oblique": geometry.is_oblique,
        "phase": phase,
        "noise_sigma_hu": noise_sigma,
        "organs": organs,
        "lesion": lesion,
    }
    return PhantomCase(case_id, volume, labels, geometry, facts)


# ----------------------------------------------------------------------------- questions
def case_questions(
    case: PhantomCase, plan: CasePlan, seed: int, volume_path: str, mask_path: str
) -> list[dict[str, Any]]:
    """The plain-JSONL records of one case (see the module docstring for the families)."""
    rng = np.random.default_rng(_seed_sequence(seed, 2, plan.index))
    lesion = case.lesion
    base_extra = {
        "case": case.case_id,
        "mask_path": mask_path,
        "lesion_label": LESION_LABEL if lesion else None,
        "has_lesion": lesion is not None,
        "lesion": lesion,
    }

    def record(
        task: str, subtask: str, question: str, answer: str, family: str, choices=None, letter=None, **extra
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "volume": volume_path,
            "question": question,
            "answer": answer,
            "task": task,
            "subtask": subtask,
        }
        entry["question_type"] = "closed" if choices else "open"
        if choices:
            entry["choices"] = choices
            entry["answer_choice"] = letter
        entry["extra"] = {**base_extra, "family": family, **extra}
        return entry

    records = []
    if plan.existence is not None:
        if plan.existence == "own":
            asked = lesion["organ"]
        else:  # another organ, drawn with the lesion weights so the name tells nothing
            others = [organ for organ in LESION_ORGANS if not (lesion and organ == lesion["organ"])]
            weights = np.array([LESION_ORGAN_WEIGHTS[LESION_ORGANS.index(organ)] for organ in others])
            asked = others[int(rng.choice(len(others), p=weights / weights.sum()))]
        yes = plan.existence == "own"
        records.append(
            record(
                EXISTENCE_TASK, asked, f"Is there a lesion in the {asked}?", "Yes" if yes else "No", "existence",
                choices={"A": "Yes", "B": "No"}, letter="A" if yes else "B", asked_organ=asked,
            )
        )  # fmt: skip
    if lesion:
        organ = lesion["organ"]
        others = [LESION_ORGANS[i] for i in rng.permutation(len(LESION_ORGANS)) if LESION_ORGANS[i] != organ]
        options = [([organ] + others[:3])[i] for i in rng.permutation(4)]
        choices = {letter: option.capitalize() for letter, option in zip(CHOICE_LETTERS, options)}
        records.append(
            record(
                ORGAN_TASK, "Lesion organ", "In which organ is the lesion?", organ.capitalize(), "organ",
                choices=choices, letter=CHOICE_LETTERS[options.index(organ)],
            )
        )  # fmt: skip
        diameter = int(math.floor(lesion["diameter_mm"] + 0.5))
        records.append(
            record(
                MEASUREMENT_TASK, "Diameter", "What is the diameter of the lesion in millimetres?",
                f"About {diameter} mm.", "size",
            )
        )  # fmt: skip
        description = f"A {diameter} mm {lesion['density']} lesion in the {organ}."
        records.append(
            record(DESCRIPTION_TASK, "Lesion description", "Describe the lesion.", description, "description")
        )
    question = ANOMALY_QUESTIONS[int(rng.integers(len(ANOMALY_QUESTIONS)))]
    answer = f"A lesion in the {lesion['organ']}." if lesion else NO_ABNORMALITY
    records.append(record(ANOMALY_TASK, "Abnormality", question, answer, "anomaly"))
    return records


# ----------------------------------------------------------------------------- dataset
def _json_dumps(data: Any, **kwargs: Any) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=False, **kwargs)


def make_phantoms(
    out: str | Path,
    n: int,
    seed: int,
    *,
    size: str = "small",
    lesion_probability: float = 0.5,
    profile: str = "realistic",
    overwrite: bool = False,
) -> PhantomDataset:
    """Write ``n`` phantom cases, their label maps, ``phantoms.jsonl`` and ``manifest.json``.

    Refuses a folder that already holds files unless ``overwrite`` (then the previous
    ``volumes/``, ``masks/``, ``phantoms.jsonl`` and ``manifest.json`` are replaced).
    """
    from photonlib import __version__
    from photonlib.volume import write_volume

    _check_parameters(n, size, lesion_probability)
    _seed_sequence(seed)
    lesions = lesion_profile(profile)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out}: folder is not empty; choose a new or empty folder, or overwrite it (--overwrite)")
        for name in ("volumes", "masks"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for name in ("phantoms.jsonl", "manifest.json"):
            (out / name).unlink(missing_ok=True)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    width = max(4, len(str(n - 1)))
    plans = plan_cases(n, seed, lesion_probability)
    case_facts, lines = [], []
    task_counts: dict[str, int] = {}
    existence = {"Yes": 0, "No": 0}
    for plan in plans:
        case_id = f"case_{plan.index:0{width}d}"
        case = make_case(seed, plan.index, size, plan.lesion_organ, case_id, profile)
        volume_path = f"volumes/{case_id}.nii.gz"
        mask_path = f"masks/{case_id}_labels.nii.gz"
        write_volume(out / volume_path, case.hu, case.geometry)
        write_volume(out / mask_path, case.labels, case.geometry)
        records = case_questions(case, plan, seed, volume_path, mask_path)
        for entry in records:
            lines.append(_json_dumps(entry))
            task_counts[entry["task"]] = task_counts.get(entry["task"], 0) + 1
            if entry["task"] == EXISTENCE_TASK:
                existence[entry["answer"]] += 1
        case_facts.append({**case.facts, "volume": volume_path, "mask": mask_path, "questions": len(records)})
    (out / "phantoms.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with_lesion = sum(1 for plan in plans if plan.lesion_organ)
    manifest = {
        "generator": "photonlib.data.phantoms",
        "generator_version": GENERATOR_VERSION,
        "photonlib_version": __version__,
        "seed": int(seed),
        "n": int(n),
        "parameters": {
            "size": size,
            "lesion_probability": float(lesion_probability),
            **SIZES[size].__dict__,
            "lesion_profile": lesions.to_dict(),
        },
        "labels": LABELS,
        "questions_file": "phantoms.jsonl",
        "counts": {
            "cases": n,
            "cases_with_lesion": with_lesion,
            "questions": len(lines),
            "questions_by_task": task_counts,
            "existence_answers": existence,
        },
        "cases": case_facts,
    }
    (out / "manifest.json").write_text(_json_dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return PhantomDataset(
        folder=out,
        jsonl=out / "phantoms.jsonl",
        manifest=out / "manifest.json",
        cases=n,
        cases_with_lesion=with_lesion,
        questions=len(lines),
        seconds=time.perf_counter() - started,
    )

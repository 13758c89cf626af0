"""From a volume in patient space to the model's voxel grid, keeping the exact geometry.

The released Photon preprocessing (docs/method.md section 1), every number configurable:

1. reorient to RAI (index axes toward Right, Anterior, Inferior; oblique axes stay oblique),
2. resample to 1 mm isotropic spacing (linear),
3. centre-crop or pad to 364^3 voxels,
4. clip intensities (CT: HU window [-1000, 1000]; MR: percentiles, see ``intensity``),
5. resize (trilinear) to D x H x W = 140 x 280 x 280,
6. min-max scale to [0, 1], and
7. flip the W axis.

Steps 1-3 are index relabelling plus one linear resampling, done as a single SimpleITK
resample onto the 364^3 grid; step 5 is a second resample whose sample positions are those of
trilinear resizing with ``align_corners=False``. Because every step is a resampling onto an
explicit grid, the model array comes with a :class:`VolumeGeometry` that says where each of its
voxels sits in the patient; :mod:`photonlib.volume.heatmap` uses it to map model output back.

Array order: the model array is ``(D, H, W)``, which is the KJI order of its geometry
(D = k, H = j, W = i).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from photonlib.errors import ConfigurationError
from photonlib.geometry import VolumeGeometry
from photonlib.volume.image import Volume, reference_image

IntensityMode = Literal["auto", "ct", "percentile", "minmax", "none"]

# Unit vectors (LPS) of the anatomical direction each orientation letter points toward.
_LETTER_TO_LPS = {
    "L": (1, 0, 0), "R": (-1, 0, 0),
    "P": (0, 1, 0), "A": (0, -1, 0),
    "S": (0, 0, 1), "I": (0, 0, -1),
}  # fmt: skip


@dataclass(frozen=True)
class PreprocessConfig:
    """Every number of the preprocessing. The defaults are the released Photon's.

    Grid sizes are given in model axis order ``(D, H, W)``.
    """

    orientation: str = "RAI"
    isotropic_spacing_mm: float = 1.0
    field_of_view: tuple[int, int, int] = (364, 364, 364)  # centre crop/pad at isotropic spacing
    model_grid: tuple[int, int, int] = (140, 280, 280)
    # auto: CT window for CT (DICOM modality, or HU-like values), percentiles otherwise,
    # no change for benchmark arrays already in [0, 1].
    intensity: IntensityMode = "auto"
    ct_window_hu: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    flip_w: bool = True

    def __post_init__(self) -> None:
        code = self.orientation.upper()
        axes = [np.nonzero(_LETTER_TO_LPS.get(letter, (0, 0, 0)))[0] for letter in code]
        if len(code) != 3 or any(len(a) != 1 for a in axes) or len({int(a[0]) for a in axes}) != 3:
            raise ConfigurationError(f"orientation must name three different anatomical axes like 'RAI', got {self.orientation!r}")
        object.__setattr__(self, "orientation", code)
        for name in ("field_of_view", "model_grid"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 3 or min(value) < 1:
                raise ConfigurationError(f"{name} needs three positive sizes (D, H, W), got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        if not self.isotropic_spacing_mm > 0:
            raise ConfigurationError(f"isotropic_spacing_mm must be positive, got {self.isotropic_spacing_mm}")
        if self.intensity not in ("auto", "ct", "percentile", "minmax", "none"):
            raise ConfigurationError(f"intensity must be auto, ct, percentile, minmax or none, got {self.intensity!r}")
        low, high = self.ct_window_hu
        if not low < high:
            raise ConfigurationError(f"ct_window_hu must be (low, high) with low < high, got {self.ct_window_hu}")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ConfigurationError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")

    @classmethod
    def preset(cls, name: str) -> PreprocessConfig:
        """Named configurations: ``photon`` (released), ``small`` (CPU demos), ``tiny`` (tests)."""
        try:
            return PREPROCESS_PRESETS[name]
        except KeyError:
            raise ConfigurationError(f"unknown preprocessing preset {name!r}; known: {', '.join(PREPROCESS_PRESETS)}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})


PREPROCESS_PRESETS = {
    "photon": PreprocessConfig(),
    # Same 364 mm field of view, coarser grids for CPUs: 4 x 8 x 8 patches of 14^3 (64 tokens
    # after merging) and 2 x 4 x 4 (8 tokens). Their final voxels are 3.25 mm and more, so the
    # intermediate isotropic grid is 2 mm (resp. 4 mm) instead of 1 mm: 8 (64) times fewer voxels.
    "small": PreprocessConfig(isotropic_spacing_mm=2.0, field_of_view=(182, 182, 182), model_grid=(56, 112, 112)),
    "tiny": PreprocessConfig(isotropic_spacing_mm=4.0, field_of_view=(91, 91, 91), model_grid=(28, 56, 56)),
}


@dataclass(frozen=True)
class PreparedVolume:
    """The model's input array and everything needed to map model output back to the patient."""

    array: np.ndarray  # float32, (D, H, W), values in [0, 1]
    geometry: VolumeGeometry  # where each model voxel sits; array is its KJI array
    source_geometry: VolumeGeometry  # the volume as read (maps go back onto this grid)
    config: PreprocessConfig
    intensity_mode: str  # the mode actually used ("ct", "percentile", "minmax", "none")
    intensity_window: tuple[float, float]  # source intensities clipped to this range
    notes: tuple[str, ...] = field(default_factory=tuple)


def reorient_geometry(geometry: VolumeGeometry, orientation: str) -> VolumeGeometry:
    """The same voxels relabelled so the index axes point toward ``orientation``.

    Matches SimpleITK's ``DICOMOrient`` (tested): axes are matched greedily by the largest
    direction cosine, so oblique volumes get the closest anatomical orientation.
    """
    direction = geometry.direction
    targets = np.array([_LETTER_TO_LPS[letter] for letter in orientation.upper()], dtype=float)
    # Assign source axes to target axes, strongest alignment first.
    alignment = np.abs(targets @ direction)  # [target, source]
    permutation = [-1, -1, -1]
    free_targets, free_sources = {0, 1, 2}, {0, 1, 2}
    for flat in np.argsort(-alignment, axis=None):
        target, source = divmod(int(flat), 3)
        if target in free_targets and source in free_sources:
            permutation[target] = source
            free_targets.discard(target)
            free_sources.discard(source)
    flips = tuple(bool(targets[t] @ direction[:, permutation[t]] < 0) for t in range(3))

    size = tuple(geometry.size[s] for s in permutation)
    spacing = tuple(geometry.spacing[s] for s in permutation)
    new_direction = np.stack(
        [direction[:, permutation[t]] * (-1 if flips[t] else 1) for t in range(3)], axis=1
    )
    first_voxel = np.zeros(3)
    for t in range(3):
        if flips[t]:
            first_voxel[permutation[t]] = geometry.size[permutation[t]] - 1
    origin = geometry.index_to_lps(first_voxel)
    return VolumeGeometry(size, spacing, tuple(origin), new_direction)


def field_of_view_geometry(source: VolumeGeometry, config: PreprocessConfig) -> VolumeGeometry:
    """The isotropic, reoriented, centre-cropped/padded grid (steps 1-3), before resizing."""
    oriented = reorient_geometry(source, config.orientation)
    spacing = config.isotropic_spacing_mm
    # Size after resampling to isotropic spacing, as a resample that keeps the origin computes it.
    resampled = np.maximum(1, np.round(np.array(oriented.size) * np.array(oriented.spacing) / spacing)).astype(int)
    target = np.array(config.field_of_view[::-1])  # (D, H, W) -> (i, j, k)
    # Centre crop (positive start) or pad (negative start) by whole voxels.
    start = np.where(resampled >= target, (resampled - target) // 2, -((target - resampled) // 2))
    origin = oriented.origin_lps + oriented.direction @ (start * spacing)
    return VolumeGeometry(tuple(target), (spacing,) * 3, tuple(origin), oriented.direction)


def resized_geometry(grid: VolumeGeometry, new_size_ijk: tuple[int, int, int]) -> VolumeGeometry:
    """The grid whose voxel centres are where trilinear resizing (align_corners=False) samples."""
    scale = np.array(grid.size, dtype=float) / np.array(new_size_ijk, dtype=float)
    spacing = np.array(grid.spacing) * scale
    first_centre = grid.index_to_lps(0.5 * scale - 0.5)  # continuous index of new voxel 0
    return VolumeGeometry(new_size_ijk, tuple(spacing), tuple(first_centre), grid.direction)


def flipped_geometry(grid: VolumeGeometry, axis_ijk: int) -> VolumeGeometry:
    """The same grid with one index axis reversed (what flipping the array along it means)."""
    direction = grid.direction.copy()
    last = np.zeros(3)
    last[axis_ijk] = grid.size[axis_ijk] - 1
    origin = grid.index_to_lps(last)
    direction[:, axis_ijk] *= -1
    return VolumeGeometry(grid.size, grid.spacing, tuple(origin), direction)


_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def choose_intensity_window(volume: Volume, config: PreprocessConfig) -> tuple[str, tuple[float, float], str]:
    """Which normalisation applies, its clip window, and a note saying why."""
    mode = config.intensity
    reason = f"intensity mode {mode!r} from the configuration"
    if mode == "auto":
        low_value = float(np.min(volume.array))
        if volume.intensity_normalized:
            mode, reason = "none", "values already in [0, 1] (benchmark array): left as they are"
        elif volume.modality == "CT":
            mode, reason = "ct", "DICOM modality CT: HU window"
        elif volume.modality is None and low_value <= -500:
            mode, reason = "ct", f"minimum {low_value:g} looks like Hounsfield units (air): HU window"
        else:
            kind = f"modality {volume.modality}" if volume.modality else "no Hounsfield-like air values"
            mode, reason = "percentile", f"{kind}: percentile normalisation"
    if mode == "ct":
        window = tuple(float(v) for v in config.ct_window_hu)
    elif mode == "percentile":
        window = tuple(float(v) for v in np.percentile(volume.array, config.percentiles))
        if window[0] == window[1]:  # mostly-constant images: fall back to the full range
            window = volume.intensity_range
    elif mode == "minmax":
        window = volume.intensity_range
    else:
        window = volume.intensity_range
    return mode, window, reason


def prepare_label_map(labels: Volume, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """A label map on the model grid of ``prepare_volume(image, config)`` for an image in the
    label map's geometry: the same field of view, resizing and flip, nearest-neighbour, the
    values untouched (outside the source: 0). (D, H, W) of the label map's values."""
    prepared = prepare_volume(labels, replace(config, intensity="none"), interpolation="nearest")
    return np.rint(prepared.array).astype(np.int32)


def prepare_volume(
    volume: Volume, config: PreprocessConfig = PreprocessConfig(), interpolation: str = "linear"
) -> PreparedVolume:
    """Turn a volume into the model's (D, H, W) array in [0, 1], with its exact geometry.

    ``interpolation``: ``linear`` (images) or ``nearest`` (label maps, see ``prepare_label_map``).
    """
    if interpolation not in _INTERPOLATORS:
        raise ConfigurationError(f"interpolation must be one of {', '.join(_INTERPOLATORS)}, got {interpolation!r}")
    interpolator = _INTERPOLATORS[interpolation]
    mode, window, reason = choose_intensity_window(volume, config)
    notes = [reason]
    source = volume.to_sitk()
    source = sitk.Cast(source, sitk.sitkFloat32)
    model_size_ijk = tuple(config.model_grid[::-1])

    if volume.source_format == "npy" and volume.intensity_normalized:
        # Benchmark arrays were preprocessed by the benchmark (orientation, crop): only resize.
        grid = volume.geometry
        notes.append("benchmark array: orientation, spacing and crop left as they are; only resized")
        flip = False
    else:
        grid = field_of_view_geometry(volume.geometry, config)
        # Pad with the window's low end, so padding looks like air/background after scaling.
        source = sitk.Resample(source, reference_image(grid), sitk.Transform(), interpolator, window[0], sitk.sitkFloat32)
        flip = config.flip_w

    if mode != "none":  # the released order: clip on the isotropic grid, before resizing
        source = sitk.Clamp(source, sitk.sitkFloat32, window[0], window[1])
    model_grid = resized_geometry(grid, model_size_ijk)
    resized = sitk.Resample(
        source, reference_image(model_grid), sitk.Transform(), interpolator, window[0], sitk.sitkFloat32,
        True,  # nearest-neighbour extrapolation: edge voxels, as trilinear resizing clamps
    )
    array = sitk.GetArrayFromImage(resized)  # (D, H, W)

    if mode != "none":
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    if flip:
        array = array[:, :, ::-1]
        model_grid = flipped_geometry(model_grid, 0)  # W is the i axis
    return PreparedVolume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        geometry=model_grid,
        source_geometry=volume.geometry,
        config=config,
        intensity_mode=mode,
        intensity_window=(float(window[0]), float(window[1])),
        notes=tuple(notes),
    )

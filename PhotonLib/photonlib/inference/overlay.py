"""The PNG of ``photon ask --png``: axial, coronal and sagittal slices a radiologist reads at a glance.

What the picture shows, and how it is built:

* **Patient orientation, radiological convention**, whatever the volume's own orientation:
  each panel is a plane resampled along patient axes (not the volume's index axes), so an
  oblique, flipped or permuted scan looks like any other. Axial is seen from the feet (patient's
  right on the image left, anterior up: letters R/L, A/P), coronal from the front (R/L, S/I),
  sagittal from the patient's left (anterior on the image left: A/P, S/I). The letters are
  derived from the same display axes the pixels are sampled along (:func:`plan_views`).
* **Square pixels in millimetres**: every plane is sampled with one pixel size on both axes, so
  anisotropic voxels (e.g. 0.7 x 0.7 x 5 mm) keep the anatomy's proportions.
* **Through the most-kept region**: the three planes cross at the keep-probability-weighted
  centre of the largest connected region of kept voxels (snapped onto that region, so a
  crescent-shaped region is still cut through); see :func:`find_focus`.
* Grey: the image in a soft-tissue window (W 400 / L 40 HU) for CT, the 0.5-99.5th
  percentiles otherwise. Colour: keep probability (``inferno``, more opaque where higher) with a
  colour bar 0..1. Cyan outline: the kept tokens. Caption: question, answer, tokens kept of
  total, model.

The geometry (:func:`find_focus`, :func:`plan_views`, :func:`sample_plane`) and the caption
(:func:`caption_lines`) need NumPy and SimpleITK only; drawing needs matplotlib
(``pip install "photonlib[png]"``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from photonlib.errors import MissingExtraError, UsageError
from photonlib.geometry import VolumeGeometry
from photonlib.volume.image import geometry_to_sitk, reference_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: CT soft-tissue window (W 400 / L 40 HU), the usual abdominal reading window.
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
#: Longest side of a panel in pixels; coarser sampling beyond it keeps the PNG small and fast.
MAX_PANEL_PIXELS = 512

_LPS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))  # (toward +axis, toward -axis) per LPS axis
_L, _P, _S = np.eye(3)
# Display axes in LPS: (name, how it is seen, image left -> right, image top -> bottom).
_VIEWS = (
    ("axial", "seen from the feet", _L, _P),
    ("coronal", "seen from the front", _L, -_S),
    ("sagittal", "seen from the patient's left", _P, -_S),
)


# ----------------------------------------------------------------------------- grey-level window
@dataclass(frozen=True)
class DisplayWindow:
    """Grey-level window: intensities ``low`` (black) to ``high`` (white), and how it was chosen."""

    low: float
    high: float
    label: str


def display_window(image_kji: np.ndarray, is_ct: bool) -> DisplayWindow:
    """Soft-tissue window for CT (Hounsfield units), the 0.5-99.5th percentiles otherwise."""
    if is_ct:
        return DisplayWindow(*SOFT_TISSUE_WINDOW_HU, "soft-tissue window W 400 / L 40 HU")
    finite = np.asarray(image_kji)[np.isfinite(image_kji)]
    low, high = (float(v) for v in np.percentile(finite, (0.5, 99.5))) if finite.size else (0.0, 1.0)
    if high <= low:  # a (nearly) constant image: any window shows it
        high = low + 1.0
    return DisplayWindow(low, high, f"window {low:.4g} to {high:.4g} (0.5-99.5th percentile)")


# ----------------------------------------------------------------------------- where to cut
@dataclass(frozen=True)
class Focus:
    """The patient position the three slices pass through, and why it was chosen."""

    lps: np.ndarray  # (3,) millimetres
    index_ijk: tuple[int, int, int]  # the voxel at that position
    description: str


def find_focus(heatmap_kji: np.ndarray, geometry: VolumeGeometry, keep_mask_kji: np.ndarray | None = None) -> Focus:
    """The centre of the most-kept region: where the slices are cut.

    The region is the largest 26-connected set of kept voxels (``keep_mask_kji``; without one,
    voxels with keep probability > 0.5, ITS's own keep rule). If every voxel was kept (nothing
    dropped), the voxels with keep probability > 0.5 are used instead, and with none of those
    the voxel with the highest probability. Its keep-probability-weighted centroid is snapped
    to the nearest voxel of the region, so the slices always cut through it.
    """
    heatmap = np.asarray(heatmap_kji, dtype=np.float32)
    if heatmap.shape != geometry.array_shape:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match the volume {geometry.array_shape} (KJI)")
    probable = heatmap > 0.5
    if keep_mask_kji is None:
        region, what = probable, "region with keep probability > 0.5"
    else:
        region, what = np.asarray(keep_mask_kji, dtype=bool), "kept region"
        if region.shape != heatmap.shape:
            raise ValueError(f"keep mask shape {region.shape} does not match the heatmap {heatmap.shape}")
        if region.all() and probable.any():  # nothing was dropped: show where the model looked most
            region, what = probable, "region with keep probability > 0.5 (every token kept)"
    if not region.any():
        kji = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        ijk = np.array(kji[::-1])
        return Focus(geometry.index_to_lps(ijk), tuple(int(v) for v in ijk), "the voxel with the highest keep probability")
    labels = sitk.GetArrayFromImage(
        sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(region.astype(np.uint8)), True))
    )  # RelabelComponent numbers components by size: 1 is the largest
    kji = np.argwhere(labels == 1)
    weights = heatmap[tuple(kji.T)].astype(np.float64) + 1e-6
    centroid_lps = geometry.index_to_lps((kji[:, ::-1] * weights[:, None]).sum(0) / weights.sum())
    points_lps = geometry.index_to_lps(kji[:, ::-1])
    nearest = int(np.argmin(np.linalg.norm(points_lps - centroid_lps, axis=1)))
    return Focus(
        points_lps[nearest],
        tuple(int(v) for v in kji[nearest, ::-1]),
        f"slices through the keep-weighted centre of the largest {what}",
    )


# ----------------------------------------------------------------------------- display planes
def _letter(direction_lps: np.ndarray) -> str:
    """Anatomical letter of the direction a display axis points to (it is a patient axis)."""
    axis = int(np.argmax(np.abs(direction_lps)))
    positive, negative = _LPS_LETTERS[axis]
    return positive if direction_lps[axis] > 0 else negative


@dataclass(frozen=True)
class SliceView:
    """One panel: a plane through the focus, sampled on a patient-aligned grid of square pixels.

    ``plane`` is a one-voxel-thick :class:`VolumeGeometry` whose ``i`` axis runs left to right on
    the image and ``j`` axis top to bottom, so ``sample_plane`` gives ``(rows, columns)``.
    """

    name: str  # "axial", "coronal", "sagittal"
    seen_from: str
    plane: VolumeGeometry
    letters: dict[str, str]  # edge ("left", "right", "top", "bottom") -> anatomical letter

    @property
    def column_lps(self) -> np.ndarray:
        """Unit vector in LPS toward the image's right."""
        return self.plane.direction[:, 0]

    @property
    def row_lps(self) -> np.ndarray:
        """Unit vector in LPS toward the image's bottom."""
        return self.plane.direction[:, 1]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the sampled plane."""
        return self.plane.size[1], self.plane.size[0]

    @property
    def pixel_mm(self) -> float:
        return self.plane.spacing[0]

    def lps_to_pixel(self, point_lps: np.ndarray) -> tuple[float, float]:
        """(row, column) of a patient position projected onto this plane."""
        i, j, _ = self.plane.lps_to_index(point_lps)
        return float(j), float(i)


def plan_views(geometry: VolumeGeometry, focus_lps: np.ndarray, max_pixels: int = MAX_PANEL_PIXELS) -> list[SliceView]:
    """Axial, coronal and sagittal planes through ``focus_lps``, covering the whole volume.

    Each plane is aligned with patient axes (radiological convention, see the module
    docstring), whatever the volume's direction cosines; its pixels are square, as fine as the
    finest voxel spacing (coarser only beyond ``max_pixels`` on a side).
    """
    focus = np.asarray(focus_lps, dtype=float)
    corners_ijk = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=float)
    corners_ijk = corners_ijk * np.array(geometry.size) - 0.5  # outer faces of the edge voxels
    corners = geometry.index_to_lps(corners_ijk) - focus
    views = []
    for name, seen_from, column, row in _VIEWS:
        low = np.array([corners @ column, corners @ row]).min(axis=1)
        high = np.array([corners @ column, corners @ row]).max(axis=1)
        pixel = max(min(geometry.spacing), float((high - low).max()) / max_pixels)
        # Pixel centres at whole multiples of the pixel size from the focus: the cut through it
        # is exact and the marks of where the other panels cut line up.
        first = np.round(low / pixel + 0.5)
        columns, rows = (max(1, int(n)) for n in np.ceil(high / pixel - 0.5 - first - 1e-6) + 1)
        origin = focus + first[0] * pixel * column + first[1] * pixel * row
        plane = VolumeGeometry((columns, rows, 1), (pixel,) * 3, tuple(origin), np.stack([column, row, np.cross(column, row)], 1))
        letters = {"left": _letter(-column), "right": _letter(column), "top": _letter(-row), "bottom": _letter(row)}
        views.append(SliceView(name, seen_from, plane, letters))
    return views


def sample_plane(array_kji: np.ndarray, geometry: VolumeGeometry, view: SliceView, *, linear: bool, fill: float = np.nan) -> np.ndarray:
    """The volume's values on the view's plane, ``(rows, columns)`` float32; ``fill`` outside it."""
    image = geometry_to_sitk(np.ascontiguousarray(array_kji, dtype=np.float32), geometry)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    resampled = sitk.Resample(image, reference_image(view.plane), sitk.Transform(), interpolator, float(fill), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)[0]


# ----------------------------------------------------------------------------- caption
@dataclass(frozen=True)
class Caption:
    """What the picture is about: the question, the answer and the run that gave it."""

    question: str
    answer: str
    tokens_kept: int
    tokens_total: int
    model: str


def caption_lines(caption: Caption, window: DisplayWindow, width: int = 110) -> list[str]:
    """The text above the panels: question and answer (wrapped), tokens kept, model, window."""
    share = 100 * caption.tokens_kept / caption.tokens_total if caption.tokens_total else 0.0
    lines = textwrap.wrap(f"Q: {caption.question.strip()}", width) or ["Q:"]
    lines += textwrap.wrap(f"A: {caption.answer.strip()}", width) or ["A: (no answer)"]
    lines.append(
        f"{caption.tokens_kept} of {caption.tokens_total} visual tokens kept ({share:.1f} %)"
        f"  |  model {caption.model}  |  {window.label}"
    )
    return lines


# ----------------------------------------------------------------------------- drawing
def require_matplotlib() -> None:
    """Fail early, with what to install, when the picture cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("--png needs matplotlib: pip install 'photonlib[png]' (or pip install matplotlib)") from None


def overlay_figure(
    image_kji: np.ndarray,
    heatmap_kji: np.ndarray,
    geometry: VolumeGeometry,
    window: DisplayWindow | tuple[float, float],
    *,
    keep_mask_kji: np.ndarray | None = None,
    caption: Caption | None = None,
) -> Figure:
    """The matplotlib figure: three panels, colour bar, caption (when given) and a legend line."""
    require_matplotlib()
    from matplotlib import colormaps, patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    if image_kji.shape != heatmap_kji.shape:
        raise ValueError(f"image {image_kji.shape} and heatmap {heatmap_kji.shape} differ in shape")
    if not isinstance(window, DisplayWindow):
        window = DisplayWindow(float(window[0]), float(window[1]), f"window {window[0]:g} to {window[1]:g}")
    focus = find_focus(heatmap_kji, geometry, keep_mask_kji)
    kept = np.asarray(keep_mask_kji if keep_mask_kji is not None else np.asarray(heatmap_kji) > 0.5, dtype=np.float32)
    views = plan_views(geometry, focus.lps)

    heat_colours = colormaps["inferno"](np.linspace(0, 1, 256))
    heat_colours[:, 3] = np.linspace(0.0, 0.55, 256)  # anatomy stays readable under it; low values nearly clear
    heat_map = ListedColormap(heat_colours)
    grey_map = colormaps["gray"].with_extremes(bad="black")  # outside the volume: black

    # Layout in inches: one millimetre is the same length on every panel, so the three compare.
    width_in, margin, gap, bar_width, bar_room = 13.0, 0.25, 0.4, 0.22, 0.9
    widths_mm = [view.shape[1] * view.pixel_mm for view in views]
    heights_mm = [view.shape[0] * view.pixel_mm for view in views]
    inch_per_mm = (width_in - 2 * margin - 2 * gap - bar_room) / sum(widths_mm)
    panel_height = inch_per_mm * max(heights_mm)
    lines = caption_lines(caption, window) if caption is not None else []
    outline_rule = "kept tokens" if keep_mask_kji is not None else "keep probability > 0.5 (ITS's keep rule)"
    position = ", ".join(f"{v:.0f}" for v in focus.lps)
    legend = (
        f"{focus.description[0].upper()}{focus.description[1:]} (LPS {position} mm; triangles: where the other panels cut)."
        f"  Cyan outline: {outline_rule}.  Colour: keep probability.  Radiological convention: patient's right on the"
        f" image left; letters mark patient directions." + ("" if caption is not None else f"  {window.label}.")
    )
    legend_lines = textwrap.wrap(legend, 150)
    caption_height = 0.3 * len(lines) + 0.2 if lines else 0.0
    title_height, legend_height = 0.45, 0.2 * len(legend_lines) + 0.2
    height_in = margin + caption_height + title_height + panel_height + 0.15 + legend_height
    figure = Figure(figsize=(width_in, height_in), dpi=100, facecolor="black")
    panel_bottom = (legend_height + 0.15) / height_in

    outline = [patheffects.withStroke(linewidth=3, foreground="black")]
    x = margin
    for view, width_mm, height_mm in zip(views, widths_mm, heights_mm):
        box_height = inch_per_mm * height_mm
        bottom = panel_bottom + (panel_height - box_height) / 2 / height_in  # centred in the row
        axes = figure.add_axes((x / width_in, bottom, inch_per_mm * width_mm / width_in, box_height / height_in))
        x += inch_per_mm * width_mm + gap
        grey = sample_plane(image_kji, geometry, view, linear=True)
        heat = sample_plane(heatmap_kji, geometry, view, linear=False, fill=0.0)
        mask = sample_plane(kept, geometry, view, linear=False, fill=0.0)
        axes.imshow(grey, cmap=grey_map, vmin=window.low, vmax=window.high, interpolation="bilinear", aspect="equal")
        axes.imshow(heat, cmap=heat_map, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        if 0 < mask.sum() < mask.size:
            axes.contour(mask, levels=[0.5], colors=["#00e5ff"], linewidths=1.4)
        rows, columns = view.shape
        row, col = view.lps_to_pixel(focus.lps)
        tick, offset = dict(markersize=7, color="#00e5ff", clip_on=False, linestyle="none"), 0.025 * max(rows, columns)
        axes.plot([col], [-0.5 - offset], marker="v", **tick)  # where the other two panels cut
        axes.plot([col], [rows - 0.5 + offset], marker="^", **tick)
        axes.plot([-0.5 - offset], [row], marker=">", **tick)
        axes.plot([columns - 0.5 + offset], [row], marker="<", **tick)
        axes.set_xlim(-0.5, columns - 0.5)
        axes.set_ylim(rows - 0.5, -0.5)
        axes.set_axis_off()
        axes.set_title(f"{view.name.capitalize()} ({view.seen_from})", color="white", fontsize=11, pad=16)
        for edge, (tx, ty, ha, va) in {
            "left": (0.015, 0.5, "left", "center"), "right": (0.985, 0.5, "right", "center"),
            "top": (0.5, 0.985, "center", "top"), "bottom": (0.5, 0.015, "center", "bottom"),
        }.items():  # fmt: skip
            axes.text(tx, ty, view.letters[edge], transform=axes.transAxes, ha=ha, va=va, color="white",
                      fontsize=15, fontweight="bold", path_effects=outline)  # fmt: skip
        _scale_bar(axes, view, outline)
    bar_axes = figure.add_axes((x / width_in, panel_bottom, bar_width / width_in, panel_height / height_in))
    colour_bar = figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps["inferno"]), cax=bar_axes)
    colour_bar.set_label("keep probability", color="white", fontsize=11)
    colour_bar.ax.tick_params(colors="white", labelsize=9)
    colour_bar.outline.set_edgecolor("white")

    if caption is not None:
        # Question and answer first and brightest; the run's numbers below them, quieter.
        figure.text(margin / width_in, 1 - margin / height_in, "\n".join(lines[:-1]), color="white", fontsize=13,
                    va="top", ha="left", linespacing=1.5)  # fmt: skip
        figure.text(margin / width_in, 1 - (margin + caption_height - 0.3) / height_in, lines[-1], color="#c8c8c8",
                    fontsize=11, va="bottom", ha="left")  # fmt: skip
    figure.text(margin / width_in, 0.1 / height_in, "\n".join(legend_lines), color="#c8c8c8", fontsize=9,
                ha="left", va="bottom", linespacing=1.4)  # fmt: skip
    return figure


def _scale_bar(axes, view: SliceView, outline) -> None:
    """A 1, 2, 5 x 10^n mm bar in the lower left: the size of what is shown, at a glance."""
    width_mm = view.shape[1] * view.pixel_mm
    length = max(
        (m * 10**e for e in range(0, 4) for m in (1, 2, 5) if m * 10**e <= width_mm / 5), default=1
    )
    rows, columns = view.shape
    x0, y = 0.04 * columns, rows - 1 - 0.05 * rows
    axes.plot([x0, x0 + length / view.pixel_mm], [y, y], color="white", linewidth=2.5, solid_capstyle="butt")
    axes.text(x0, y - 0.02 * rows, f"{length:g} mm", color="white", fontsize=8, ha="left", va="bottom",
              path_effects=outline)  # fmt: skip


def render_figure(figure: Figure) -> np.ndarray:
    """A figure as an RGB uint8 array (rows x columns x 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def overlay_panels(
    image_kji: np.ndarray,
    heatmap_kji: np.ndarray,
    geometry: VolumeGeometry,
    window: DisplayWindow | tuple[float, float],
    *,
    keep_mask_kji: np.ndarray | None = None,
) -> np.ndarray:
    """The three panels and colour bar, without the caption, as RGB uint8 (for composing)."""
    return render_figure(overlay_figure(image_kji, heatmap_kji, geometry, window, keep_mask_kji=keep_mask_kji))


def write_overlay_png(
    path: str | Path,
    image_kji: np.ndarray,
    heatmap_kji: np.ndarray,
    geometry: VolumeGeometry,
    window: DisplayWindow | tuple[float, float],
    *,
    keep_mask_kji: np.ndarray | None = None,
    caption: Caption | None = None,
) -> Path:
    """Write the picture (see the module docstring) as a PNG; returns its path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"{path.name}: the picture is written as PNG; use a .png name")
    figure = overlay_figure(image_kji, heatmap_kji, geometry, window, keep_mask_kji=keep_mask_kji, caption=caption)
    picture = render_figure(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(path))  # RGB, no alpha channel
    return path

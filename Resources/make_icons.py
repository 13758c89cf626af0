"""Draw the PhotonSlicer icons (extension and module) as 128 x 128 RGBA PNGs.

The picture is a stylised axial CT slice (grey body, dark lungs, bright spine) with a warm
heatmap blob over one lung and a speech bubble holding a question mark: "ask a question
about this volume, see where the answer comes from".

Only numpy and the standard library are used (zlib + struct write the PNG), so the icons can
be redrawn anywhere the tests run:

    python Resources/make_icons.py

writes ``Resources/Icons/PhotonSlicer.png`` (extension icon, referenced by EXTENSION_ICONURL)
and ``PhotonSlicer/Resources/Icons/PhotonSlicer.png`` (module icon). Output is deterministic.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

ICON_SIZE = 128
# Draw at a higher resolution and average down: cheap anti-aliasing without a graphics library.
SUPERSAMPLING = 4

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
ICON_PATHS = (
    REPOSITORY_ROOT / "Resources" / "Icons" / "PhotonSlicer.png",
    REPOSITORY_ROOT / "PhotonSlicer" / "Resources" / "Icons" / "PhotonSlicer.png",
)


def write_png(path: Path, rgba: np.ndarray) -> None:
    """Write an (height, width, 4) uint8 array as an 8-bit RGBA PNG."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected a (height, width, 4) uint8 array, got {rgba.dtype} {rgba.shape}")
    height, width, _ = rgba.shape

    def chunk(chunk_type: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(chunk_type + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", checksum)

    # Bit depth 8, colour type 6 (RGBA), default compression/filter, no interlace.
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    # Each scanline is prefixed by its filter type; 0 = no filter.
    scanlines = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines, 9))
        + chunk(b"IEND", b"")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def _ellipse(x: np.ndarray, y: np.ndarray, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 <= 1.0


def _rounded_rectangle(
    x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float], radius: float
) -> np.ndarray:
    left, top, right, bottom = box
    dx = np.maximum(np.maximum(left + radius - x, x - (right - radius)), 0.0)
    dy = np.maximum(np.maximum(top + radius - y, y - (bottom - radius)), 0.0)
    inside_box = (x >= left) & (x <= right) & (y >= top) & (y <= bottom)
    return inside_box & (dx**2 + dy**2 <= radius**2)


def _near_polyline(x: np.ndarray, y: np.ndarray, points: np.ndarray, half_width: float) -> np.ndarray:
    """Pixels within half_width of a polyline (a stroke with round caps)."""
    mask = np.zeros(x.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        segment_x, segment_y = bx - ax, by - ay
        length_squared = segment_x**2 + segment_y**2 or 1e-12
        t = np.clip(((x - ax) * segment_x + (y - ay) * segment_y) / length_squared, 0.0, 1.0)
        mask |= (x - ax - t * segment_x) ** 2 + (y - ay - t * segment_y) ** 2 <= half_width**2
    return mask


def _paint(canvas: np.ndarray, mask: np.ndarray, color: tuple[float, float, float], alpha: float | np.ndarray = 1.0):
    """Alpha-blend a colour over the canvas where mask is set (alpha may be per pixel)."""
    weight = np.where(mask, alpha, 0.0)[..., None]
    canvas[..., :3] = canvas[..., :3] * (1.0 - weight) + np.asarray(color) * weight
    canvas[..., 3:] = np.maximum(canvas[..., 3:], weight)


def _heat_color(intensity: np.ndarray) -> np.ndarray:
    """Map 0..1 to a warm red -> orange -> yellow ramp."""
    red = np.ones_like(intensity)
    green = np.clip(intensity * 1.1, 0.0, 1.0) * 0.9
    blue = np.clip(intensity - 0.7, 0.0, 1.0) * 1.5
    return np.stack([red, green, blue], axis=-1)


def draw_icon(size: int = ICON_SIZE) -> np.ndarray:
    """Return the icon as a (size, size, 4) uint8 RGBA array."""
    samples = size * SUPERSAMPLING
    # Coordinates in icon pixels (0..size), sampled at pixel-fraction centres.
    coordinates = (np.arange(samples) + 0.5) / SUPERSAMPLING
    x, y = np.meshgrid(coordinates, coordinates)
    canvas = np.zeros((samples, samples, 4), dtype=np.float64)

    # Dark rounded tile, like a viewer background.
    _paint(canvas, _rounded_rectangle(x, y, (2, 2, 126, 126), 20), (0.07, 0.09, 0.13))

    # Axial CT slice: soft-tissue body, subcutaneous rim, lungs, mediastinum, spine.
    body_center = (60.0, 72.0)
    _paint(canvas, _ellipse(x, y, body_center, (50, 38)), (0.62, 0.62, 0.64))
    _paint(canvas, _ellipse(x, y, body_center, (45, 33)), (0.48, 0.48, 0.50))
    _paint(canvas, _ellipse(x, y, (40, 70), (17, 24)), (0.12, 0.12, 0.14))
    _paint(canvas, _ellipse(x, y, (80, 70), (17, 24)), (0.12, 0.12, 0.14))
    _paint(canvas, _ellipse(x, y, (60, 64), (8, 12)), (0.70, 0.68, 0.68))
    _paint(canvas, _ellipse(x, y, (60, 98), (7, 6)), (0.95, 0.95, 0.93))
    _paint(canvas, _ellipse(x, y, (60, 98), (3, 2.5)), (0.55, 0.55, 0.56))

    # Heatmap blob over the right lung (image left is patient right in radiological view).
    distance_squared = ((x - 38.0) / 13.0) ** 2 + ((y - 76.0) / 15.0) ** 2
    intensity = np.exp(-1.2 * distance_squared)
    heat = _heat_color(intensity)
    # A steep opacity ramp keeps the blob's rim red instead of a muddy brown over the dark lung.
    weight = (np.clip((intensity - 0.1) / 0.5, 0.0, 1.0) ** 0.7 * 0.9)[..., None]
    inside_body = _ellipse(x, y, body_center, (50, 38))[..., None]
    canvas[..., :3] = np.where(inside_body, canvas[..., :3] * (1.0 - weight) + heat * weight, canvas[..., :3])

    # Speech bubble with a tail pointing at the slice.
    bubble_color = (0.96, 0.97, 1.0)
    _paint(canvas, _rounded_rectangle(x, y, (74, 8, 122, 46), 10), bubble_color)
    tail = (y >= 44) & (y <= 58) & (x >= 80) & (x <= 94) & ((x - 80) >= (y - 44) * 0.3) & ((94 - x) >= (y - 44) * 0.7)
    _paint(canvas, tail, bubble_color)

    # Question mark: a hook (arc + stem) and a dot, in the accent blue.
    ink = (0.12, 0.36, 0.78)
    hook_center, hook_radius = (98.0, 21.0), 7.0
    angles = np.linspace(np.deg2rad(200), np.deg2rad(-80), 40)  # from the left, over the top, down the right
    hook = np.stack([hook_center[0] + hook_radius * np.cos(angles), hook_center[1] - hook_radius * np.sin(angles)], 1)
    stem = np.array([[hook[-1, 0], hook[-1, 1]], [98.0, 32.0]])
    _paint(canvas, _near_polyline(x, y, np.vstack([hook, stem]), 2.6), ink)
    _paint(canvas, _ellipse(x, y, (98.0, 39.0), (2.9, 2.9)), ink)

    # Average each SUPERSAMPLING x SUPERSAMPLING block. Colours are averaged premultiplied by
    # alpha so the anti-aliased tile edge does not pick up black fringes.
    blocks = canvas.reshape(size, SUPERSAMPLING, size, SUPERSAMPLING, 4).mean(axis=(1, 3))
    alpha = blocks[..., 3:]
    premultiplied = (canvas[..., :3] * canvas[..., 3:]).reshape(size, SUPERSAMPLING, size, SUPERSAMPLING, 3)
    color = premultiplied.mean(axis=(1, 3)) / np.maximum(alpha, 1e-6)
    rgba = np.concatenate([color, alpha], axis=-1)
    return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def main() -> None:
    icon = draw_icon()
    for path in ICON_PATHS:
        write_png(path, icon)
        print(f"wrote {path.relative_to(REPOSITORY_ROOT)} ({ICON_SIZE} x {ICON_SIZE})")


if __name__ == "__main__":
    main()

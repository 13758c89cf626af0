"""What travels between ``photon serve`` and its clients: formats and version, NumPy only.

The server (``photonlib.serving``) and the client (``photonlib.client``, also used by the Slicer
module) both import this module, so each format is defined once. Like
:mod:`photonlib.geometry`, it needs NumPy and the standard library only.

* **Raw volume** (``application/x-photon-volume``), the upload format for an array that is
  already in memory (Slicer's ``arrayFromVolume`` + ``IJKToRAS``)::

      b"PHOTONV1"                      8 bytes, magic
      header length N                  4 bytes, unsigned little-endian
      header                           N bytes, UTF-8 JSON: {"dtype": "int16",
                                       "geometry": VolumeGeometry.to_dict(), "modality": null}
      voxels                           prod(size) * itemsize bytes, little-endian, KJI C order

  Only pixel data, geometry and an optional modality (``"CT"``, ``"MR"``) are carried: never
  DICOM tags or names.
* **Volume id**: SHA-256 of the voxels (dtype, shape, bytes), the geometry and the modality,
  so the client can tell whether the server already holds a volume before uploading it.
* **NRRD** (heatmaps): a minimal writer for what the server sends (attached data, raw or gzip
  encoding, LPS space) and a reader for that and for what SimpleITK writes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from photonlib.errors import PhotonInputError
from photonlib.geometry import LPS_TO_RAS_3X3, VolumeGeometry

#: Version of the HTTP API (the ``/v1`` prefix). Client and server must agree on it.
API_VERSION = "1"

RAW_VOLUME_MAGIC = b"PHOTONV1"
RAW_VOLUME_CONTENT_TYPE = "application/x-photon-volume"
NRRD_CONTENT_TYPE = "application/x-nrrd"
#: Voxel types a raw volume may carry (little-endian on the wire).
RAW_VOLUME_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
MAX_RAW_HEADER_BYTES = 64 * 1024
_PREAMBLE = struct.Struct("<8sI")


class WireFormatError(PhotonInputError):
    """Bytes that do not follow the format they claim (message says what is wrong)."""


# ---------------------------------------------------------------------------------- raw volumes
def raw_volume_header(array_kji: np.ndarray, geometry: VolumeGeometry, modality: str | None = None) -> bytes:
    """Magic, header length and JSON header of a raw volume (the voxels follow)."""
    dtype = np.dtype(array_kji.dtype)
    if dtype.name not in RAW_VOLUME_DTYPES:
        raise WireFormatError(f"voxel type {dtype} cannot be sent; convert to one of {', '.join(RAW_VOLUME_DTYPES)}")
    if tuple(array_kji.shape) != geometry.array_shape:
        raise WireFormatError(f"array shape {tuple(array_kji.shape)} does not match geometry size {geometry.size} (KJI {geometry.array_shape})")
    header = json.dumps({"dtype": dtype.name, "geometry": geometry.to_dict(), "modality": modality}).encode()
    return _PREAMBLE.pack(RAW_VOLUME_MAGIC, len(header)) + header


def encode_raw_volume(array_kji: np.ndarray, geometry: VolumeGeometry, modality: str | None = None) -> Iterator[bytes]:
    """The raw volume as chunks (header first), without copying the whole array at once."""
    yield raw_volume_header(array_kji, geometry, modality)
    little = np.ascontiguousarray(array_kji, dtype=np.dtype(array_kji.dtype).newbyteorder("<"))
    flat = little.reshape(-1).view(np.uint8)
    step = 8 << 20
    for start in range(0, flat.size, step):
        yield flat[start : start + step].tobytes()


def raw_volume_size(array_kji: np.ndarray, geometry: VolumeGeometry, modality: str | None = None) -> int:
    """Number of bytes :func:`encode_raw_volume` produces (the Content-Length)."""
    return len(raw_volume_header(array_kji, geometry, modality)) + int(array_kji.nbytes)


def parse_raw_volume_header(data: bytes) -> tuple[dict[str, Any], int]:
    """Validate the preamble and JSON header; returns (header, offset of the voxels).

    The header says the dtype and size, so limits can be checked before voxels are decoded.
    """
    if len(data) < _PREAMBLE.size or not data.startswith(RAW_VOLUME_MAGIC):
        raise WireFormatError("not a raw Photon volume (missing the PHOTONV1 magic)")
    _, length = _PREAMBLE.unpack_from(data)
    if length > MAX_RAW_HEADER_BYTES:
        raise WireFormatError(f"raw volume header of {length:,} bytes; at most {MAX_RAW_HEADER_BYTES:,} are accepted")
    end = _PREAMBLE.size + length
    if len(data) < end:
        raise WireFormatError("raw volume truncated inside its header")
    try:
        header = json.loads(data[_PREAMBLE.size : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WireFormatError(f"raw volume header is not JSON ({error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("geometry"), dict):
        raise WireFormatError('raw volume header must be an object with "dtype" and "geometry"')
    if header.get("dtype") not in RAW_VOLUME_DTYPES:
        raise WireFormatError(f"raw volume dtype {header.get('dtype')!r}; accepted: {', '.join(RAW_VOLUME_DTYPES)}")
    modality = header.get("modality")
    if modality is not None and (not isinstance(modality, str) or not re.fullmatch(r"[A-Z]{2,4}", modality)):
        raise WireFormatError(f"modality must be a DICOM modality code such as CT or MR, or null; got {modality!r}")
    try:
        header["geometry"] = VolumeGeometry.from_dict(header["geometry"])
    except (KeyError, TypeError, ValueError) as error:
        raise WireFormatError(f"raw volume geometry is invalid: {error}") from None
    return header, end


def decode_raw_volume_voxels(data: bytes | bytearray | memoryview, header: dict[str, Any], offset: int) -> np.ndarray:
    """The KJI array of a raw volume whose header was parsed (native byte order)."""
    geometry: VolumeGeometry = header["geometry"]
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    expected = geometry.voxel_count * dtype.itemsize
    actual = len(data) - offset
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise WireFormatError(
            f"raw volume {what}: size {geometry.size} of {header['dtype']} needs {expected:,} bytes of voxels, got {actual:,}"
        )
    array = np.frombuffer(data, dtype=dtype, count=geometry.voxel_count, offset=offset)
    return array.reshape(geometry.array_shape).astype(dtype.newbyteorder("="), copy=True)


# ---------------------------------------------------------------------------------- volume ids
def volume_content_id(array_kji: np.ndarray, geometry: VolumeGeometry, modality: str | None = None) -> str:
    """SHA-256 hex of voxels + geometry + modality: the id the server gives this volume."""
    little = np.ascontiguousarray(array_kji, dtype=np.dtype(array_kji.dtype).newbyteorder("<"))
    digest = hashlib.sha256()
    description = {"dtype": little.dtype.name, "shape": list(little.shape), "geometry": geometry.to_dict(), "modality": modality}
    digest.update(b"photon-volume-v1\0" + json.dumps(description, sort_keys=True).encode() + b"\0")
    flat = little.reshape(-1).view(np.uint8)
    step = 64 << 20
    for start in range(0, flat.size, step):
        digest.update(flat[start : start + step])
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- NRRD
_NRRD_TYPES = {
    "float32": "float", "float64": "double", "int16": "short", "uint16": "ushort", "uint8": "uchar",
    "int8": "signed char", "int32": "int", "uint32": "uint",
}  # fmt: skip
_NRRD_TYPE_NAMES = {
    "float": "float32", "double": "float64",
    "short": "int16", "short int": "int16", "signed short": "int16", "signed short int": "int16", "int16": "int16", "int16_t": "int16",
    "ushort": "uint16", "unsigned short": "uint16", "unsigned short int": "uint16", "uint16": "uint16", "uint16_t": "uint16",
    "uchar": "uint8", "unsigned char": "uint8", "uint8": "uint8", "uint8_t": "uint8",
    "signed char": "int8", "int8": "int8", "int8_t": "int8",
    "int": "int32", "signed int": "int32", "int32": "int32", "int32_t": "int32",
    "uint": "uint32", "unsigned int": "uint32", "uint32": "uint32", "uint32_t": "uint32",
}  # fmt: skip


def write_nrrd_bytes(array_kji: np.ndarray, geometry: VolumeGeometry, *, compress: bool = True) -> bytes:
    """A NRRD file (attached data, LPS space) holding ``array_kji`` with ``geometry``."""
    dtype = np.dtype(array_kji.dtype)
    if dtype.name not in _NRRD_TYPES:
        raise WireFormatError(f"cannot write {dtype} voxels to NRRD; use one of {', '.join(_NRRD_TYPES)}")
    if tuple(array_kji.shape) != geometry.array_shape:
        raise WireFormatError(f"array shape {tuple(array_kji.shape)} does not match geometry size {geometry.size}")
    axes = geometry.direction @ np.diag(geometry.spacing)  # columns: i, j, k steps in LPS mm
    directions = " ".join("(" + ",".join(repr(float(v)) for v in axes[:, n]) + ")" for n in range(3))
    header = [
        "NRRD0004",
        "# written by photonlib.wire",
        f"type: {_NRRD_TYPES[dtype.name]}",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: " + " ".join(str(n) for n in geometry.size),
        f"space directions: {directions}",
        "kinds: domain domain domain",
        "endian: little",
        f"encoding: {'gzip' if compress else 'raw'}",
        "space origin: (" + ",".join(repr(float(v)) for v in geometry.origin_lps) + ")",
    ]
    voxels = np.ascontiguousarray(array_kji, dtype=dtype.newbyteorder("<")).tobytes()
    if compress:
        voxels = gzip.compress(voxels, compresslevel=1, mtime=0)  # level 1: heatmaps are blocky
    return ("\n".join(header) + "\n\n").encode("ascii") + voxels


def read_nrrd_bytes(data: bytes) -> tuple[np.ndarray, VolumeGeometry]:
    """Parse a 3D NRRD with attached raw or gzip data into a KJI array and its geometry (LPS)."""
    if not data.startswith(b"NRRD000"):
        raise WireFormatError("not a NRRD file (missing the NRRD000x magic)")
    end = data.find(b"\n\n")
    if end < 0:
        raise WireFormatError("NRRD header has no blank line before the data")
    fields: dict[str, str] = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise WireFormatError("detached NRRD (data file) is not supported; the data must follow the header")
    try:
        dimension = int(fields["dimension"])
        sizes = tuple(int(v) for v in fields["sizes"].split())
        dtype = np.dtype(_NRRD_TYPE_NAMES[fields["type"].lower()])
    except (KeyError, ValueError) as error:
        raise WireFormatError(f"NRRD header lacks or garbles a required field ({error})") from None
    if dimension != 3 or len(sizes) != 3:
        raise WireFormatError(f"a 3D NRRD is needed, got dimension {dimension} with sizes {sizes}")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if fields.get("endian", "little").lower() == "big" else "<")
    encoding = fields.get("encoding", "raw").lower()
    payload = data[end + 2 :]
    if encoding in ("gzip", "gz"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as error:
            raise WireFormatError(f"NRRD gzip data are corrupt or cut short ({error})") from None
    elif encoding != "raw":
        raise WireFormatError(f"NRRD encoding {encoding!r} is not supported; raw or gzip is")
    count = int(np.prod(sizes))
    if len(payload) < count * dtype.itemsize:
        raise WireFormatError(f"NRRD data truncated: {len(payload):,} bytes for {count:,} voxels of {dtype.name}")
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))

    try:
        vectors = re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))
        if len(vectors) == 3:
            axes = np.array([[float(v) for v in vector.split(",")] for vector in vectors]).T
        else:
            axes = np.diag([float(v) for v in fields.get("spacings", "1 1 1").split()])
        origin_vectors = re.findall(r"\(([^)]*)\)", fields.get("space origin", "(0,0,0)"))
        origin = np.array([float(v) for v in origin_vectors[0].split(",")]) if origin_vectors else np.zeros(3)
        space = fields.get("space", "left-posterior-superior").lower()
        if space in ("right-anterior-superior", "ras"):
            axes, origin = LPS_TO_RAS_3X3 @ axes, LPS_TO_RAS_3X3 @ origin
        elif space not in ("left-posterior-superior", "lps"):
            raise WireFormatError(f"NRRD space {space!r} is not supported; LPS or RAS is")
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = axes, origin
        return array, VolumeGeometry.from_ijk_to_lps(matrix, sizes)
    except (ValueError, IndexError) as error:
        if isinstance(error, WireFormatError):
            raise
        raise WireFormatError(f"NRRD geometry fields are malformed ({error})") from None

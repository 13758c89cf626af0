"""Receiving a volume: the body read under size and time limits, then decoded in memory.

The size limit is checked twice: from ``Content-Length`` before a byte of the body is read,
and while the body streams in (chunked uploads have no length). Dimension and voxel limits
are checked from the volume's header before its voxels are decoded. NRRD and NIfTI bytes go
through :func:`photonlib.volume.read_volume`, which needs a file: they are written to a
private temporary folder for exactly as long as decoding takes, then deleted.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.requests import ClientDisconnect, Request

from photonlib.volume import (
    ReadLimits,
    UnreadableVolumeError,
    UnsupportedFormatError,
    Volume,
    read_volume,
)
from photonlib.volume.image import validate_voxels
from photonlib.wire import (
    RAW_VOLUME_MAGIC,
    WireFormatError,
    decode_raw_volume_voxels,
    parse_raw_volume_header,
    volume_content_id,
)

ACCEPTED_FORMATS = (
    "NRRD with attached data (.nrrd), NIfTI-1/2 (.nii, .nii.gz), or the raw Photon volume format "
    "(application/x-photon-volume, see docs/api.md)"
)


class UploadError(Exception):
    """An upload refused before decoding: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class DecodedVolume:
    volume_id: str
    volume: Volume


async def read_body(request: Request, *, max_bytes: int, total_timeout_s: float, idle_timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise UploadError(400, "bad_request", "Content-Length is not a number") from None
        if length > max_bytes:
            raise UploadError(413, "upload_too_large", _too_large(length, max_bytes))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout_s
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UploadError(408, "upload_timeout", f"the upload took longer than {total_timeout_s:g} s")
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout=min(remaining, idle_timeout_s))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise UploadError(408, "upload_timeout", f"no upload data arrived for {idle_timeout_s:g} s") from None
        except ClientDisconnect:
            raise UploadError(400, "client_disconnected", "the client closed the connection during the upload") from None
        body += chunk
        if len(body) > max_bytes:
            raise UploadError(413, "upload_too_large", _too_large(None, max_bytes))
    if not body:
        raise UploadError(400, "empty_body", f"the request body is empty; send the volume as the body: {ACCEPTED_FORMATS}")
    return bytes(body)


def _too_large(length: int | None, max_bytes: int) -> str:
    size = f"{length / 2**20:,.1f} MiB" if length is not None else "more than the limit"
    return (
        f"the upload is {size}; this server accepts at most {max_bytes / 2**20:,.1f} MiB per volume "
        "(photon serve --max-upload-mb)"
    )


def decode_volume(body: bytes, limits: ReadLimits, scratch_dir: Path) -> DecodedVolume:
    """Sniff the format from the bytes, check limits from the header, decode, validate voxels."""
    if body.startswith(RAW_VOLUME_MAGIC):
        volume = _decode_raw(body, limits)
    elif body.startswith(b"NRRD000"):
        _refuse_detached_nrrd(body)
        volume = _decode_with_reader(body, ".nrrd", limits, scratch_dir)
    elif (nifti := _sniff_nifti(body)) is not None:
        volume = _decode_with_reader(_inflate_nifti(body, limits) if nifti == "gzip" else body, ".nii", limits, scratch_dir)
    elif len(body) > 132 and body[128:132] == b"DICM":
        raise UnsupportedFormatError(
            "DICOM files are not accepted: send pixel data and geometry only (the raw Photon volume format, "
            "or NRRD/NIfTI), never DICOM headers"
        )
    else:
        raise UnsupportedFormatError(f"the uploaded bytes are not a volume format this server reads; accepted: {ACCEPTED_FORMATS}")
    return DecodedVolume(volume_content_id(volume.array, volume.geometry, volume.modality), volume)


def _decode_raw(body: bytes, limits: ReadLimits) -> Volume:
    try:
        header, offset = parse_raw_volume_header(body)
        geometry = header["geometry"]
        limits.check(geometry.size, "the uploaded volume")
        if any(n < 2 for n in geometry.size):
            raise UploadError(422, "not_3d", f"size {geometry.size} has a single voxel along an axis; Photon needs a 3D volume")
        array = decode_raw_volume_voxels(body, header, offset)
    except WireFormatError as error:
        raise UnreadableVolumeError(str(error)) from None
    validate_voxels(array, "the uploaded volume")
    return Volume(array=array, geometry=geometry, source_format="raw", modality=header.get("modality"))


def _refuse_detached_nrrd(body: bytes) -> None:
    # A detached header names another file to read: on a server that would be a file of the
    # server's own disk, so only attached data are accepted.
    end = body.find(b"\n\n")
    header = body[: end if end >= 0 else 65536].lower()
    if b"\ndata file:" in header or b"\ndatafile:" in header:
        raise UnsupportedFormatError("detached NRRD headers (data file: ...) are not accepted; send a .nrrd with attached data")


def _sniff_nifti(body: bytes) -> str | None:
    """``"plain"`` or ``"gzip"`` when the bytes are a single-file NIfTI-1/2, else None."""
    if body[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(body[:65536], 544)
        except zlib.error:
            return None
        return "gzip" if _nifti_magic(head) else None
    return "plain" if _nifti_magic(body) else None


def _nifti_magic(head: bytes) -> bool:
    return (len(head) >= 348 and head[344:348] == b"n+1\0") or (len(head) >= 12 and head[4:8] == b"n+2\0")


def _inflate_nifti(body: bytes, limits: ReadLimits) -> bytes:
    """Decompress a .nii.gz with a cap derived from its own header (no gzip bombs)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        head = inflater.decompress(body, 544)
        size, value_bytes, data_offset = _nifti_extent(head)
        limits.check(size, "the uploaded NIfTI")
        cap = data_offset + int(np.prod(size, dtype=np.int64)) * value_bytes + (1 << 20)
        parts, total = [head], len(head)
        tail = inflater.unconsumed_tail
        while tail and total <= cap:
            part = inflater.decompress(tail, 1 << 22)
            parts.append(part)
            total += len(part)
            tail = inflater.unconsumed_tail
        if total > cap:
            raise UnreadableVolumeError("the uploaded NIfTI decompresses to more data than its header describes")
        if not inflater.eof:
            raise UnreadableVolumeError("the uploaded .nii.gz is cut short: its compressed data end early (truncated upload?)")
    except zlib.error as error:
        raise UnreadableVolumeError(f"the uploaded .nii.gz is corrupt ({error})") from None
    return b"".join(parts)


def _nifti_extent(head: bytes) -> tuple[tuple[int, ...], int, int]:
    """(size of the first three axes x further axes, bytes per value, data offset) from a NIfTI header."""
    if len(head) < 348:
        raise UnreadableVolumeError("the uploaded NIfTI is cut short inside its header")
    for order in "<>":
        if struct.unpack_from(order + "i", head, 0)[0] in (348, 540):
            break
    else:
        raise UnreadableVolumeError("the uploaded NIfTI header has an invalid size field")
    if struct.unpack_from(order + "i", head, 0)[0] == 348:
        dims = struct.unpack_from(order + "8h", head, 40)
        bitpix = struct.unpack_from(order + "h", head, 72)[0]
        offset = int(struct.unpack_from(order + "f", head, 108)[0])
    else:
        if len(head) < 540:
            raise UnreadableVolumeError("the uploaded NIfTI-2 is cut short inside its header")
        dims = struct.unpack_from(order + "8q", head, 16)
        bitpix = struct.unpack_from(order + "h", head, 14)[0]
        offset = int(struct.unpack_from(order + "q", head, 168)[0])
    rank = dims[0]
    if not 1 <= rank <= 7 or any(n < 1 for n in dims[1 : rank + 1]) or bitpix < 1:
        raise UnreadableVolumeError(f"the uploaded NIfTI header has invalid dimensions {dims[: rank + 1] if 0 < rank <= 7 else dims}")
    return tuple(int(n) for n in dims[1 : rank + 1]), max(1, bitpix // 8), max(offset, 0)


def _decode_with_reader(body: bytes, suffix: str, limits: ReadLimits, scratch_dir: Path) -> Volume:
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch_dir))
    try:
        path = folder / f"uploaded-volume{suffix}"
        path.write_bytes(body)
        return read_volume(path, limits=limits)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["ACCEPTED_FORMATS", "DecodedVolume", "UploadError", "decode_volume", "read_body"]

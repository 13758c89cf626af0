"""Finding a dataset row's volume on disk (existence checked, never loaded)."""

from __future__ import annotations

from pathlib import Path

from photonlib.data.readers.rows import RowError
from photonlib.data.samples import DatasetError
from photonlib.volume.formats import VOLUME_FILE_SUFFIXES, volume_file_suffix


def volume_stem(name: str) -> str:
    """``test_1_a_1.nii.gz`` -> ``test_1_a_1`` (any volume suffix, case-insensitive)."""
    suffix = volume_file_suffix(name)
    return name[: -len(suffix)] if suffix else name


def volume_folder(volume_root: str | Path | None, default: Path) -> Path:
    """The folder volumes are looked up in; a given one must exist (one clear error instead of
    one missing-volume problem per row)."""
    if volume_root is None:
        return default
    root = Path(volume_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"volume root {root} is not a folder")
    return root


def existing_volume(path: Path) -> Path:
    if not path.exists():
        raise RowError(f"volume {str(path)!r} does not exist", "missing volume")
    return path


class VolumeResolver:
    """Finds a benchmark volume by name under a root folder (results cached per name).

    Tries ``<root>/<name>``, then ``<stem>`` with each of ``suffixes``, then any file of that
    stem with a volume suffix anywhere below the root (the folder is indexed once, on the
    first miss, so nested layouts such as CT-RATE's ``valid_1/valid_1_a/valid_1_a_1.nii.gz``
    work too).
    """

    def __init__(self, root: Path, suffixes: tuple[str, ...] = (".npy", ".nii.gz", ".nii")) -> None:
        self.root = Path(root)
        self.suffixes = suffixes
        self._cache: dict[str, Path | None] = {}
        self._index: dict[str, Path] | None = None

    def resolve(self, name: str) -> Path | None:
        if name not in self._cache:
            self._cache[name] = self._find(name)
        return self._cache[name]

    def _candidates(self, name: str) -> list[str]:
        stem = volume_stem(name)
        return list(dict.fromkeys([name] + [f"{stem}{suffix}" for suffix in self.suffixes]))

    def _find(self, name: str) -> Path | None:
        stem = volume_stem(name)
        for candidate in self._candidates(name):
            if (self.root / candidate).is_file():
                return self.root / candidate
        if self._index is None:
            self._index = {}
            if self.root.is_dir():
                for path in sorted(self.root.rglob("*")):
                    if path.is_file() and path.name.lower().endswith(VOLUME_FILE_SUFFIXES):
                        self._index.setdefault(volume_stem(path.name), path)
        return self._index.get(Path(stem).name)

    def missing_reason(self, name: str) -> str:
        tried = ", ".join(self._candidates(name))
        return f"volume {name!r} not found under {self.root} (looked for {tried} and any {volume_stem(name)}.* below)"


def resolve_relative(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path

"""Finding the data sets on disk, and fetching them from their canonical sources when they are not there.

`data_dir()` answers "where are SST-2 and WikiText-2?" in this order:

1. `$MINILLM_DATA`, if set: a folder you manage. It must hold the files; a typo gives an error, never a
   silent download elsewhere.
2. the cache, `<cache root>/data`, where the cache root is `$MINILLM_CACHE` or `~/.cache/minillm`
   (the root also holds tokenized corpora, see `corpus.tokenize_corpus`).
3. a download into the cache from the canonical archives below, each extracted member checked against a
   SHA-256 recorded here. Offline and with no copy, the error says exactly what to do.

Layout inside a data folder (the one of the project's ../shared/data):

    sst2/train.tsv  sst2/dev.tsv  wikitext2/valid.txt  wikitext2/test.txt  [wikitext2/train.txt]

What this is not: a dataset hub. It knows two archives, keeps no index, and never touches a folder you
point it at with MINILLM_DATA.

Safety of a download: the archive is streamed to a temporary folder inside the destination, every member
is extracted there and verified, and only then moved into place with an atomic rename. An interrupted or
corrupt download therefore never leaves a half-written data file where `data_dir()` would find it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENV_DATA = "MINILLM_DATA"
ENV_CACHE = "MINILLM_CACHE"
ENV_URL_PREFIX = "MINILLM_DATA_URL_"  # + dataset name upper-cased, e.g. MINILLM_DATA_URL_SST2


class DataNotFoundError(FileNotFoundError):
    """The data are not on disk and could not be downloaded; the message says what to do."""


class ChecksumError(ValueError):
    """An extracted file does not have the SHA-256 recorded for it (the file has been deleted)."""


@dataclass(frozen=True)
class Member:
    """One file inside an archive: where it lands in a data folder and its SHA-256 (None = not known)."""
    archive_path: str
    dest: str
    sha256: str | None
    required: bool = True  # must a data folder hold it? (the shared copy has no wikitext2/train.txt)


@dataclass(frozen=True)
class Dataset:
    name: str
    base_url: str  # folder URL; the archive name is appended, so a mirror only needs the same file name
    archive: str
    members: tuple[Member, ...]

    def url(self, base_url: str | None = None) -> str:
        """Archive URL: base from the argument, else $MINILLM_DATA_URL_<NAME>, else the canonical one."""
        base = base_url or os.environ.get(ENV_URL_PREFIX + self.name.upper()) or self.base_url
        return base.rstrip("/") + "/" + self.archive

    def required_files(self) -> list[str]:
        return [m.dest for m in self.members if m.required]


# Checksums are SHA-256 of the *extracted* files, computed from the copies in ../shared/data. Those copies
# are byte-identical to the archive members: their SHA-1 digests equal the ones GluonNLP records for the
# same members (wiki.valid.tokens 0418625c..., wiki.test.tokens c7b8ce0a..., GLUE SST-2 train.tsv
# ffbb67a5..., dev.tsv e166f986...), and they keep the archives' "\n" line endings and TSV header.
# wiki.train.tokens has no verified local copy, so its digest is not recorded and a download warns that it
# was not verified.
DATASETS: dict[str, Dataset] = {
    "sst2": Dataset(
        name="sst2",
        base_url="https://dl.fbaipublicfiles.com/glue/data",
        archive="SST-2.zip",
        members=(
            Member("SST-2/train.tsv", "sst2/train.tsv",
                   "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
            Member("SST-2/dev.tsv", "sst2/dev.tsv",
                   "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
        ),
    ),
    "wikitext2": Dataset(
        name="wikitext2",
        base_url="https://s3.amazonaws.com/research.metamind.io/wikitext",
        archive="wikitext-2-v1.zip",
        members=(
            Member("wikitext-2/wiki.train.tokens", "wikitext2/train.txt", None, required=False),
            Member("wikitext-2/wiki.valid.tokens", "wikitext2/valid.txt",
                   "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
            Member("wikitext-2/wiki.test.tokens", "wikitext2/test.txt",
                   "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
        ),
    ),
}


def cache_root() -> Path:
    """`$MINILLM_CACHE`, or `~/.cache/minillm`: downloads go in `data/`, tokenized corpora in `tokens/`."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minillm"


def default_cache_dir() -> Path:
    return cache_root() / "data"


def missing_files(root, names=("sst2", "wikitext2")) -> list[str]:
    """Relative paths of the required files of data sets `names` that `root` lacks."""
    root = Path(root)
    return [f for n in names for f in _dataset(n).required_files() if not (root / f).is_file()]


def data_dir(datasets=("sst2", "wikitext2"), download: bool = True, base_urls: dict | None = None,
             cache_dir=None, timeout: float = 30.0, progress: bool = True) -> Path:
    """The folder holding `datasets` (see the module docstring for the order in which it is found).

    Args:
        datasets: names from DATASETS that the caller needs.
        download: may it download what the cache lacks? False -> DataNotFoundError saying what to do.
        base_urls: {name: folder URL} overriding the canonical (and $MINILLM_DATA_URL_<NAME>) locations.
        cache_dir: overrides `<cache root>/data`.
        timeout: seconds a network read may stall before the download is abandoned.
    """
    for name in datasets:
        _dataset(name)
    env = os.environ.get(ENV_DATA)
    if env:
        root = Path(env).expanduser()
        missing = missing_files(root, datasets)
        if missing:
            raise DataNotFoundError(
                f"{ENV_DATA}={env} does not hold {', '.join(missing)}.\n"
                f"Expected layout: {_layout(datasets)}.\n"
                f"Fix the path, or unset {ENV_DATA} to use the cache ({default_cache_dir()}) and downloads.")
        return root
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    for name in datasets:
        if missing_files(cache, [name]):
            if not download:
                raise DataNotFoundError(_what_to_do(DATASETS[name], cache, "downloads are switched off"))
            download_dataset(name, cache, base_url=(base_urls or {}).get(name), timeout=timeout,
                             progress=progress)
    return cache


def download_dataset(dataset, dest, base_url: str | None = None, timeout: float = 30.0,
                     progress: bool = True) -> list[Path]:
    """Download `dataset` (a name or a Dataset), extract and verify its members into `dest`.

    Returns the paths written. Raises DataNotFoundError when the archive cannot be fetched, ChecksumError
    when a member's SHA-256 differs from the recorded one (nothing is left behind in either case).
    """
    ds = dataset if isinstance(dataset, Dataset) else _dataset(dataset)
    dest = Path(dest)
    url = ds.url(base_url)
    dest.mkdir(parents=True, exist_ok=True)
    # The temporary folder lives inside dest so that the final renames stay on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / ds.archive
        try:
            _fetch(url, archive, timeout, progress)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataNotFoundError(_what_to_do(ds, dest, f"downloading {url} failed: {reason}")) from e
        verified = _extract_verified(ds, archive, Path(tmp), url, dest)
        written = []
        for member, path in verified:
            final = dest / member.dest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            written.append(final)
    return written


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, out: Path, timeout: float, progress: bool) -> None:
    """Stream `url` into `out` through `out.part` + rename, with a tqdm bar sized by Content-Length."""
    from tqdm.auto import tqdm

    part = out.with_name(out.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=out.name, disable=not progress,
                  file=sys.stderr) as bar:
            received = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:  # the connection closed early: say so, not "bad zip"
        raise ConnectionError(f"received {received} of {total} bytes")
    os.replace(part, out)


def _extract_verified(ds: Dataset, archive: Path, tmp: Path, url: str,
                      dest: Path) -> list[tuple[Member, Path]]:
    """Extract every member of `ds` into `tmp` and check its SHA-256; all or nothing."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        head = archive.read_bytes()[:60]
        raise DataNotFoundError(
            f"{url} did not return a zip archive (it starts with {head!r}; a proxy or login page?).\n"
            + _advice(ds, dest)) from None
    out = []
    with zf:
        names = set(zf.namelist())
        for i, m in enumerate(ds.members):
            if m.archive_path not in names:
                raise DataNotFoundError(
                    f"{url} has no member {m.archive_path!r} (it holds {sorted(names)[:10]}).\n"
                    + _advice(ds, dest))
            path = tmp / f"member-{i}"
            with zf.open(m.archive_path) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            actual = sha256_file(path)
            if m.sha256 is None:
                warnings.warn(f"{ds.archive}:{m.archive_path} has no recorded SHA-256 ({actual}); "
                              f"its verification is skipped", UserWarning, stacklevel=3)
            elif actual != m.sha256:
                path.unlink()
                raise ChecksumError(
                    f"{m.dest} (member {m.archive_path} of {url}): SHA-256 mismatch: expected {m.sha256}, "
                    f"got {actual}. The file was deleted. A download cut short or a changed upstream file "
                    f"gives this: try again, or set {ENV_DATA} to a folder with a verified copy.")
            out.append((m, path))
    return out


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def _layout(names) -> str:
    return ", ".join(m.dest for n in names for m in _dataset(n).members if m.required)


def _advice(ds: Dataset, dest: Path) -> str:
    members = "".join(f"\n       {m.archive_path} -> {dest / m.dest}" for m in ds.members)
    return (f"What to do, either:\n"
            f"  1. export {ENV_DATA}=/path/with/sst2/and/wikitext2  (a folder holding {_layout(DATASETS)})\n"
            f"  2. or download {ds.url()} on a machine with internet access and unpack it so that:"
            f"{members}")


def _what_to_do(ds: Dataset, dest: Path, reason: str) -> str:
    return (f"Data set {ds.name!r} is not available: {reason}. "
            f"Looked in ${ENV_DATA} ({os.environ.get(ENV_DATA) or 'not set'}) and in {dest} (missing "
            f"{', '.join(missing_files(dest, [ds.name]))}).\n" + _advice(ds, dest))

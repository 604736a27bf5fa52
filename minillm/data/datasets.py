"""Finding the data sets on disk, and fetching them from their canonical sources when they are not there.

`data_dir(datasets=(...))` answers "where are SST-2 / WikiText-2 / IMDb?" in this order:

1. `$MINILLM_DATA`, if set: a folder you manage. It must hold the files; a typo gives an error, never a
   silent download elsewhere.
2. the cache, `<cache root>/data`, where the cache root is `$MINILLM_CACHE` or `~/.cache/minillm`
   (the root also holds tokenized corpora, see `corpus.tokenize_corpus`).
3. a download into the cache from the canonical archives below, every byte checked against a digest
   recorded here (see "Checking"). Offline and with no copy, the error says exactly what to do.

Layout inside a data folder:

    sst2/train.tsv  sst2/dev.tsv  wikitext2/valid.txt  wikitext2/test.txt  [wikitext2/train.txt]
    imdb/unsup.txt  imdb/train.tsv

IMDb comes as `aclImdb_v1.tar.gz`, one small file per review (`aclImdb/train/unsup/ID_0.txt`,
`aclImdb/train/{pos,neg}/ID_RATING.txt`); the download turns it into two files: `imdb/unsup.txt`, the
50,000 unlabelled reviews one per line in id order, and `imdb/train.tsv`, the 25,000 labelled training
reviews (`sentence<TAB>label`, 0 = negative, 1 = positive) shuffled with the fixed seed IMDB_SEED. Tabs,
newlines and carriage returns inside a review become spaces; nothing else changes (HTML `<br />` stays).
A copy made elsewhere holds the same rows, perhaps in another order: nothing here depends on it.

Checking: a zip (SST-2, WikiText-2) has few members and each is checked against its own digest, so a
mirror that repackages the same files still passes. The IMDb tar has 100,000 members, so the archive
itself is checked (its published MD5 and SHA-1) before anything is read from it. `Dataset` refuses a
spec that would leave any byte unchecked. Extraction is capped in members and bytes, and archives with
absolute or `..` paths or links are refused (see `_archive.py`), so a hostile mirror cannot fill the disk
or write outside the destination before a digest is compared.

What this is not: a dataset hub. It knows three archives, keeps no index, and never touches a folder you
point it at with MINILLM_DATA.

Safety of a download: the archive is streamed to a temporary folder inside the destination, every file is
extracted there and verified, and only then moved into place with an atomic rename. An interrupted or
corrupt download therefore never leaves a half-written data file where `data_dir()` would find it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._archive import ArchiveLimitError, Limits, copy_zip_member, iter_tar_files, open_zip

ENV_DATA = "MINILLM_DATA"
ENV_CACHE = "MINILLM_CACHE"
ENV_URL_PREFIX = "MINILLM_DATA_URL_"  # + dataset name upper-cased, e.g. MINILLM_DATA_URL_SST2
IMDB_SEED = 0  # the shuffle of imdb/train.tsv


class DataNotFoundError(FileNotFoundError):
    """The data are not on disk and could not be downloaded; the message says what to do."""


class ChecksumError(ValueError):
    """A downloaded archive or an extracted file does not have its recorded digest (it has been deleted)."""


class UnsafeArchiveError(DataNotFoundError):
    """The archive breaks an extraction cap or holds an unsafe member (absolute or '..' path, link)."""


@dataclass(frozen=True)
class Member:
    """One file a data folder gets from an archive: where it comes from, where it lands, its digests.

    `sha256` / `sha1` are hex digests of the extracted file (None = not known); every one given is checked.
    For an archive checked as a whole (`Dataset.archive_digests`), `archive_path` describes the source.
    """
    archive_path: str
    dest: str
    sha256: str | None
    required: bool = True  # must a data folder hold it? (a copy may lack wikitext2/train.txt)
    sha1: str | None = None

    def digests(self) -> dict:
        return {name: d for name, d in (("sha256", self.sha256), ("sha1", self.sha1)) if d}


@dataclass(frozen=True)
class Dataset:
    name: str
    base_url: str  # folder URL; the archive name is appended, so a mirror only needs the same file name
    archive: str
    members: tuple[Member, ...]
    archive_digests: tuple[tuple[str, str], ...] = ()  # (hashlib name, hex) of the archive file itself
    layout: str = "zip"  # "zip": members copied out by name; "imdb": built from aclImdb's review files
    limits: Limits = Limits(max_members=1_000, max_bytes=256 << 20)

    def __post_init__(self):
        unchecked = [m.dest for m in self.members if not m.digests()]
        if unchecked and not self.archive_digests:
            raise ValueError(f"data set {self.name!r}: {unchecked} would be extracted unchecked; record a digest "
                             "for each member or for the archive")

    def url(self, base_url: str | None = None) -> str:
        """Archive URL: base from the argument, else $MINILLM_DATA_URL_<NAME>, else the canonical one."""
        base = base_url or os.environ.get(ENV_URL_PREFIX + self.name.upper()) or self.base_url
        return base.rstrip("/") + "/" + self.archive

    def required_files(self) -> list[str]:
        return [m.dest for m in self.members if m.required]


# SHA-256 digests are of the extracted files, computed from local copies of the data sets, which are
# byte-identical to the archive members: their SHA-1 digests equal the ones GluonNLP publishes for the same
# members (dmlc/gluon-nlp, src/gluonnlp/data/corpora/wikitext.py: wiki.valid.tokens 0418625c...,
# wiki.test.tokens c7b8ce0a...; GLUE SST-2 train.tsv ffbb67a5..., dev.tsv e166f986...), and they keep the
# archives' "\n" line endings and TSV header. wiki.train.tokens has no local copy; it is checked against the
# SHA-1 the same GluonNLP table gives for it (whose valid/test entries match our copies, see
# tests/test_data_download.py). The same table records the archive wikitext-2-v1.zip as SHA-1 3c914d17...
# (as does d2l's DATA_HUB), and torchtext (torchtext/datasets/wikitext2.py) as MD5 542ccefa...; those are not
# checked, so that a mirror that re-zips the same files still works.
# IMDb: the MD5 and SHA-1 of aclImdb_v1.tar.gz as published with the archive (Large Movie Review Dataset
# page, Maas et al. 2011).
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
        limits=Limits(max_members=100, max_bytes=64 << 20),       # the zip: 4 members, 7 MB
    ),
    "wikitext2": Dataset(
        name="wikitext2",
        base_url="https://s3.amazonaws.com/research.metamind.io/wikitext",
        archive="wikitext-2-v1.zip",
        members=(
            Member("wikitext-2/wiki.train.tokens", "wikitext2/train.txt", None, required=False,
                   sha1="863f29c46ef9d167fff4940ec821195882fe29d1"),
            Member("wikitext-2/wiki.valid.tokens", "wikitext2/valid.txt",
                   "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
                   sha1="0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422"),
            Member("wikitext-2/wiki.test.tokens", "wikitext2/test.txt",
                   "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
                   sha1="c7b8ce0aa086fb34dab808c5c49224211eb2b172"),
        ),
        limits=Limits(max_members=100, max_bytes=64 << 20),       # the zip: 4 members, 13 MB
    ),
    "imdb": Dataset(
        name="imdb",
        base_url="https://ai.stanford.edu/~amaas/data/sentiment",
        archive="aclImdb_v1.tar.gz",
        members=(
            Member("aclImdb/train/unsup/ID_0.txt", "imdb/unsup.txt", None),
            Member("aclImdb/train/{pos,neg}/ID_RATING.txt", "imdb/train.tsv", None),
        ),
        archive_digests=(("md5", "7c2ac02c03563afcf9b574c7e56c153a"),
                         ("sha1", "01ada507287d82875905620988597833ad4e0903")),
        layout="imdb",
        limits=Limits(max_members=110_000, max_bytes=512 << 20),  # 100,000 reviews + 20 other files; we read 100 MB
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
        datasets: names from DATASETS that the caller needs, e.g. ``("imdb",)``.
        download: may it download what the cache lacks? False -> DataNotFoundError saying what to do.
        base_urls: {name: folder URL} overriding the canonical (and $MINILLM_DATA_URL_<NAME>) locations;
            a ``file:///folder`` URL takes the archive from a local folder.
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
    """Download `dataset` (a name or a Dataset), extract and verify its files into `dest`.

    Returns the paths written. Raises DataNotFoundError when the archive cannot be fetched,
    UnsafeArchiveError when it breaks an extraction cap or holds an unsafe member, ChecksumError when the
    archive or an extracted file differs from its recorded digest (nothing is left behind in any case).
    """
    ds = dataset if isinstance(dataset, Dataset) else _dataset(dataset)
    dest = Path(dest)
    url = ds.url(base_url)
    dest.mkdir(parents=True, exist_ok=True)
    # The temporary folder lives inside dest so that the final renames stay on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / ds.archive
        try:
            _fetch(url, archive, timeout, progress, ds.limits.max_bytes)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataNotFoundError(_what_to_do(ds, dest, f"downloading {url} failed: {reason}")) from e
        except ArchiveLimitError as e:
            raise UnsafeArchiveError(f"{url}: {e}.\n" + _advice(ds, dest)) from None
        _check_archive(ds, archive, url)
        try:
            built = _EXTRACT[ds.layout](ds, archive, Path(tmp), url, dest)
        except ArchiveLimitError as e:
            raise UnsafeArchiveError(f"{url}: {e}.\n" + _advice(ds, dest)) from None
        for member, path in built:
            _check_member(ds, member, path, url)
        written = []
        for member, path in built:
            final = dest / member.dest
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            written.append(final)
    return written


def sha256_file(path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "sha256")


def file_digest(path, algorithm: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, out: Path, timeout: float, progress: bool, max_bytes: int) -> None:
    """Stream `url` into `out` through `out.part` + rename, with a tqdm bar sized by Content-Length;
    more than `max_bytes` (declared or received) is refused."""
    from tqdm.auto import tqdm

    part = out.with_name(out.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total is not None and total > max_bytes:
            raise ArchiveLimitError(f"the archive is {total} bytes, over the {max_bytes}-byte cap")
        with tqdm(total=total, unit="B", unit_scale=True, desc=out.name, disable=not progress,
                  file=sys.stderr) as bar:
            received = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                received += len(block)
                if received > max_bytes:
                    raise ArchiveLimitError(f"the archive passed the {max_bytes}-byte cap while downloading")
                f.write(block)
                bar.update(len(block))
    if total is not None and received != total:  # the connection closed early: say so, not "bad zip"
        raise ConnectionError(f"received {received} of {total} bytes")
    os.replace(part, out)


def _check_archive(ds: Dataset, archive: Path, url: str) -> None:
    """The archive's own digests, when recorded: all of them must match, before anything is extracted."""
    for algorithm, expected in ds.archive_digests:
        actual = file_digest(archive, algorithm)
        if actual != expected:
            archive.unlink()
            raise ChecksumError(
                f"{ds.archive} (from {url}): {algorithm.upper()} mismatch: expected {expected}, got {actual}. "
                f"The file was deleted and nothing was extracted. A download cut short, a proxy's error page or "
                f"a changed upstream file gives this: try again, or set {ENV_DATA} to a folder with a verified copy.")


def _check_member(ds: Dataset, m: Member, path: Path, url: str) -> None:
    for algorithm, expected in m.digests().items():
        actual = file_digest(path, algorithm)
        if actual != expected:
            path.unlink()
            raise ChecksumError(
                f"{m.dest} (member {m.archive_path} of {url}): {algorithm.upper()} mismatch: expected {expected}, "
                f"got {actual}. The file was deleted. A download cut short or a changed upstream file gives "
                f"this: try again, or set {ENV_DATA} to a folder with a verified copy.")


def _extract_zip(ds: Dataset, archive: Path, tmp: Path, url: str, dest: Path) -> list[tuple[Member, Path]]:
    """Copy every member of `ds` out of the zip into `tmp`, within the dataset's caps."""
    try:
        zf, budget = open_zip(archive, ds.limits)
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
            copy_zip_member(zf, m.archive_path, path, budget)
            out.append((m, path))
    return out


_IMDB_FILE = re.compile(r"aclImdb/train/(unsup|pos|neg)/(\d+)_(\d+)\.txt")


def _extract_imdb(ds: Dataset, archive: Path, tmp: Path, url: str, dest: Path) -> list[tuple[Member, Path]]:
    """aclImdb's review files -> imdb/unsup.txt (id order) and imdb/train.tsv (shuffled, IMDB_SEED).

    Works on bytes: the text of each review is kept exactly as in its file, except that tabs, newlines and
    carriage returns become spaces (one review per line, no tab inside a TSV field) and the ends are
    stripped. Ratings are checked against the folders (neg <= 4, pos >= 7), as the archive's README defines.
    """
    unsup, train = {}, []
    files = iter_tar_files(archive, ds.limits, wanted=lambda name: _IMDB_FILE.fullmatch(name) is not None)
    for name, data in files:
        split, review_id, rating = _IMDB_FILE.fullmatch(name).groups()
        text = data.replace(b"\t", b" ").replace(b"\r", b" ").replace(b"\n", b" ").strip()
        if not text:
            continue
        if split == "unsup":
            unsup[int(review_id)] = text
        elif not (int(rating) <= 4 if split == "neg" else int(rating) >= 7):
            raise DataNotFoundError(f"{url}: {name} has rating {rating}, which does not belong in {split}/ "
                                    "(neg <= 4, pos >= 7); this is not the Large Movie Review Dataset archive")
        else:
            train.append((split == "pos", int(review_id), text))
    if not unsup or not train:
        raise DataNotFoundError(f"{url} holds no aclImdb/train/unsup/ID_0.txt or no aclImdb/train/{{pos,neg}}/"
                                "ID_RATING.txt files; it is not the Large Movie Review Dataset archive.\n"
                                + _advice(ds, dest))
    rows = sorted(train)                       # a canonical order first, so the shuffle depends on the seed only
    random.Random(IMDB_SEED).shuffle(rows)
    outputs = {"imdb/unsup.txt": b"".join(unsup[k] + b"\n" for k in sorted(unsup)),
               "imdb/train.tsv": b"sentence\tlabel\n" + b"".join(t + b"\t%d\n" % pos for pos, _, t in rows)}
    out = []
    for i, m in enumerate(ds.members):
        path = tmp / f"member-{i}"
        path.write_bytes(outputs[m.dest])
        out.append((m, path))
    return out


_EXTRACT = {"zip": _extract_zip, "imdb": _extract_imdb}


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def _layout(names) -> str:
    return ", ".join(m.dest for n in names for m in _dataset(n).members if m.required)


def _advice(ds: Dataset, dest: Path) -> str:
    how = "".join(f"\n       {m.archive_path} -> {dest / m.dest}" for m in ds.members)
    return (f"What to do, either:\n"
            f"  1. export {ENV_DATA}=/path/to/data  (a folder holding {_layout([ds.name])})\n"
            f"  2. or download {ds.url()} on a machine with internet access, put it in a folder here and\n"
            f"     export {ENV_URL_PREFIX}{ds.name.upper()}=file:///that/folder  (it is then checked and unpacked as\n"
            f"     if downloaded; it makes:{how})")


def _what_to_do(ds: Dataset, dest: Path, reason: str) -> str:
    return (f"Data set {ds.name!r} is not available: {reason}. "
            f"Looked in ${ENV_DATA} ({os.environ.get(ENV_DATA) or 'not set'}) and in {dest} (missing "
            f"{', '.join(missing_files(dest, [ds.name]))}).\n" + _advice(ds, dest))

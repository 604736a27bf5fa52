"""Tests of minillm.data.datasets: data_dir() resolution, verified downloads, extraction caps.

The "internet" is a loopback HTTP server (127.0.0.1, port 0, a daemon thread, shut down in teardown)
serving small zips and a small aclImdb tar.gz that the tests make with the real archives' member layout;
a file:// URL serves the same way. The Dataset specs are swapped for copies whose digests match those
small files.
"""
import dataclasses
import functools
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from minillm.data import datasets as ds
from minillm.data import (ChecksumError, DataNotFoundError, UnsafeArchiveError, data_dir, download_dataset,
                          read_corpus, read_tsv)
from minillm.data._archive import Limits

SST_TRAIN = b"sentence\tlabel\nhide new secretions from the parental units \t0\na gem \t1\n"
SST_DEV = b"sentence\tlabel\nit 's a charming journey . \t1\n"
WIKI = {"train": b" \n = T = \n \n train text \n", "valid": b" \n = V = \n \n valid text \n",
        "test": b" \n = Q = \n \n test text \n"}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_zip(path: Path, members: dict) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)


class Handler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def do_GET(self):
        Handler.requests.append(self.path)
        if self.path.startswith("/short/"):  # a connection that dies mid-file
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04 only the start")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on loopback; yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    make_zip(www / "SST-2.zip", {"SST-2/train.tsv": SST_TRAIN, "SST-2/dev.tsv": SST_DEV,
                                 "SST-2/test.tsv": b"index\tsentence\n0\tx\n"})
    make_zip(www / "wikitext-2-v1.zip", {f"wikitext-2/wiki.{k}.tokens": v for k, v in WIKI.items()})
    (www / "bad").mkdir()
    (www / "bad" / "SST-2.zip").write_bytes(b"<html>please log in</html>")
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def specs(monkeypatch):
    """Replace the real digests by those of the test's small files; no MINILLM_* variables."""
    for var in ("MINILLM_DATA", "MINILLM_CACHE", "MINILLM_DATA_URL_SST2", "MINILLM_DATA_URL_WIKITEXT2",
                "MINILLM_DATA_URL_IMDB"):
        monkeypatch.delenv(var, raising=False)
    sst = ds.DATASETS["sst2"]
    sst = dataclasses.replace(sst, members=(
        dataclasses.replace(sst.members[0], sha256=sha(SST_TRAIN)),
        dataclasses.replace(sst.members[1], sha256=sha(SST_DEV))))
    wiki = ds.DATASETS["wikitext2"]
    wiki = dataclasses.replace(wiki, members=(
        dataclasses.replace(wiki.members[0], sha1=hashlib.sha1(WIKI["train"]).hexdigest()),  # SHA-1 only, as real
        dataclasses.replace(wiki.members[1], sha256=sha(WIKI["valid"]), sha1=hashlib.sha1(WIKI["valid"]).hexdigest()),
        dataclasses.replace(wiki.members[2], sha256=sha(WIKI["test"]), sha1=None)))
    monkeypatch.setitem(ds.DATASETS, "sst2", sst)
    monkeypatch.setitem(ds.DATASETS, "wikitext2", wiki)
    return ds.DATASETS


def dead_url() -> str:
    """A loopback URL where nothing listens (port bound then released): connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_download_extract_verify(server, specs, tmp_path):
    dest = tmp_path / "data"
    written = download_dataset("sst2", dest, base_url=server, progress=False)
    assert (dest / "sst2" / "train.tsv").read_bytes() == SST_TRAIN and len(written) == 2
    assert all_files(dest) == ["sst2", "sst2/dev.tsv", "sst2/train.tsv"]  # no temp files, no test.tsv
    assert Handler.requests == ["/SST-2.zip"]


def test_every_member_is_checked_by_a_digest(server, specs, tmp_path):
    download_dataset("wikitext2", tmp_path / "d", base_url=server, progress=False)  # train: its SHA-1
    assert (tmp_path / "d" / "wikitext2" / "train.txt").read_bytes() == WIKI["train"]
    wiki = specs["wikitext2"]
    bad = dataclasses.replace(wiki, members=(dataclasses.replace(wiki.members[0], sha1="0" * 40),) + wiki.members[1:])
    with pytest.raises(ChecksumError, match=r"wikitext2/train\.txt .*SHA1 mismatch: expected 0{40}"):
        download_dataset(bad, tmp_path / "e", base_url=server, progress=False)
    assert all_files(tmp_path / "e") == []
    with pytest.raises(ValueError, match=r"\['wikitext2/train\.txt'\] would be extracted unchecked"):
        dataclasses.replace(wiki, members=(dataclasses.replace(wiki.members[0], sha1=None),) + wiki.members[1:])
    for spec in ds.DATASETS.values():  # the real specs: a digest for every member, or for the archive
        assert spec.archive_digests or all(m.digests() for m in spec.members), spec.name


def test_checksum_mismatch_names_file_and_digests_and_leaves_nothing(server, specs, monkeypatch, tmp_path):
    sst = specs["sst2"]
    wrong = "0" * 64
    monkeypatch.setitem(ds.DATASETS, "sst2", dataclasses.replace(
        sst, members=(sst.members[0], dataclasses.replace(sst.members[1], sha256=wrong))))
    dest = tmp_path / "data"
    with pytest.raises(ChecksumError) as e:
        download_dataset("sst2", dest, base_url=server, progress=False)
    msg = str(e.value)
    assert "sst2/dev.tsv" in msg and f"SHA256 mismatch: expected {wrong}" in msg and f"got {sha(SST_DEV)}" in msg
    assert all_files(dest) == []  # train.tsv verified fine but is not kept either: all or nothing


def test_offline_error_says_what_to_do(specs, tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        download_dataset("sst2", tmp_path / "data", base_url=dead_url(), timeout=5, progress=False)
    msg = str(e.value)
    assert "MINILLM_DATA=" in msg and "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip" in msg
    assert str(tmp_path / "data" / "sst2" / "train.tsv") in msg
    assert all_files(tmp_path / "data") == []


def test_http_404_not_a_zip_and_cut_short(server, specs, tmp_path):
    with pytest.raises(DataNotFoundError, match="404"):
        download_dataset("sst2", tmp_path / "a", base_url=server + "/nowhere", progress=False)
    with pytest.raises(DataNotFoundError, match=r"did not return a zip archive .*please log in"):
        download_dataset("sst2", tmp_path / "b", base_url=server + "/bad", progress=False)
    with pytest.raises(DataNotFoundError, match="failed"):
        download_dataset("sst2", tmp_path / "c", base_url=server + "/short", timeout=5, progress=False)
    assert all_files(tmp_path / "a") == all_files(tmp_path / "b") == all_files(tmp_path / "c") == []


def test_data_dir_prefers_minillm_data(specs, monkeypatch, tmp_path):
    root = tmp_path / "mine"
    for f in ("sst2/train.tsv", "sst2/dev.tsv", "wikitext2/valid.txt", "wikitext2/test.txt"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    monkeypatch.setenv("MINILLM_DATA", str(root))
    assert data_dir(base_urls={"sst2": dead_url()}) == root  # no network touched
    (root / "wikitext2" / "test.txt").unlink()
    assert data_dir(datasets=("sst2",)) == root  # only what is asked for must be there
    with pytest.raises(DataNotFoundError, match=r"MINILLM_DATA=.* does not hold wikitext2/test\.txt"):
        data_dir()


def test_data_dir_downloads_into_cache_once(server, specs, monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINILLM_DATA_URL_SST2", server)  # the environment override of the base URL
    root = data_dir(base_urls={"wikitext2": server}, progress=False)
    assert root == tmp_path / "cache" / "data"
    assert (root / "wikitext2" / "valid.txt").read_bytes() == WIKI["valid"]
    assert sorted(Handler.requests) == ["/SST-2.zip", "/wikitext-2-v1.zip"]
    assert data_dir(progress=False) == root and len(Handler.requests) == 2  # second call: cache hit


def test_data_dir_offline_without_copy(specs, monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=r"(?s)switched off.*What to do.*export MINILLM_DATA="):
        data_dir(download=False)


SHARED = Path(os.environ.get("MINILLM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.skipif(not (SHARED / "sst2" / "dev.tsv").is_file(), reason=f"no data copy under {SHARED}")
def test_recorded_checksums_match_the_verified_copies():
    # Also shows that GluonNLP's SHA-1 table, the source of the wiki.train.tokens digest, describes our files.
    checked = 0
    for spec in ds.DATASETS.values():
        for m in spec.members:
            for algorithm, digest in m.digests().items():
                if (SHARED / m.dest).is_file():
                    assert ds.file_digest(SHARED / m.dest, algorithm) == digest, (m.dest, algorithm)
                    checked += 1
    assert checked >= 4  # SST-2 train/dev SHA-256, WikiText valid/test SHA-256 and SHA-1


def test_data_dir_finds_imdb_in_minillm_data(specs, monkeypatch, tmp_path):
    root = tmp_path / "mine"
    (root / "imdb").mkdir(parents=True)
    (root / "imdb" / "unsup.txt").write_text("a review\n")
    monkeypatch.setenv("MINILLM_DATA", str(root))
    with pytest.raises(DataNotFoundError, match=r"does not hold imdb/train\.tsv"):
        data_dir(datasets=("imdb",))
    (root / "imdb" / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    assert data_dir(datasets=("imdb",)) == root
    if (SHARED / "imdb" / "train.tsv").is_file():  # the real copy, where there is one
        monkeypatch.setenv("MINILLM_DATA", str(SHARED))
        assert data_dir(datasets=("imdb",)) == SHARED


# --- IMDb: the aclImdb tar.gz, read by its own layout ------------------------------------------------------

IMDB_FILES = {
    "aclImdb/README": b"Large Movie Review Dataset v1.0 (a stand-in)\n",
    "aclImdb/train/unsup/10_0.txt": b"Tenth.<br /><br />Second\tline\r\nthird",
    "aclImdb/train/unsup/2_0.txt": b"  Second review, caf\xc3\xa9 \xc2\x85 ok\n",
    "aclImdb/train/unsup/0_0.txt": b"First!!!",
    "aclImdb/train/pos/0_9.txt": b"Great\tfilm",
    "aclImdb/train/pos/1_7.txt": b"Good.",
    "aclImdb/train/neg/0_3.txt": b"Bad<br />film.",
    "aclImdb/train/neg/1_1.txt": b"Awful\nreally.",
    "aclImdb/train/labeledBow.feat": b"0 0:1\n",
    "aclImdb/test/pos/0_10.txt": b"a test review: never read",
}
UNSUP_WANT = b"First!!!\nSecond review, caf\xc3\xa9 \xc2\x85 ok\nTenth.<br /><br />Second line  third\n"
TRAIN_WANT = {("Great film", 1), ("Good.", 1), ("Bad<br />film.", 0), ("Awful really.", 0)}


def make_tar(path: Path, files: dict, extra=()) -> Path:
    """A .tar.gz with folders, `files` ({name: bytes}) and `extra` TarInfo entries (links, odd names)."""
    with tarfile.open(path, "w:gz") as tar:
        for folder in sorted({str(Path(n).parent) for n in files}):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def imdb_spec(monkeypatch, archive: Path, **changes):
    """The real IMDb spec with the digests of `archive` (a stand-in built by the test)."""
    data = archive.read_bytes()
    spec = dataclasses.replace(ds.DATASETS["imdb"], archive_digests=(
        ("md5", hashlib.md5(data).hexdigest()), ("sha1", hashlib.sha1(data).hexdigest())), **changes)
    monkeypatch.setitem(ds.DATASETS, "imdb", spec)
    return spec


def test_imdb_download_reads_the_archive_layout(specs, monkeypatch, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    imdb_spec(monkeypatch, make_tar(www / "aclImdb_v1.tar.gz", IMDB_FILES))
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    root = data_dir(datasets=("imdb",), base_urls={"imdb": www.as_uri()}, progress=False)  # a file:// URL
    assert root == tmp_path / "cache" / "data" and all_files(root) == ["imdb", "imdb/train.tsv", "imdb/unsup.txt"]
    assert (root / "imdb" / "unsup.txt").read_bytes() == UNSUP_WANT     # id order (0, 2, 10), one per line
    assert read_corpus(root / "imdb" / "unsup.txt") == UNSUP_WANT.decode().split("\n")[:-1]  # \x85 stays inside
    sentences, labels = read_tsv(root / "imdb" / "train.tsv", num_labels=2)
    assert set(zip(sentences, labels.tolist())) == TRAIN_WANT           # the order is the shuffle's
    again = download_dataset("imdb", tmp_path / "again", base_url=www.as_uri(), progress=False)
    assert [p.read_bytes() for p in again] == [(root / "imdb" / n).read_bytes() for n in ("unsup.txt", "train.tsv")]


def test_imdb_archive_digest_mismatch_leaves_nothing(specs, monkeypatch, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    spec = imdb_spec(monkeypatch, make_tar(www / "aclImdb_v1.tar.gz", IMDB_FILES))
    (md5, good_md5), (sha1, good_sha1) = spec.archive_digests
    for wrong in [((md5, good_md5), (sha1, "f" * 40)), ((md5, "f" * 32), (sha1, good_sha1))]:
        monkeypatch.setitem(ds.DATASETS, "imdb", dataclasses.replace(spec, archive_digests=wrong))
        with pytest.raises(ChecksumError, match=r"aclImdb_v1\.tar\.gz .*(MD5|SHA1) mismatch: expected f+, got "
                                                r"[0-9a-f]+\. .*nothing was extracted"):
            download_dataset("imdb", tmp_path / "data", base_url=www.as_uri(), progress=False)
        assert all_files(tmp_path / "data") == []


def test_imdb_rating_outside_its_folder_is_refused(specs, monkeypatch, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    imdb_spec(monkeypatch, make_tar(www / "aclImdb_v1.tar.gz", {**IMDB_FILES, "aclImdb/train/pos/5_2.txt": b"x"}))
    with pytest.raises(DataNotFoundError, match=r"pos/5_2\.txt has rating 2"):
        download_dataset("imdb", tmp_path / "data", base_url=www.as_uri(), progress=False)
    assert all_files(tmp_path / "data") == []


# --- extraction caps and unsafe members ---------------------------------------------------------------------

def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("files, extra, limits, message", [
    (IMDB_FILES, (), Limits(max_members=8, max_bytes=1 << 20), "more than 8 members"),
    # a gzip bomb in small: 2 MB of zeros are 2 kB compressed; the cap stops them before they are held
    ({**IMDB_FILES, "aclImdb/train/unsup/3_0.txt": bytes(2 << 20)}, (), Limits(100, 1 << 20), "past 1048576 bytes"),
    ({**IMDB_FILES, "aclImdb/../../evil.txt": b"x"}, (), None, r"'\.\.' component"),
    ({**IMDB_FILES, "/etc/evil.txt": b"x"}, (), None, "absolute path"),
    (IMDB_FILES, (link("aclImdb/train/unsup/4_0.txt", "/etc/passwd"),), None, "is a link"),
    (IMDB_FILES, (link("aclImdb/x", "aclImdb/README", tarfile.LNKTYPE),), None, "is a link"),
])
def test_tar_extraction_caps_and_unsafe_members(specs, monkeypatch, tmp_path, files, extra, limits, message):
    # The archive's own digest is made to match, so that only the extraction checks stand in the way.
    www = tmp_path / "www"
    www.mkdir()
    changes = {"limits": limits} if limits else {}
    imdb_spec(monkeypatch, make_tar(www / "aclImdb_v1.tar.gz", files, extra), **changes)
    with pytest.raises(UnsafeArchiveError, match=message):
        download_dataset("imdb", tmp_path / "data", base_url=www.as_uri(), progress=False)
    assert all_files(tmp_path / "data") == []


def test_zip_extraction_caps_and_unsafe_members(server, specs, monkeypatch, tmp_path):
    sst = specs["sst2"]
    bomb = tmp_path / "www" / "bomb"
    bomb.mkdir()
    # 4 MB of zeros deflate to 4 kB: under the download cap, over the extraction cap
    make_zip(bomb / "SST-2.zip", {"SST-2/train.tsv": bytes(4 << 20), "SST-2/dev.tsv": SST_DEV})
    odd = tmp_path / "www" / "odd"
    odd.mkdir()
    make_zip(odd / "SST-2.zip", {"SST-2/train.tsv": SST_TRAIN, "SST-2/dev.tsv": SST_DEV, "../evil": b"x"})
    cases = [(server + "/bomb", Limits(max_members=10, max_bytes=1 << 20), "past 1048576 bytes"),
             (server, Limits(max_members=2, max_bytes=1 << 20), "more than 2 members"),
             (server, Limits(max_members=10, max_bytes=100), "over the 100-byte cap"),  # the download itself
             (server + "/odd", sst.limits, r"'\.\.' component")]
    for i, (url, limits, message) in enumerate(cases):
        monkeypatch.setitem(ds.DATASETS, "sst2", dataclasses.replace(sst, limits=limits))
        with pytest.raises(UnsafeArchiveError, match=message):
            download_dataset("sst2", tmp_path / f"d{i}", base_url=url, progress=False)
        assert all_files(tmp_path / f"d{i}") == []

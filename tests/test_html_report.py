"""``--format html``: one self-contained page for a check run or an audit.

The fast tests parse the page with the standard library's ``html.parser``: the models × targets
matrix, the findings with their source excerpts, escaping of user code. The slow ones render real
reports (the real pipeline) and open them in a real headless Chromium: what it shows after the
page's JS ran (sorting, the severity filter), and a screenshot that is not blank.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import require_browser
from modelcheck.audit.run import AuditReport, AuditRow
from modelcheck.findings import Finding, Location, ModelResult, Report, Severity, StageResult
from modelcheck.report.html import render_audit, render_report
from modelcheck.targets import make_target

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert('pwned')</script>"


# ============================================================================== a tiny DOM


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self, tag: str | None = None, **attrs: str):
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(
                    attr in (child.attrs.get(k.rstrip("_")) or "").split() if k == "class_"
                    else child.attrs.get(k) == attr for k, attr in attrs.items()
                ):
                    yield child
                yield from child.iter(tag, **attrs)

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = next(self.iter(tag, **attrs), None)
        assert found is not None, f"no <{tag} {attrs}>"
        return found


class _Builder(HTMLParser):
    VOID = frozenset({"meta", "br", "input", "img", "link", "hr", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(node)
        if tag not in self.VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(page: str) -> Node:
    builder = _Builder()
    builder.feed(page)
    builder.close()
    return builder.root


def body_rows(dom: Node, table_id: str) -> list[Node]:
    return list(dom.find("table", id=table_id).find("tbody").iter("tr"))


def column_keys(dom: Node, table_id: str) -> list[str]:
    """The sortable columns' keys in body-cell order (the matrix has two header rows)."""
    heads = [th for th in dom.find("table", id=table_id).iter("th") if "data-col" in th.attrs]
    return [th.attrs["data-key"] for th in sorted(heads, key=lambda th: int(th.attrs["data-col"]))]


# ============================================================================== fixtures


def _stage(model: str, name: str, status: str, diff: float | None = None, predicted: tuple[str, ...] = (),
           detail: str = "") -> StageResult:
    return StageResult(model, name, status, 0.1, diff, None, detail, predicted)


@pytest.fixture()
def model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent(f'''\
        import torch.nn as nn


        class Net(nn.Module):
            """{EVIL} & friends"""

            def __init__(self):
                super().__init__()
                self.up = nn.Upsample(scale_factor=2, mode="bilinear")  # {EVIL}
                self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)

            def forward(self, x):
                return self.up(self.pool(x))
        '''))
    return path


def _report(path: Path) -> Report:
    up = Finding("MC201", f"Upsample(mode='bilinear') {EVIL}", Severity.ERROR, Location("net.py", 9, 19, 9, 63),
                 fixable=True, evidence="both", model="net.py:Net", module_path="up")
    pool = Finding("MC301", "MaxPool2d(ceil_mode=True)", Severity.WARNING, Location("net.py", 10, 21, 10, 55),
                   fixable=True, evidence="static")
    gone = Finding("MC205", "F.upsample is deprecated", Severity.INFO, Location("gone.py", 3, 5),
                   source_line="    y = F.upsample(x)  # <b>not bold</b>")
    net = ModelResult("net.py:Net", "ok", parameters=12, pickle={"ok": True}, stages=[
        _stage("net.py:Net", "export", "passed"),
        _stage("net.py:Net", "onnx_check", "passed"),
        _stage("net.py:Net", "onnxruntime", "mismatch", 0.0123, ("MC201",), "output 0: max abs diff 0.0123"),
        _stage("net.py:Net", "caffe2", "failed", detail=f"no operator {EVIL}"),
    ])
    other = ModelResult(f"net.py:{EVIL}", "build failed", detail="RuntimeError: needs a config",
                        pickle={"ok": False, "failures": [{"path": "act", "type": "function", "defined_at": "x:1"}]})
    return Report("caffe2", 9, [up, pool, gone], notes=[f"models: picked net.py:Net {EVIL}"], models=[net, other],
                  files_checked=2)


# ============================================================================== fast: structure


def test_check_report_matrix_has_a_row_per_model_with_stage_status_diff_and_predictions(model_file: Path) -> None:
    dom = parse(render_report(_report(model_file)))
    rows = body_rows(dom, "matrix")
    assert [row.attrs["data-model"] for row in rows] == ["net.py:Net", f"net.py:{EVIL}"]
    head = dom.find("table", id="matrix").find("thead")
    assert "caffe2 (opset 9)" in [th.text() for th in head.iter("th", class_="target")]
    keys = column_keys(dom, "matrix")
    assert keys == ["model", "pickle", "findings", "status", "export", "onnx_check", "onnxruntime", "caffe2", "notes"]

    net = rows[0]
    cells = list(net.iter("td"))
    assert len(cells) == len(keys)  # every row fills every column, so a column sorts by its index
    status, ort, caffe2 = cells[3], cells[6], cells[7]
    assert status.find(class_="badge").text() == "would break" and "bad" in status.attrs["class"]
    assert "mismatch" in ort.text() and "0.0123" in ort.text()
    assert ort.find(class_="pred").text() == "predicted by MC201"
    assert caffe2.find(class_="unpred").text() == "UNPREDICTED"  # a failure no finding foresaw, said loudly
    assert "ok" in cells[4].attrs["class"]  # export passed: green
    assert [c.text() for c in cells[2].iter(class_="chip")] == ["MC201"]  # the model's own findings

    broken = list(rows[1].iter("td"))
    assert broken[3].find(class_="badge").text() == "build failed"
    assert broken[1].find(class_="badge").text() == "FAILS (1)"


def test_every_finding_is_listed_with_its_source_excerpt_and_its_line_highlighted(model_file: Path) -> None:
    dom = parse(render_report(_report(model_file)))
    rows = body_rows(dom, "findings")
    assert [(r.attrs["data-code"], r.attrs["data-severity"]) for r in rows] == [
        ("MC201", "error"), ("MC301", "warning"), ("MC205", "info")]
    up = rows[0]
    cells = list(up.iter("td"))
    assert cells[2].text() == "net.py:9:19"
    assert "fixable" in cells[5].text() and cells[4].text() == "both"
    excerpt = up.find("pre", class_="src")
    numbers = [line.find(class_="ln").text().strip() for line in excerpt.iter("span", class_="line")]
    assert numbers == ["7", "8", "9", "10", "11"]  # two lines either side
    hit = excerpt.find("span", class_="hit")
    assert hit.attrs["data-line"] == "9"
    assert hit.find("mark").text() == 'nn.Upsample(scale_factor=2, mode="bilinear")'  # the construct itself
    assert "self.up = " in hit.text() and EVIL in hit.text()
    # a file that is gone: the finding's own line, still escaped
    gone = rows[2].find("pre", class_="src")
    assert gone.find(class_="hit").attrs["data-line"] == "3"
    assert "<b>not bold</b>" in gone.text() and not list(gone.iter("b"))


def test_user_text_is_escaped_everywhere(model_file: Path) -> None:
    page = render_report(_report(model_file))
    dom = parse(page)
    scripts = list(dom.iter("script"))
    assert len(scripts) == 1 and "alert" not in scripts[0].text()  # only the page's own script
    assert EVIL not in page  # raw, nowhere
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    text = dom.text()
    assert text.count(EVIL) >= 5  # shown as text: source lines, message, model name, detail, note


def test_page_is_self_contained_and_readable_without_js(model_file: Path) -> None:
    page = render_report(_report(model_file))
    dom = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert not list(dom.iter("link")) and not list(dom.iter("img")) and not list(dom.iter("iframe"))
    assert all("src" not in node.attrs for node in dom.iter())
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    # tables, summary line and notes are plain HTML (JS only sorts)
    assert "3 finding(s) in 2 file(s); 1 error(s), 1 warning(s), 1 info" in dom.find("section", id="summary").text()
    assert f"models: picked net.py:Net {EVIL}" in dom.find("section", id="notes").text()
    assert [th.attrs.get("data-key") for th in dom.find("table", id="findings").iter("th")] == [
        "severity", "code", "location", "message", "evidence", "fix"]
    assert {i.attrs["id"] for i in dom.iter("input")} == {"show-error", "show-warning", "show-info"}


def test_several_targets_make_one_matrix_with_a_column_group_each(model_file: Path) -> None:
    caffe2 = _report(model_file)
    onnx = Report("onnx", 17, [], models=[ModelResult("net.py:Net", "ok", pickle={"ok": True}, stages=[
        _stage("net.py:Net", "export", "passed"), _stage("net.py:Net", "onnxruntime", "passed", 1e-7)])])
    dom = parse(render_report(caffe2, onnx))
    head = dom.find("table", id="matrix").find("thead")
    assert [th.text() for th in head.iter("th", class_="target")] == ["caffe2 (opset 9)", "onnx (opset 17)"]
    rows = body_rows(dom, "matrix")
    assert len(rows) == 2
    cells = list(rows[0].iter("td"))
    keys = column_keys(dom, "matrix")
    assert len(cells) == len(keys) and "status@1" in keys
    assert cells[keys.index("status@1")].find(class_="badge").text() == "ok"
    assert "not run" in list(rows[1].iter("td"))[keys.index("status@1")].text()


def test_audit_page_has_the_audit_columns_and_the_unreached_findings(model_file: Path) -> None:
    up = Finding("MC201", "bilinear", Severity.ERROR, Location(str(model_file), 9, 19), fixable=True, evidence="both")
    unreached = Finding("MC301", "ceil_mode", Severity.WARNING, Location(str(model_file), 10, 21))
    rows = [
        AuditRow("net.py:Net", "class", "ok", parameters=3, pickle={"ok": True}, findings=[up],
                 unreached=[unreached], notes=["weights: skipped torch.load('w.pth') at net.py:3"], seconds=2.5,
                 stages=[_stage("net.py:Net", "export", "passed"),
                         _stage("net.py:Net", "onnxruntime", "mismatch", 0.88, ("MC201",))]),
        AuditRow("net.py:Other", "class", "build failed", detail=f"build: RuntimeError {EVIL}", cached=True),
        AuditRow("net.py:Block", "class", "skipped", detail="needs 2 inputs (x, g)"),
    ]
    audit = AuditReport("zoo", make_target("caffe2"), rows, notes=["left out 2 building blocks"], seconds=3.0)
    dom = parse(render_audit(audit))
    keys = column_keys(dom, "matrix")
    assert keys == ["model", "pickle", "findings", "status", "export", "onnxruntime", "time", "notes", "unreached"]
    matrix = body_rows(dom, "matrix")
    statuses = [list(r.iter("td"))[3].find(class_="badge").text() for r in matrix]
    assert statuses == ["would break", "build failed", "skipped"]
    first = list(matrix[0].iter("td"))
    assert first[keys.index("time")].text() == "2.5 s"
    assert "weights: skipped torch.load('w.pth')" in first[keys.index("notes")].text()
    assert "MC301 " in first[keys.index("unreached")].text()
    assert list(matrix[1].iter("td"))[keys.index("time")].text() == "cached"
    assert [r.attrs["data-code"] for r in body_rows(dom, "findings")] == ["MC201"]
    unreached_rows = body_rows(dom, "unreached")
    assert [r.attrs["data-code"] for r in unreached_rows] == ["MC301"]
    assert unreached_rows[0].find(class_="hit").attrs["data-line"] == "10"
    assert "would break" in dom.find("section", id="summary").text()


def test_html_report_never_imports_torch(model_file: Path) -> None:
    code = ("import sys; from modelcheck.findings import Report; from modelcheck.report.html import render_report;"
            "render_report(Report('caffe2', 9)); assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_static_only_cli_writes_the_page_to_stdout(model_file: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modelcheck", "net.py", "--static-only", "--format", "html"],
                          capture_output=True, text=True, timeout=120, cwd=model_file.parent)
    assert done.returncode == 1, done.stderr  # MC201 is an error
    dom = parse(done.stdout)
    assert {r.attrs["data-code"] for r in body_rows(dom, "findings")} >= {"MC201", "MC301"}


# ============================================================================== slow: a real browser


def browser(page: Path, tmp_path: Path, fragment: str = "", screenshot: Path | None = None) -> str:
    """Open ``page`` in headless Chromium; the DOM after its JS ran (or write a screenshot)."""
    chromium = require_browser()
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}"]
    if screenshot:
        args += [f"--screenshot={screenshot}", "--window-size=1400,1000", "--hide-scrollbars"]
    else:
        args += ["--dump-dom"]
    done = subprocess.run([*args, page.as_uri() + fragment], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def assert_real_png(path: Path) -> None:
    """A PNG of the window's size with real content: many distinct bytes, not one flat colour."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1000)
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert len(set(pixels)) > 64  # a blank page filters down to a handful of byte values


def _modelcheck(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    return subprocess.run([sys.executable, "-m", "modelcheck", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


@pytest.mark.slow
def test_real_check_report_in_a_browser_sorts_filters_and_renders(tmp_path: Path) -> None:
    require_browser()
    done = _modelcheck("examples/seed_model.py", "--format", "html", "--artifacts",
                       str(tmp_path / "artifacts"), cwd=ROOT)
    assert done.returncode == 1, done.stderr  # the seed model breaks, on purpose
    page = tmp_path / "seed.html"
    page.write_text(done.stdout, encoding="utf-8")

    as_written = [r.attrs["data-severity"] for r in body_rows(parse(done.stdout), "findings")]
    assert as_written[:3] == ["error", "error", "warning"]  # by line: the pool (a warning) is third

    dom = parse(browser(page, tmp_path, "#sort=findings:severity"))
    assert "js" in dom.find("html").attrs.get("class", "").split()  # the script ran
    order = [r.attrs["data-severity"] for r in body_rows(dom, "findings")]
    assert order == sorted(as_written, key=["error", "warning", "info"].index)
    assert dom.find("th", **{"data-key": "severity"}).attrs["aria-sort"] == "ascending"

    dom = parse(browser(page, tmp_path, "#sort=findings:-severity&hide=error"))
    assert body_rows(dom, "findings")[0].attrs["data-severity"] == "warning"
    assert dom.find("th", **{"data-key": "severity"}).attrs["aria-sort"] == "descending"
    total = len(as_written)
    assert dom.find(id="shown").text() == f"{total - as_written.count('error')} of {total} shown"  # CSS filter

    matrix = body_rows(dom, "matrix")
    assert [r.attrs["data-model"] for r in matrix] == ["examples/seed_model.py:SeedNet"]
    ort = list(matrix[0].iter("td"))[column_keys(dom, "matrix").index("onnxruntime")]
    assert "mismatch" in ort.text() and "predicted by MC201" in ort.text()

    shot = tmp_path / "seed.png"
    browser(page, tmp_path, screenshot=shot)
    assert_real_png(shot)


@pytest.mark.slow
def test_real_audit_report_in_a_browser_sorts_by_status_and_model(tmp_path: Path) -> None:
    require_browser()
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name in ("good.py", "raising.py"):
        (zoo / name).write_text((ROOT / "tests" / "fixtures" / "audit" / name).read_text())
    (zoo / "upsampler.py").write_text(textwrap.dedent(f'''\
        """A decoder upsampling bilinearly; its file also holds a class no model uses. {EVIL}"""

        import torch.nn as nn
        import torch.nn.functional as F


        class Decoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 1, 3, padding=1)

            def forward(self, x):  # "{EVIL}"
                return F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False)


        class Unused(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        '''))
    done = _modelcheck("audit", "zoo", "--format", "html", "--no-cache", "--jobs", "3", "--input-shape", "1,3,16,16",
                       "--artifacts", "artifacts", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    page = tmp_path / "audit.html"
    page.write_text(done.stdout, encoding="utf-8")
    assert EVIL not in done.stdout

    models = ["zoo/good.py:GoodNet", "zoo/raising.py:RaisingNet", "zoo/upsampler.py:Decoder"]
    dom = parse(browser(page, tmp_path, "#sort=matrix:-model"))
    assert [r.attrs["data-model"] for r in body_rows(dom, "matrix")] == models[::-1]
    dom = parse(browser(page, tmp_path, "#sort=matrix:status"))
    rows = body_rows(dom, "matrix")
    # failures first (build failed, would break: in their earlier order), the good model last
    assert [r.attrs["data-model"] for r in rows] == [models[1], models[2], models[0]]
    keys = column_keys(dom, "matrix")
    decoder = list(rows[1].iter("td"))
    assert decoder[keys.index("status")].find(class_="badge").text() == "would break"
    assert "predicted by MC201" in decoder[keys.index("onnxruntime")].text()
    assert "MC201" in decoder[keys.index("unreached")].text()  # Unused's upsample: in its file, never run
    assert [r.attrs["data-code"] for r in body_rows(dom, "findings")] == ["MC201"]
    assert len(list(dom.iter("script"))) == 1

    shot = tmp_path / "audit.png"
    browser(page, tmp_path, screenshot=shot)
    assert_real_png(shot)

"""The installers: no numpy<2 pin anywhere, and the registry detectron2 wheel loses its own."""
import base64
import hashlib
import importlib.util
import os
import re
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nothing_pins_numpy_below_2():
    # A requirement line, or a quoted requirement in the Python installers.
    upper_bound = re.compile(r"(^|[\"'])numpy\s*(<|~=|==\s*1)", re.M)
    # (tools/install_detectron2.py names the pin it removes: tested below.)
    for name in ("requirements.txt", "setup.py", "pyproject.toml", "tools/install_deps.py"):
        with open(os.path.join(ROOT, name)) as f:
            text = f.read()
        assert not upper_bound.search(text), f"{name} pins numpy below 2"
    assert _load_tool("install_deps").NUMPY == "numpy>=2"


def _fake_registry_wheel(path):
    """A wheel shaped like sal-detectron2's: a compiled op, the numpy<2 pin, a cp310 tag."""
    files = {
        "detectron2/__init__.py": b"__version__ = '0.7'\n",
        "detectron2/_C.cpython-310-x86_64-linux-gnu.so": b"\x7fELF",
        "sal_detectron2-0.7.2.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: sal-detectron2\nVersion: 0.7.2\n"
            b"Requires-Dist: Pillow>=7.1\nRequires-Dist: numpy<2\nRequires-Dist: yacs>=0.1.8\n"),
        "sal_detectron2-0.7.2.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp310-none-any\n"),
        "sal_detectron2-0.7.2.dist-info/RECORD": b"",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_registry_wheel_is_retagged_without_compiled_ops_or_numpy_pin(tmp_path):
    tool = _load_tool("install_detectron2")
    src = tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl"
    _fake_registry_wheel(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    wheel = tool.retag_pure_python(str(src), str(out_dir))
    assert os.path.basename(wheel) == "sal_detectron2-0.7.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read("sal_detectron2-0.7.2.dist-info/METADATA").decode()
        tags = z.read("sal_detectron2-0.7.2.dist-info/WHEEL").decode()
        record = z.read("sal_detectron2-0.7.2.dist-info/RECORD").decode().splitlines()
        contents = {n: z.read(n) for n in names}
    assert not [n for n in names if n.endswith(".so")]
    requires = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")]
    assert requires == ["Requires-Dist: Pillow>=7.1", "Requires-Dist: numpy",
                        "Requires-Dist: yacs>=0.1.8"]
    assert "Tag: py3-none-any" in tags and "Root-Is-Purelib: true" in tags
    for line in record:  # every file listed with its true hash (pip checks them)
        name, digest, size = line.split(",")
        if name.endswith("RECORD"):
            continue
        data = contents[name]
        expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={expected}", len(data)), name

"""A dataset's pickled .npy files never run code: check, convert, the training loader and the writer's
resume refuse a crafted pickle, naming the file and the refused global; CALVIN's real files still load."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.data.__main__ import main
from harness.data.calvin_format import CalvinFormatError, CalvinSplit, load_pickled_npy
from harness.data.calvin_writer import CalvinDatasetWriter
from harness.data.normalization import ActionNormalizer
from harness.data.shards import convert
from harness.data.windows import NpzFrameSource, WindowDataset, WindowSpec
from tests.calvin_layout import lang_dict, write_dataset

REPO = Path(__file__).resolve().parents[1]
LANG = Path("training/lang_annotations/auto_lang_ann.npy")


def npy_bytes(pickle_stream: bytes) -> bytes:
    """A .npy file as np.save writes a dict: the header of a 0-d object array, then the pickle."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
    return f.getvalue() + pickle_stream


def call(module: str, name: str, arg: str) -> bytes:
    """Pickle opcodes that import module.name and call it with one string (GLOBAL, MARK, BINUNICODE, TUPLE, REDUCE)."""
    data = arg.encode()
    return b"c" + f"{module}\n{name}\n".encode() + b"(X" + struct.pack("<I", len(data)) + data + b"tR"


def valid_body(value: object) -> bytes:
    """The opcodes of a pickled 0-d object array holding `value`, without PROTO and STOP."""
    stream = pickle.dumps(np.array(value, dtype=object), protocol=3)
    return stream[2:-1]


def calls(marker: Path) -> dict[str, tuple[str, str, str]]:
    touch = f"touch {marker}"
    create = f"open({str(marker)!r}, 'w').close()"
    return {"os.system": ("os", "system", touch), "posix.system": ("posix", "system", touch),
            "subprocess.getoutput": ("subprocess", "getoutput", touch),
            "builtins.exec": ("builtins", "exec", create), "builtins.eval": ("builtins", "eval", create)}


def malicious(marker: Path, kind: str, then_valid: bool) -> bytes:
    """A .npy whose pickle runs `kind` (creating `marker`); then_valid: and then returns a valid
    annotation dict, so that nothing but the marker would show it ran."""
    module, name, arg = calls(marker)[kind]
    if then_valid:
        return npy_bytes(b"\x80\x03" + call(module, name, arg) + b"0" + valid_body(lang_dict()) + b".")
    return npy_bytes(b"\x80\x03" + call(module, name, arg) + b".")


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("good"))


@pytest.fixture
def root(good_root, tmp_path) -> Path:
    """A copy of the good dataset (hard links: only the file a test replaces changes)."""
    dst = tmp_path / "root"
    for src in good_root.rglob("*"):
        target = dst / src.relative_to(good_root)
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, target)
    return dst


def plant(root: Path, relative: Path, content: bytes) -> Path:
    path = root / relative
    path.unlink()
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", ["os.system", "posix.system", "subprocess.getoutput", "builtins.exec", "builtins.eval"])
@pytest.mark.parametrize("then_valid", [False, True])
def test_check_refuses_a_pickle_that_runs_code(root, tmp_path, capsys, kind, then_valid):
    marker = tmp_path / "ran"
    path = plant(root, LANG, malicious(marker, kind, then_valid))
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert not marker.exists(), f"the pickle's {kind} ran"
    assert f"{path}: refused to load global '{kind}'" in out, out


def test_check_command_exits_nonzero_naming_the_file(root, tmp_path):
    marker = tmp_path / "ran"
    path = plant(root, LANG, malicious(marker, "os.system", then_valid=True))
    r = subprocess.run([sys.executable, "-m", "harness.data", "check", str(root)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and not marker.exists()
    assert f"ERROR: {path}: refused to load global 'os.system'" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("name", ["scene_info.npy", "lang_annotations/embeddings.npy"])
def test_check_refuses_the_other_pickled_files(root, tmp_path, capsys, name):
    marker = tmp_path / "ran"
    split = "training" if name == "scene_info.npy" else "validation"
    path = root / split / name
    if path.exists():
        path.unlink()
    path.write_bytes(malicious(marker, "builtins.eval", then_valid=False))
    assert main(["check", str(root)]) == 1
    assert not marker.exists() and f"{path}: refused to load global 'builtins.eval'" in capsys.readouterr().out


def test_convert_loader_and_writer_refuse(root, tmp_path):
    marker = tmp_path / "ran"
    path = plant(root, LANG, malicious(marker, "os.system", then_valid=True))
    message = rf"{path}: refused to load global 'os.system'"
    with pytest.raises(CalvinFormatError, match=message):
        convert(root, tmp_path / "shards", progress=False)
    with pytest.raises(CalvinFormatError, match=message):
        WindowDataset(NpzFrameSource(CalvinSplit(root, "training")), WindowSpec(4, 10), ActionNormalizer())
    before = sorted(p.name for p in (root / "training").iterdir())
    with pytest.raises(CalvinFormatError, match=message):
        CalvinDatasetWriter(root, "training")  # resuming reads the annotations
    assert sorted(p.name for p in (root / "training").iterdir()) == before  # nothing truncated, no lock left
    plant(root, Path("training/scene_info.npy"), malicious(marker, "subprocess.getoutput", then_valid=False))
    path.unlink()
    np.save(path, lang_dict())
    with pytest.raises(CalvinFormatError, match="scene_info.npy: refused to load global 'subprocess.getoutput'"):
        CalvinDatasetWriter(root, "training")
    assert not marker.exists()


# ------------------------------------------------------------------------------------- what still loads
def calvin_like() -> dict:
    """What CALVIN's three pickled files hold, with the numpy types real files carry."""
    rng = np.random.default_rng(0)
    return {
        "info": {"indx": [(np.int64(358482), np.int64(358500)), (np.int64(358495), np.int64(358541))],
                 "episodes": [np.int64(0), 1]},
        "language": {"ann": ["open the drawer", np.str_("grasp the red block")], "task": ["open_drawer", "lift"],
                     "emb": rng.normal(size=(2, 1, 384)).astype(np.float32)},
        "scene": {"calvin_scene_D": [0, np.int32(611)], "calvin_scene_A": (np.uint16(1), 2.5)},
        "open_drawer": {"emb": rng.normal(size=(1, 384)).astype(np.float64), "ann": ["open the drawer"]},
        "scalars": [np.float32(0.5), np.float64(-1.0), np.bool_(True), True, None, b"bytes", 3, 2**70],
        "arrays": [np.arange(6, dtype=np.int16).reshape(2, 3), np.asfortranarray(np.eye(3)),
                   np.array(["a", "bc"]), np.zeros((0, 2), np.int64), np.array([{"x": 1}, [2]], dtype=object),
                   np.zeros(2, dtype=[("a", "<f4"), ("b", "u1", (2,))])],
    }


def assert_same(a: object, b: object) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.f_contiguous == b.flags.f_contiguous
        if a.dtype.hasobject:
            assert_same(a.tolist(), b.tolist())
        else:
            np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_np_save_files_load_the_same(tmp_path, protocol):
    value = calvin_like()
    path = tmp_path / "x.npy"
    if protocol == 4:
        np.save(path, value, allow_pickle=True)  # this numpy's own writer
    else:
        path.write_bytes(npy_bytes(pickle.dumps(np.array(value, dtype=object), protocol=protocol)))
    assert_same(load_pickled_npy(path), np.load(path, allow_pickle=True).item())


def test_files_written_by_numpy_1_load(tmp_path):
    """numpy 1.x's np.save: pickle protocol 3, its reconstructors named under numpy.core (numpy 2 renamed
    the package numpy._core)."""
    stream = pickle.dumps(np.array(calvin_like(), dtype=object), protocol=3)
    assert b"cnumpy._core.multiarray\n" in stream or b"cnumpy.core.multiarray\n" in stream
    old = stream.replace(b"cnumpy._core.", b"cnumpy.core.")
    path = tmp_path / "old.npy"
    path.write_bytes(npy_bytes(old))
    assert_same(load_pickled_npy(path), calvin_like())


def test_not_a_dict_and_not_a_pickle_are_named(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.array([{"a": 1}, 2], dtype=object))
    with pytest.raises(CalvinFormatError, match=r"a\.npy: expected a pickled dict, got an array of shape \(2,\)"):
        load_pickled_npy(path)
    path.write_bytes(b"not a numpy file")
    with pytest.raises(CalvinFormatError, match=r"a\.npy: cannot be loaded as a pickled dict"):
        load_pickled_npy(path)


HOSTILE_DTYPES = {
    # an object dtype whose state says it holds no objects: its arrays read raw bytes as object pointers
    "array": "(recon, (np.ndarray, (0,), b'b'), (1, (), BadDtype(), False, b'A' * 8))",
    "scalar": "(scalar, (BadDtype(), b'A' * 8))",
    "frombuffer": "(frombuffer, (b'A' * 8, BadDtype(), (), 'C'))",
    "ndarray_call": "(np.ndarray, ((), np.dtype('O'), b'A' * 8))",
    "no_state": "(recon, (np.ndarray, (), BadDtype()))",  # an array of the dtype that is never given a state
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_DTYPES))
def test_a_dtype_whose_pickled_state_lies_is_refused(tmp_path, kind):
    """Run in a child: the file would crash the process (a pointer read from the file's bytes) if it loaded."""
    script = f"""
import pickle, sys
import numpy as np
from pathlib import Path
from harness.data.calvin_format import load_pickled_npy
from tests.test_data_safe_pickle import npy_bytes

recon, scalar = np.zeros(1).__reduce__()[0], np.float32(0).__reduce__()[0]
frombuffer = np.zeros(1).__reduce_ex__(5)[0]

class BadDtype:
    def __reduce__(self):
        return (np.dtype, ('O8', False, True), (3, '|', None, None, None, -1, -1, 0))

class Hostile:
    def __reduce__(self):
        return {HOSTILE_DTYPES[kind]}

path = Path(sys.argv[1])
path.write_bytes(npy_bytes(pickle.dumps(Hostile(), protocol=3)))
try:
    value = load_pickled_npy(path)
except Exception as e:
    print("refused:", e)
else:
    print("loaded:", repr(value))
"""
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "lang.npy")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"refused: {tmp_path / 'lang.npy'}: cannot be loaded as a pickled dict"), r.stdout
    expected = "refused a call of numpy.ndarray" if kind == "ndarray_call" else "contradicts its description '|O'"
    assert expected in r.stdout, r.stdout


def test_check_dtype_accepts_what_numpy_builds():
    from harness.data.safe_pickle import RefusedDtype, check_dtype

    for dtype in (np.dtype("O"), np.dtype("<U7"), np.dtype(">f8"), np.dtype([("a", "<i4"), ("b", "<f8", (2,))]),
                  np.dtype([("a", "u1"), ("b", "<f8")], align=True)):
        assert check_dtype(pickle.loads(pickle.dumps(dtype))) == dtype
    # a structured dtype holding objects: its fields could hide arrays from the checks (no dataset file has one)
    with pytest.raises(RefusedDtype, match="structured dtype holding objects"):
        check_dtype(np.dtype([("a", "<i4"), ("b", "O", (2,))]))

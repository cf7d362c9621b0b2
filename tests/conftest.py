"""Shared test set-up."""

import os
from pathlib import Path

import pytest

# albumentations asks PyPI for a newer version on import unless told not to (offline CI, warnings-as-errors).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared real datasets folder; tests that need it skip when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def isbi_csv(datasets: Path):  # type: ignore[no-untyped-def]
    """``isbi_csv(folder, slices)``: an ``image,mask`` CSV of those ISBI 2012 slices in ``folder`` (its path)."""
    root = datasets / "isbi2012_em_membrane"

    def write(folder: Path, slices) -> Path:  # type: ignore[no-untyped-def]
        listing = Path(folder) / "isbi.csv"
        rows = [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in slices]
        listing.write_text("\n".join(["image,mask", *rows]))
        return listing

    return write


@pytest.fixture
def simulate_cpu(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``simulate_cpu(kind)``: make unetkit believe it runs on a CPU of that kind (``CPU_KINDS``: flags and machine
    name), so every machine runs every kind's branch of the precision and backend rules."""
    import unetkit.precision as precision

    def simulate(kind: str) -> None:
        from _cpu_kinds import CPU_KINDS

        machine, line = CPU_KINDS[kind]
        flags = precision.parse_cpu_flags(f"processor\t: 0\n{line}\n")
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)

    return simulate


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--native-bf16",
        choices=("auto", "yes", "no"),
        default="auto",
        help="make unetkit believe this CPU has native bf16 kernels (yes) or not (no), so either kind of machine "
        "runs the other kind's branch of every precision-dependent test in this process (default auto: the "
        "real answer). Subprocesses (CLI and torchrun tests) still see the real CPU; they pin their precision.",
    )


def pytest_report_header(config: pytest.Config) -> str:
    from unetkit.precision import cpu_flags, cpu_supports_bf16

    forced = config.getoption("--native-bf16")
    real = "yes" if cpu_supports_bf16() else "no"
    flags = " ".join(f for f, on in cpu_flags().items() if on) or "none of the tracked flags"
    state = f"forced {forced} (real: {real})" if forced != "auto" else real
    return f"unetkit: native bf16 {state}; CPU flags: {flags}"


@pytest.fixture(autouse=True, scope="session")
def _native_bf16_switch(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Apply ``--native-bf16``: every precision decision asks ``unetkit.precision.cpu_supports_bf16``."""
    forced = request.config.getoption("--native-bf16")
    if forced == "auto":
        yield
        return
    import unetkit.precision as precision

    patch = pytest.MonkeyPatch()
    patch.setattr(precision, "cpu_supports_bf16", lambda: forced == "yes")
    yield
    patch.undo()

"""``skip_complete`` (behind ``predict --skip-existing``): which inputs a re-run skips, which it redoes, what it cleans."""

from __future__ import annotations

from pathlib import Path

from unetkit._io import stale_temporaries
from unetkit.infer.pipeline import FileJob, skip_complete


def _job(out: Path, stem: str) -> FileJob:
    return FileJob(Path(f"in/{stem}.png"), {"mask": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png"})


def test_only_inputs_with_every_output_are_skipped_and_a_killed_writers_leftovers_go(tmp_path: Path) -> None:
    done, half, none = _job(tmp_path, "a"), _job(tmp_path, "b"), _job(tmp_path, "c")
    for target in done.targets.values():  # type: ignore[union-attr]
        target.write_bytes(b"complete")
    half.targets["mask"].write_bytes(b"complete")  # type: ignore[index]
    leftover = tmp_path / ".b_overlay.png.k3j2.tmp.png"  # what atomic_path names its temporary file
    leftover.write_bytes(b"half")
    other = tmp_path / ".c.png.x.tmp.tif"  # another suffix: not a leftover of c.png
    other.write_bytes(b"x")
    failed = FileJob(Path("in/d.txt"), error=ValueError("unsupported"))
    assert stale_temporaries(half.targets["overlay"]) == [leftover]  # type: ignore[index]
    to_do, skipped = skip_complete([done, half, none, failed])
    assert skipped == [done] and to_do == [half, none, failed]
    assert not leftover.exists() and other.exists()
    assert done.targets["mask"].read_bytes() == b"complete"  # type: ignore[index]

"""Start-up clean-up removes only the temporaries this package made, and never follows a symlink."""

from __future__ import annotations

from pathlib import Path

from asynctrainer.checkpoints.format import cleanup_temporaries
from asynctrainer.checkpoints.manager import cleanup_run_directory
from asynctrainer.files import temp_sibling


def make_files(*paths: Path) -> list[Path]:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    return list(paths)


def test_cleanup_never_follows_a_symlinked_directory_out_of_the_run(tmp_path: Path) -> None:
    run = tmp_path / "results" / "run"
    (run / "Behavior" / "checkpoints").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    logs_elsewhere = tmp_path / "logs-elsewhere"
    # Files outside the run whose names look like this package's temporaries.
    outside = make_files(
        temp_sibling(elsewhere / "data.csv"),
        temp_sibling(elsewhere / "checkpoints" / "model"),
        temp_sibling(logs_elsewhere / "timers.json"),
    )
    temp_dir = temp_sibling(elsewhere / "checkpoints" / "dir")
    temp_dir.mkdir()
    outside.append(temp_dir)
    (run / "extra").symlink_to(elsewhere, target_is_directory=True)
    (run / "run_logs").symlink_to(logs_elsewhere, target_is_directory=True)
    # A symlink named like a temporary, pointing outside: neither it nor its target is touched.
    linked_temp = temp_sibling(run / "link")
    linked_temp.symlink_to(elsewhere, target_is_directory=True)
    ours = make_files(temp_sibling(run / "configuration.yaml"), temp_sibling(run / "Behavior" / "Behavior-1.onnx"))

    removed = cleanup_run_directory(run)

    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in outside), [p for p in outside if not p.exists()]
    assert linked_temp.is_symlink()
    assert not any(p.exists() for p in ours)


def test_cleanup_removes_only_names_made_by_temp_sibling(tmp_path: Path) -> None:
    user_files = make_files(
        tmp_path / "notes.tmp-backup",
        tmp_path / ".hidden.tmp-",
        tmp_path / "report.tmp-0123abcd",  # not hidden: temp_sibling's names start with a dot
        tmp_path / ".draft.tmp-0123abcdXYZ",
    )
    ours = make_files(temp_sibling(tmp_path / "state.npz"), temp_sibling(tmp_path / "Counter-5", ".removed"))
    assert sorted(cleanup_temporaries(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in user_files)


def test_a_symlinked_parent_is_not_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "target"
    [temp] = make_files(temp_sibling(target / "x"))
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    assert cleanup_temporaries(tmp_path / "link") == []
    assert temp.exists()

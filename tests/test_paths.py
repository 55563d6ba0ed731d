"""Output folders named by the user are checked before any work: one-line errors, nothing created."""

from __future__ import annotations

import os

import pytest

from nuimcli.errors import UserError
from nuimcli.utils.paths import check_out_dir, make_out_dir


def test_a_missing_folder_is_fine_and_not_created(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_out_dir(target, "--out") == target
    assert not (tmp_path / "a").exists()
    assert make_out_dir(target, "--out").is_dir()
    assert check_out_dir(target, "--out") == target  # an existing folder too


def test_a_file_at_the_path_or_above_it_is_named(tmp_path):
    f = tmp_path / "F"
    f.write_text("keep me")
    with pytest.raises(UserError, match=r"^--out-dir .*F: is a file, not a folder"):
        check_out_dir(f, "--out-dir")
    with pytest.raises(UserError, match=r"^--out .*F/sub/x: .*F is a file, so no folder can be made under it$"):
        make_out_dir(f / "sub" / "x", "--out")
    assert f.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_parent_is_named(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UserError, match=r"no permission to write in .*ro$"):
            check_out_dir(ro / "x", "--work-dir")
    finally:
        ro.chmod(0o700)

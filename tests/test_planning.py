"""Fast planning keeps its promises: an edited file is noticed, a symlink leaving the data root is
refused (file or directory link), and an unchanged plan is recognised without losing what status says.
(Speed is measured in bench/planning.py, not here.)"""

import os

import pytest

from dummies import SMALL, run, write_manifest


def text_items(root, n):
    rows = []
    for i in range(n):
        path = root / "notes" / f"{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"note number {i}")
        rows.append({"id": f"n{i}", "text_path": f"notes/{i}.txt"})
    return rows


def test_an_edited_file_is_noticed_even_with_the_same_size(tmp_path):
    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", text_items(data, 4))
    assert run(m, tmp_path / "w", command="run clean_text")["stages"]["clean_text"]["computed"] == 4
    assert run(m, tmp_path / "w", command="run clean_text")["stages"]["clean_text"]["computed"] == 0
    note = data / "notes" / "2.txt"
    stamp = note.stat().st_mtime_ns
    note.write_text("note NUMBER 2")  # same length, new content
    os.utime(note, ns=(stamp + 1_000_000, stamp + 1_000_000))
    report = run(m, tmp_path / "w", command="run clean_text")
    assert report["stages"]["clean_text"]["computed"] == 1


def test_symlinks_leaving_the_root_are_refused_and_links_inside_it_followed(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    rows = text_items(data, 2)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", data / "notes" / "file-link.txt")
    os.symlink(outside, data / "dir-link")
    os.symlink(data / "notes" / "0.txt", data / "notes" / "inside-link.txt")
    os.symlink(data / "notes" / "gone.txt", data / "notes" / "dangling.txt")
    rows += [{"id": "file-link", "text_path": "notes/file-link.txt"}, {"id": "dir-link", "text_path": "dir-link/secret.txt"},
             {"id": "inside-link", "text_path": "notes/inside-link.txt"}, {"id": "dangling", "text_path": "notes/dangling.txt"},
             {"id": "dotdot", "text_path": "notes/../../outside/secret.txt"}]
    m = write_manifest(data / "m.csv", rows)
    report = run(m, tmp_path / "w", command="run clean_text")
    errors = {f["id"]: f["error"] for f in report["failures"]}
    assert errors == {"file-link": "PathEscapesRoot", "dir-link": "PathEscapesRoot", "dotdot": "PathEscapesRoot",
                      "dangling": "MissingFile"}
    assert report["stages"]["clean_text"]["computed"] == 3  # n0, n1, and inside-link (0.txt followed)
    allowed = run(m, tmp_path / "w2", "--set", "data.allow_outside_root=true", command="run clean_text")
    assert {f["id"] for f in allowed["failures"]} == {"dangling"}


def test_an_unchanged_plan_is_recognised_and_a_change_still_recorded(tmp_path, capsys):
    from mmpipe_cli.commands import main

    data = tmp_path / "data"
    m = write_manifest(data / "m.csv", text_items(data, 3))
    run(m, tmp_path / "w", command="run clean_text")
    run(m, tmp_path / "w", command="run clean_text")  # the recorded plan is unchanged: nothing rewritten
    (data / "notes" / "1.txt").write_text("a different note")
    capsys.readouterr()
    args = ["status", "-m", str(m), "-w", str(tmp_path / "w"), "--stage", "clean_text"]
    for s in SMALL:
        args += ["--set", s]
    assert main(args) == 0
    assert "to compute      1 (1 changed input)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["..", "."])
def test_names_that_are_not_files_are_item_errors(tmp_path, name):
    from pipeline.errors import ItemError
    from pipeline.paths import PathResolver

    (tmp_path / "sub").mkdir()
    with pytest.raises(ItemError):
        PathResolver(False, 10**9).resolve(str(tmp_path / "sub"), str(tmp_path), name)


@pytest.mark.parametrize("chunk", [1, 2, 3, 8192])
def test_plan_digest_hashed_in_chunks_equals_the_digest_of_the_joined_lines(chunk):
    from pipeline.keys import digest_bytes, digest_lines

    for lines in ([], [""], ["a"], ["", ""], ["é", "ü\u00a0", "", "z"], [f"k{i}" for i in range(1000)]):
        assert digest_lines(lines, chunk) == digest_bytes("\n".join(lines).encode())

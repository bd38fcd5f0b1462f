"""A data directory or output path that cannot be used is a one-line error, exit 1,
naming the path (DESIGN.md section 9) - never a traceback - and nothing is replaced."""

import pytest

from stack.cli import main

PEER = "12D3KooWGt1rRr1w5hWAsfFmULQQWzmWaSKtGLZMbzzHzLyCypXu"


def _one_line_failure(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("p2pstack: "), err
    for needle in needles:
        assert needle in err[0]
    return err[0]


def test_data_dir_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_failure(capsys, ["--data-dir", str(blocker), "id"], str(blocker),
                      "not a directory")
    _one_line_failure(capsys, ["--data-dir", str(blocker / "sub"), "id"],
                      str(blocker / "sub"))
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("argv_tail, name", [
    (["id"], "identity.key"),
    (["trust", "list"], "trusted_peers.json"),
    (["trust", "block", PEER], "trusted_peers.json"),
    (["trust", "block", PEER], "trusted_peers.json.lock"),
    (["announce", "sign", "--out", "OUT"], "sequence.lock"),
    (["announce", "verify", "OUT"], "replay_state.msgpack.lock"),
])
def test_a_directory_where_a_state_file_goes(tmp_path, capsys, argv_tail, name):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).mkdir()
    (tmp_path / "ann").write_bytes(b"junk")
    argv = [str(tmp_path / "ann") if a == "OUT" else a for a in argv_tail]
    if argv_tail[:2] == ["announce", "sign"]:
        argv[-1] = str(tmp_path / "new.ann")
    _one_line_failure(capsys, ["--data-dir", str(data), *argv], name)
    assert (data / name).is_dir()


@pytest.mark.parametrize("out", ["missing-dir/x", "."])
def test_announce_out_cannot_be_written(tmp_path, capsys, out):
    target = tmp_path / out
    _one_line_failure(capsys, ["--data-dir", str(tmp_path / "data"), "announce", "sign",
                               "--out", str(target), "--force"], "cannot write")


@pytest.mark.parametrize("extra, needle", [
    (["--name", "x" * 300], "display_name"),
    (["--addr", "h" * 300 + ":5"], "host name"),  # over 253 characters: no DNS name
    (["--addr", "/ip4/" + "1" * 300 + "/udp/1/quic-v1"], "addrs"),
    ([a for i in range(60) for a in ("--addr", f"10.0.0.{i}:39001")], "bound is 1000"),
])
def test_announce_fields_that_do_not_fit_are_usage_errors(tmp_path, capsys, extra, needle):
    """Exit 2 with one line, and no sequence number is burnt."""
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), "announce", "sign", "--out",
                 str(tmp_path / "a.ann"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "a.ann").exists() and not (data / "sequence").exists()

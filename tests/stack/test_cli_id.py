import json
import os
import subprocess
import sys


def run_cli(*args, env_home=None):
    env = dict(os.environ)
    if env_home is not None:
        env["P2PSTACK_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "stack.cli", *args],
                          capture_output=True, text=True, env=env)


def test_id_json_creates_then_reuses(tmp_path):
    first = run_cli("--data-dir", str(tmp_path), "id", "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    assert set(info) == {"peer_id", "fingerprint", "key_path"}
    assert info["peer_id"].startswith("12D3KooW")
    second = run_cli("--data-dir", str(tmp_path), "id", "--json")
    assert json.loads(second.stdout) == info


def test_id_uses_p2pstack_home(tmp_path):
    out = run_cli("id", "--json", env_home=tmp_path)
    assert json.loads(out.stdout)["key_path"] == str(tmp_path / "identity.key")


def test_corrupt_key_is_one_line_exit_1(tmp_path):
    (tmp_path / "identity.key").write_bytes(b"junk")
    (tmp_path / "identity.key").chmod(0o600)
    out = run_cli("--data-dir", str(tmp_path), "id")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "identity.key" in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_error_exits_2(tmp_path):
    out = run_cli("--data-dir", str(tmp_path), "no-such-command")
    assert out.returncode == 2


def test_global_flags_work_after_the_command(tmp_path):
    out = run_cli("id", "--json", "--data-dir", str(tmp_path / "after"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["key_path"] == str(tmp_path / "after" / "identity.key")


def test_global_flag_before_the_command_is_not_reset_by_the_subcommand(tmp_path):
    out = run_cli("--data-dir", str(tmp_path / "before"), "id", "--json")
    assert json.loads(out.stdout)["key_path"] == str(tmp_path / "before" / "identity.key")


def test_empty_data_dir_is_a_usage_error(tmp_path):
    out = run_cli("--data-dir", "", "id", env_home=tmp_path)
    assert out.returncode == 2 and "--data-dir" in out.stderr
    assert not (tmp_path / "identity.key").exists()

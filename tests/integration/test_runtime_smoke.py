import subprocess
import pytest
from .conftest import runtime_argv

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

def test_run_echo(bundle, state_root):
    b = bundle.write(["echo", "hello"], cgroup="c1")
    out = subprocess.run(runtime_argv(state_root, "run", "-b", str(b), "c1"),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "hello\n", "")

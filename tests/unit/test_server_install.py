"""Finding tritonserver: the wheel's here, NVIDIA's own in the serving image."""

from __future__ import annotations

import os
import stat

import pytest

from mmtriton.server import install


def _fake_ngc_tree(root):
    """The layout of /opt/tritonserver in NVIDIA's image, with the stub linked in at build."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    stub = root / "backends" / "python" / "triton_python_backend_stub"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    return stub


def test_triton_root_env_points_at_the_images_tritonserver(tmp_path, monkeypatch):
    stub = _fake_ngc_tree(tmp_path)
    monkeypatch.setenv(install.TRITON_ROOT_ENV, str(tmp_path))
    assert install.tritonserver_binary() == tmp_path / "bin" / "tritonserver"
    assert install.backend_directory() == tmp_path / "backends"
    # No python_backend_stubs folder in the image: the stub placed at build time is used,
    # and left as it is (the image's user may not chmod a root-owned file).
    stub.chmod(0o555)
    before = stat.S_IMODE(os.stat(stub).st_mode)
    assert install.install_stub() == stub
    assert stat.S_IMODE(os.stat(stub).st_mode) == before


def test_triton_root_env_without_tritonserver_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(install.TRITON_ROOT_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="has no bin/tritonserver"):
        install.triton_root()


def test_without_the_env_the_wheels_tritonserver_is_used(monkeypatch):
    monkeypatch.delenv(install.TRITON_ROOT_ENV, raising=False)
    assert install.tritonserver_binary().exists()
    assert "pytriton" in str(install.triton_root())

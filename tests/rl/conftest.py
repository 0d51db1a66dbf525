import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")


@pytest.fixture(scope="session")
def pool():
    """One pool of 2 spawned worker processes for the tests that need one (starting workers is the slow part)."""
    from stochgrad.evaluators import ProcessPool

    with ProcessPool(workers=2) as p:
        yield p

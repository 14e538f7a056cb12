"""X-ray tests: pyatomdb gets a private AtomDB directory (never the user's, never a prompt)."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _atomdb_dir(tmp_path_factory):
    if not os.environ.get("ATOMDB"):
        os.environ["JAXCLUSTER_ATOMDB_DIR"] = str(tmp_path_factory.mktemp("atomdb"))
    yield

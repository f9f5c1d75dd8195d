"""The staged cut-down experiment, built once for the tests of this package that read it."""

from collections.abc import Iterator

import dagster as dg
import pytest

from tests.assets.staged import Staged, stage


@pytest.fixture(scope="package")
def staged(embedded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield stage(embedded, tmp_path_factory.mktemp("staged"), instance)


@pytest.fixture
def world(staged: Staged, tmp_path) -> Staged:
    """A private copy of the staged experiment, for one test to corrupt."""
    return staged.copy(tmp_path)

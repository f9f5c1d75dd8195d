import pytest

from resources import DuckDBCatalog
from tpt.catalog import CatalogLayoutError


def test_the_catalog_lives_in_the_artifact_root_unless_tpt_catalog_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("TPT_CATALOG", raising=False)
    monkeypatch.setenv("TPT_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    assert DuckDBCatalog().path == str(tmp_path / "artifacts" / "catalog")
    DuckDBCatalog().open().record_stage("e", "corpus", "c1")
    assert (tmp_path / "artifacts" / "catalog" / "stage_runs").is_dir()
    monkeypatch.setenv("TPT_CATALOG", "s3://bucket/catalog")
    assert DuckDBCatalog().path == "s3://bucket/catalog"


def test_an_old_single_file_catalog_beside_the_default_is_not_silently_left_behind(tmp_path, monkeypatch):
    monkeypatch.delenv("TPT_CATALOG", raising=False)
    monkeypatch.setenv("TPT_ARTIFACT_ROOT", str(tmp_path))
    (tmp_path / "catalog.duckdb").write_bytes(b"a DuckDB file of schema 1")
    with pytest.raises(CatalogLayoutError, match=r"python -m tpt\.catalog migrate") as caught:
        DuckDBCatalog().open()  # not a new, empty catalog beside the old one
    assert "\n" not in str(caught.value)

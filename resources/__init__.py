"""Dagster resources for the systems outside the code: storage, catalog, Ray, engines, trainer, evaluator."""

from resources.catalog import DuckDBCatalog
from resources.evaluator import Evaluator
from resources.generator import ThinkingGenerator
from resources.ray_cluster import RayCluster
from resources.storage import ArtifactStorage
from resources.trainer import Trainer

__all__ = ["ArtifactStorage", "DuckDBCatalog", "Evaluator", "RayCluster", "ThinkingGenerator", "Trainer"]

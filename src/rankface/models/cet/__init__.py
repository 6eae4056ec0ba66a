from rankface.models.cet.configuration_cet import CETConfig
from rankface.models.cet.modeling_cet import CETModel, RankFeatureSelector, rank_table

__all__ = ["CETConfig", "CETModel", "RankFeatureSelector", "rank_table"]

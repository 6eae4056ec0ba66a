"""Evaluation: ranking metrics (ir_measures) here; face verification and quality in their own modules."""

from rankface.evaluation.ranking import DEFAULT_MEASURES, Evaluation, evaluate, format_table, paired_ttest

__all__ = ["DEFAULT_MEASURES", "Evaluation", "evaluate", "format_table", "paired_ttest"]

"""Model families (one folder each, config + modeling file) and their Auto registration (`auto.py`)."""

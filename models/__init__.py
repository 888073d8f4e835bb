"""Sequence-to-sequence models behind one interface (see models/interface.py)."""

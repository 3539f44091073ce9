"""Datasources and datasinks: one module per format behind one protocol."""

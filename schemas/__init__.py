"""The JSON Schemas of the events on the bus (the contract), and their registry form (registry.py)."""

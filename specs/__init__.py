"""The archspec zoo: one YAML file per architecture, found by file stem (see archspec.zoo)."""

"""Domain definitions: the YAML schema, its units, and loading with precise errors."""

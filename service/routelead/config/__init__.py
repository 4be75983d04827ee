"""The YAML configuration: validated once at start, compiled into runtime objects."""

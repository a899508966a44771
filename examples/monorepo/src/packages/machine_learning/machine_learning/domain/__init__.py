"""Domain layer: entities and rules, no I/O and no imports from other layers."""

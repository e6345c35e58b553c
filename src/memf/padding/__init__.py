"""Stage 2's input: the padding rule (feature-store shards -> the padded tensor file of a feature set) and the padded
file's layout and reader (docs/architecture.md, "Padded tensor file")."""

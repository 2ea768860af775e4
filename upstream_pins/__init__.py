"""Pin data: one JSON file per transformers release (see patcher.pins)."""

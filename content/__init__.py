"""Content: templates as authored, versioned, translated, rendered and linted."""

"""The worker stage: one range task, read, decoded and processed into partial results."""

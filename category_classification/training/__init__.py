"""Training loops and their shared pieces (schedules, batches, checkpoints, DDP)."""

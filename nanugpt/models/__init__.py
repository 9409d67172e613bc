"""Models: each module holds one model family and its options."""

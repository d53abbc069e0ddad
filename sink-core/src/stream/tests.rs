//! Unit tests of the engine through `run`: replies, ops, replay and checkpoints on a simulated clock.
